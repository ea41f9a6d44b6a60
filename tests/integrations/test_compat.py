"""The TRL version guard and the validation of TokenShapeConfig."""

from __future__ import annotations

import importlib
import re

import pytest
import trl

from tokenshape.errors import InvalidArgumentError
from tokenshape.integrations.trl import (
    SUPPORTED_TRL,
    TokenShapeConfig,
    UnsupportedTRLError,
    check_trl_support,
)


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


def test_a_missing_override_point_is_refused():
    class OtherGRPOTrainer(trl.GRPOTrainer):
        _generate_and_score_completions = None

    with pytest.raises(UnsupportedTRLError, match="_generate_and_score_completions"):
        check_trl_support(OtherGRPOTrainer)


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
