"""The one-GPU recipe's overrides (docs/verl/ppo_one_gpu.sh) against verl's real trainer config:
they compose with Hydra, pass verl's own validation, put the rewards on the colocated path where
``assemble_rm_scores`` runs, and give the manager its settings."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import verl
from hydra import compose, initialize_config_dir
from verl.trainer.ppo.reward import get_custom_reward_fn, resolve_reward_manager_cls
from verl.utils.config import validate_config

from tokenshape.integrations.verl import TokenShapeRewardManager, VerlShapingConfig

RECIPE = Path(__file__).resolve().parents[3] / "docs" / "verl" / "ppo_one_gpu.sh"


def recipe_overrides(environment: dict[str, str]) -> list[str]:
    """The entries of the script's ``OVERRIDES=( ... )`` array, variables expanded."""
    lines = RECIPE.read_text().splitlines()
    start = lines.index("OVERRIDES=(") + 1
    end = lines.index(")", start)
    body = "\n".join(line for line in lines[start:end] if not line.strip().startswith("#"))
    for name, value in environment.items():
        body = body.replace(f"${name}", value)
    return shlex.split(body)


def compose_recipe(environment: dict[str, str], extra: list[str] = ()):
    """verl's trainer config with the recipe's overrides, then ``extra`` ones."""
    config_dir = Path(verl.__file__).parent / "trainer" / "config"
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return compose(
            config_name="ppo_trainer", overrides=[*recipe_overrides(environment), *extra]
        )


@pytest.fixture(scope="module")
def recipe_config(tmp_path_factory, policy_tokenizer, reward_model_path):
    """The composed trainer config, with a tiny random policy (and critic) on the SmolLM2
    tokenizer and the tiny reward model, since verl's validation reads their configs."""
    from tokenshape.models.tiny import tiny_llama_policy

    folder = tmp_path_factory.mktemp("recipe")
    tiny_llama_policy(policy_tokenizer).save_pretrained(folder / "policy")
    policy_tokenizer.save_pretrained(folder / "policy")
    environment = {
        "POLICY": str(folder / "policy"),
        "REWARD_MODEL": str(reward_model_path),
        "DATA": str(folder / "data"),
    }
    return compose_recipe(environment)


def test_the_recipe_passes_verls_validation(recipe_config):
    config = recipe_config
    # gae needs a critic; without a KL term in the reward or the loss no reference policy runs
    # (verl.trainer.ppo.utils.need_critic, need_reference_policy).
    assert config.algorithm.adv_estimator == "gae"
    assert not config.algorithm.use_kl_in_reward
    assert not config.actor_rollout_ref.actor.use_kl_loss
    validate_config(config=config, use_reference_policy=False, use_critic=True)
    assert config.trainer.n_gpus_per_node == 1


def test_the_recipe_takes_the_colocated_reward_path(recipe_config):
    config = recipe_config
    # The trainer streams one float per trajectory from the agent loop unless a reward model is
    # enabled without a resource pool of its own (ray_trainer: enable_agent_reward_loop).
    assert config.reward.reward_model.enable
    assert not config.reward.reward_model.enable_resource_pool
    # With a reward model enabled, the reward loop calls run_single only when a custom reward
    # function is set (RewardLoopWorker.compute_score).
    assert callable(get_custom_reward_fn(config))
    assert resolve_reward_manager_cls(config) is TokenShapeRewardManager


def test_the_recipe_gives_the_manager_its_settings(recipe_config, reward_model_path):
    config = recipe_config
    settings = VerlShapingConfig.from_trainer_config(config)
    assert settings.shaping_params().weights == {"kernel_shap": 0.5, "sparse": 0.5}
    assert (settings.budget, settings.label, settings.minus_label) == (64, 1, 0)
    assert settings.reward_model_path == str(reward_model_path)
    assert config.reward.reward_model.model_path == settings.reward_model_path


def test_the_documented_sparse_baseline_overrides(reward_model_path):
    environment = {"POLICY": "/policy", "REWARD_MODEL": str(reward_model_path), "DATA": "/data"}
    extra = ["reward.tokenshape.weights.kernel_shap=0", "reward.tokenshape.weights.sparse=1"]
    settings = VerlShapingConfig.from_trainer_config(compose_recipe(environment, extra))
    assert settings.shaping_params().active_signals == ("sparse",)
