"""Bad settings of the verl reward manager: each error names the key, the value and what was
expected, and comes before the reward model is loaded."""

from __future__ import annotations

import pytest
from verl.trainer.ppo.reward import load_reward_manager

from tokenshape.errors import InvalidArgumentError
from tokenshape.integrations.verl import (
    SUPPORTED_VERL,
    UnsupportedVerlError,
    VerlShapingConfig,
    check_verl_support,
)


@pytest.mark.parametrize(
    ("settings", "key", "expected"),
    [
        ({"weights": {"kernal_shap": 1.0}}, "weights['kernal_shap']", "a weight on a signal"),
        ({"weights": {"kernel_shap": 0.7, "sparse": 0.7}}, "weights", "summing to 1"),
        ({"weights": {"kernel_shap": -0.5, "sparse": 1.5}}, "weights['kernel_shap']", ">= 0"),
        ({"weights": [0.5, 0.5]}, "weights", "a dict of signal name -> weight"),
        (
            {"weights": {"mine": 1.0}, "methods": {"mine": "no_such_method"}},
            "methods['mine']",
            "a method name",
        ),
        ({"normalization": "l2"}, "normalization", "one of"),
        ({"unit": "paragraph"}, "unit", "one of ('token', 'word', 'sentence', 'turn')"),
        ({"budget": 1}, "budget", "an int >= 2"),
        ({"seed": -1}, "seed", "an int >= 0"),
        ({"masking": "blank"}, "masking", "one of"),
        ({"weights_": {"sparse": 1.0}}, "weights_", "a known setting"),
    ],
)
def test_bad_settings_name_the_key(settings, key, expected):
    with pytest.raises(InvalidArgumentError) as raised:
        VerlShapingConfig.from_trainer_config(
            {"reward": {"tokenshape": {"reward_model_path": "/rm", **settings}}}
        )
    assert raised.value.name == f"reward.tokenshape.{key}"
    assert expected in raised.value.expected


def test_a_signal_named_in_methods_is_accepted():
    settings = {"reward_model_path": "/rm", "weights": {"mine": 1.0}, "methods": {"mine": "lime"}}
    config = VerlShapingConfig.from_trainer_config({"reward": {"tokenshape": settings}})
    assert config.shaping_params().weights == {"mine": 1.0}
    assert config.methods == {"mine": "lime"}


def test_settings_are_checked_before_the_model_loads(trainer_config, policy_tokenizer):
    config = trainer_config({"weights": {"kernel_shap": 1.0}, "unit": "chapter"})
    config.reward.tokenshape.reward_model_path = "/no/such/folder"
    with pytest.raises(InvalidArgumentError, match=r"reward\.tokenshape\.unit='chapter'"):
        load_reward_manager(config, policy_tokenizer)


def test_a_reward_model_path_that_does_not_load(trainer_config, policy_tokenizer, tmp_path):
    config = trainer_config()
    config.reward.tokenshape.reward_model_path = str(tmp_path)
    with pytest.raises(InvalidArgumentError) as raised:
        load_reward_manager(config, policy_tokenizer)
    assert raised.value.name == "reward.tokenshape.reward_model_path"
    assert raised.value.value == str(tmp_path)
    assert "sequence classifier" in raised.value.expected


def test_a_label_outside_the_model(trainer_config, policy_tokenizer):
    with pytest.raises(InvalidArgumentError, match=r"reward\.tokenshape\.label=5"):
        load_reward_manager(trainer_config({"label": 5}), policy_tokenizer)


def test_the_reward_model_path_falls_back_to_verls(reward_model_path):
    config = {"reward": {"reward_model": {"model_path": str(reward_model_path)}}}
    assert VerlShapingConfig.from_trainer_config(config).reward_model_path == str(reward_model_path)
    with pytest.raises(InvalidArgumentError, match=r"reward\.tokenshape\.reward_model_path"):
        VerlShapingConfig.from_trainer_config({"reward": {}})


@pytest.mark.parametrize("version", ["0.8.5", "0.9.0", "0.10.0", "1.0.0", "not-a-version"])
def test_a_verl_version_outside_the_range(version):
    with pytest.raises(UnsupportedVerlError) as raised:
        check_verl_support(version)
    assert repr(version) in str(raised.value)
    assert SUPPORTED_VERL in str(raised.value)


def test_a_verl_without_the_assembly_hook():
    class OldBase:
        pass

    with pytest.raises(UnsupportedVerlError, match="OldBase has no assemble_rm_scores"):
        check_verl_support("0.9.1", OldBase)


def test_the_installed_verl_is_supported():
    check_verl_support()
