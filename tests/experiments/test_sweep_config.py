"""The sweep's and the evaluation's config fields: bad values name their field before training."""

from __future__ import annotations

import pytest

from tokenshape.errors import InvalidArgumentError
from tokenshape.experiments.config import config_from_dict


@pytest.mark.parametrize(
    "data, field, expected",
    [
        ({"sweep": {"replicates": 0}}, "sweep.replicates", "a value in [1, 100]"),
        ({"sweep": {"replicates": 2.5}}, "sweep.replicates", "a int"),
        ({"sweep": {"replicates": "3"}}, "sweep.replicates", "a int"),
        ({"sweep": {"kl_budget": 0.0}}, "sweep.kl_budget", "a KL budget > 0"),
        ({"sweep": {"kl_budget": -0.5}}, "sweep.kl_budget", "a value in"),
        ({"sweep": {"kl_penalty": -1}}, "sweep.kl_penalty", "a value in"),
        (
            {"sweep": {"objective": "reward_at_kl"}, "training": {"checkpoints": 1}},
            "sweep.objective",
            "needs training.checkpoints >= 2",
        ),
        ({"training": {"checkpoints": 0}}, "training.checkpoints", "a value in [1, 1000]"),
        ({"training": {"eval_samples": 0}}, "training.eval_samples", "a value in [1, 256]"),
        ({"training": {"eval_prompt_offset": -1}}, "training.eval_prompt_offset", "a value in"),
    ],
)
def test_bad_values_name_the_field(data, field, expected):
    with pytest.raises(InvalidArgumentError) as raised:
        config_from_dict(data)
    assert raised.value.name == field
    assert expected in str(raised.value)


def test_objectives_without_checkpoints_need_none():
    for objective in ("heldout_reward", "reward_minus_kl", "curve_mean"):
        config = config_from_dict(
            {"sweep": {"objective": objective}, "training": {"checkpoints": 1}}
        )
        assert config.sweep.objective == objective
