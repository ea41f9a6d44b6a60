"""The TRL version guard and the validation of TokenShapeConfig."""

from __future__ import annotations

import importlib
import re
from types import SimpleNamespace

import pytest
import torch
import trl

from tokenshape.errors import InvalidArgumentError
from tokenshape.integrations.trl import (
    SUPPORTED_TRL,
    TokenShapeConfig,
    UnsupportedTRLError,
    check_trl_support,
)
from tokenshape.integrations.trl.compat import check_trainer_settings


def loss_without_dense_branch(self, model, inputs):
    """A GRPO loss from before subclasses could pass ``B x T`` advantages."""
    advantages = inputs["advantages"].unsqueeze(1)
    return advantages.sum()


def test_the_installed_trl_is_supported():
    check_trl_support()


def test_a_loss_without_the_dense_branch_is_refused_naming_the_supported_range():
    class OldGRPOTrainer(trl.GRPOTrainer):
        _compute_loss = loss_without_dense_branch

    with pytest.raises(UnsupportedTRLError, match=re.escape(f"trl{SUPPORTED_TRL}")) as error:
        check_trl_support(OldGRPOTrainer)
    assert trl.__version__ in str(error.value) and "(B, T) advantages" in str(error.value)


@pytest.mark.parametrize(
    "name", ["_generate", "_calculate_rewards", "_generate_and_score_completions"]
)
def test_a_missing_override_point_is_refused(name):
    OtherGRPOTrainer = type("OtherGRPOTrainer", (trl.GRPOTrainer,), {name: None})
    with pytest.raises(UnsupportedTRLError, match=name):
        check_trl_support(OtherGRPOTrainer)


@pytest.mark.parametrize("version", ["1.5.1", "0.29.1", "2.0.0", "not-a-version"])
def test_a_release_outside_the_supported_range_is_refused(version):
    with pytest.raises(UnsupportedTRLError, match=re.escape(f"trl{SUPPORTED_TRL}")) as error:
        check_trl_support(version=version)
    assert f"trl {version}" in str(error.value)
    check_trl_support(version="1.6.0")
    check_trl_support(version="1.17.0.dev0")


def grpo_like(**overrides):
    """An object with the attributes the shaped trainer reads from a constructed GRPOTrainer."""
    settings = {
        "num_generations": 2,
        "num_generations_eval": 2,
        "scale_rewards": "group",
        "multi_objective_aggregation": "sum_then_normalize",
        "reward_weights": torch.ones(1),
        "reward_funcs": [],
        "args": SimpleNamespace(use_liger_kernel=False),
    }
    settings.update(overrides)
    return SimpleNamespace(**settings)


def test_trainer_settings_the_shaped_trainer_reads_are_checked():
    check_trainer_settings(grpo_like())
    with pytest.raises(UnsupportedTRLError, match="num_generations_eval"):
        trainer = grpo_like()
        del trainer.num_generations_eval
        check_trainer_settings(trainer)
    with pytest.raises(UnsupportedTRLError, match="scale_rewards=True"):  # before 1.6: a bool
        check_trainer_settings(grpo_like(scale_rewards=True))
    with pytest.raises(UnsupportedTRLError, match="multi_objective_aggregation"):
        check_trainer_settings(grpo_like(multi_objective_aggregation="mean"))


def test_liger_is_refused_where_its_loss_reads_one_advantage_per_sequence():
    liger = SimpleNamespace(use_liger_kernel=True)
    check_trainer_settings(grpo_like(args=liger))  # trl >= 1.14: the loss is _compute_loss's
    with pytest.raises(InvalidArgumentError, match="use_liger_kernel=True"):
        check_trainer_settings(grpo_like(args=liger, compute_liger_loss=lambda model, inputs: 0))


def test_token_advantages_meet_the_off_policy_mask_token_by_token():
    # With B x T advantages TRL's off-policy sequence mask keeps a high-KL sequence's tokens
    # whose own advantage is >= 0 and drops the others (a sequence of one sign is kept or
    # dropped whole, as with GRPO's advantages).
    advantages = torch.tensor([[0.5, -0.5, 1.0], [-1.0, -1.0, -1.0], [-0.5, 0.5, -2.0]])
    logps = torch.zeros(3, 3)
    sampling = torch.tensor([[1.0] * 3, [1.0] * 3, [0.0] * 3])  # rows 0 and 1 far off-policy
    mask = torch.ones(3, 3)
    kept = trl.GRPOTrainer.get_off_policy_mask(advantages, logps, sampling, mask, 0.5)
    expected = [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    assert kept.tolist() == expected


def test_the_check_runs_when_the_trainer_is_imported(monkeypatch):
    grpo = importlib.import_module("tokenshape.integrations.trl.grpo")
    monkeypatch.setattr(trl.GRPOTrainer, "_compute_loss", loss_without_dense_branch)
    with pytest.raises(UnsupportedTRLError):
        importlib.reload(grpo)
    monkeypatch.undo()
    importlib.reload(grpo)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"mode": "dense"}, "mode='dense'"),
        ({"hybrid_coef": 1.5}, "hybrid_coef=1.5"),
        ({"hybrid_coef": float("nan")}, "hybrid_coef=nan"),
        ({"unit": "sentence"}, "unit='sentence'"),
        ({"reward_index": -1}, "reward_index=-1"),
        ({"reward_index": True}, "reward_index=True"),
    ],
)
def test_bad_config_values_are_named(options, named):
    with pytest.raises(InvalidArgumentError, match=re.escape(named)):
        TokenShapeConfig(**options)


def test_config_options_are_keyword_only_and_carry_help():
    with pytest.raises(TypeError):
        TokenShapeConfig("weight")
    from dataclasses import fields

    assert all(field.metadata.get("help") for field in fields(TokenShapeConfig))
