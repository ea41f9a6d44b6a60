"""One inner run on the tiny config: what it returns and records for either objective."""

from __future__ import annotations

import json
import statistics

import pytest

from tokenshape.experiments.config import config_from_dict, config_to_dict, load_config
from tokenshape.experiments.inner_run import run_inner
from tokenshape.shaping.params import ShapingParams


def _tiny(objective: str):
    data = config_to_dict(load_config("tiny"))
    data["training"]["steps"] = 3
    data["sweep"]["objective"] = objective
    return config_from_dict(data)


@pytest.mark.parametrize("objective", ["heldout_reward", "curve_mean"])
def test_the_objective_is_the_configured_one_and_both_rewards_are_recorded(tmp_path, objective):
    config = _tiny(objective)
    steps: list[int] = []
    result = run_inner(
        config,
        ShapingParams({"sparse": 1.0}),
        output_dir=tmp_path,
        progress=lambda step, total: steps.append(step),
    )
    assert steps == [1, 2, 3]
    assert len(result.learning_curve) == 3
    expected = (
        result.info["heldout_reward"]
        if objective == "heldout_reward"
        else statistics.fmean(result.learning_curve)
    )
    assert result.value == pytest.approx(expected, abs=1e-12)
    recorded = json.loads((tmp_path / "result.json").read_text())
    assert not (tmp_path / "result.json.writing").exists()
    assert recorded["objective"] == pytest.approx(result.value, abs=1e-12)
    assert len(recorded["samples"]) == config.data.eval_prompts
    assert recorded["heldout_reward"] == pytest.approx(
        statistics.fmean(score for _, _, score in recorded["samples"]), abs=1e-9
    )
    assert "start_reward" in recorded and recorded["kl_to_start"] >= -1e-6
