"""One inner run on the tiny config: checkpoints, objectives, the recorded spec, and that
evaluating along the run does not change what training does."""

from __future__ import annotations

import json

import pytest

from tokenshape.experiments.checkpoints import Checkpoint
from tokenshape.experiments.config import config_from_dict, config_to_dict, load_config
from tokenshape.experiments.inner_run import objective_value, run_inner
from tokenshape.experiments.runs import run_spec
from tokenshape.shaping.params import ShapingParams

SPARSE = ShapingParams({"sparse": 1.0})


def _tiny(**training):
    data = config_to_dict(load_config("tiny"))
    data["training"].update({"steps": 3, "checkpoints": 3, "eval_samples": 2, **training})
    data["sweep"]["objective"] = "heldout_reward"
    return config_from_dict(data)


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    config = _tiny()
    steps: list[int] = []
    result = run_inner(
        config,
        SPARSE,
        output_dir=folder,
        progress=lambda step, total: steps.append(step),
        seed=5,
        start_cache=folder / "start.json",
    )
    return config, folder, result, steps


def test_checkpoints_are_recorded_with_their_compute(evaluated_run):
    config, folder, result, steps = evaluated_run
    assert steps == [1, 2, 3]
    checkpoints = result.info["checkpoints"]
    assert [c["step"] for c in checkpoints] == [1, 2, 3]
    # Two completions of at most 8 tokens per row, 4 rows a step; one reward row per completion.
    assert [c["reward_rows"] for c in checkpoints] == [4, 8, 12]
    tokens = [c["policy_tokens"] for c in checkpoints]
    assert all(0 < b - a <= 4 * 8 for a, b in zip([0, *tokens], tokens))
    walls = [c["wall_seconds"] for c in checkpoints]
    assert walls == sorted(walls) and walls[0] > 0
    assert result.info["heldout_reward"] == checkpoints[-1]["reward_mean"]
    assert result.info["kl_to_start"] == checkpoints[-1]["kl"]
    assert result.value == pytest.approx(result.info["heldout_reward"], abs=1e-12)
    recorded = json.loads((folder / "result.json").read_text())
    assert not (folder / "result.json.writing").exists()
    assert len(recorded["samples"]) == config.data.eval_prompts
    assert recorded["spec"] == json.loads(json.dumps(run_spec(config, SPARSE, 5)))
    assert recorded["seed"] == 5
    start = json.loads((folder / "start.json").read_text())
    assert start["evaluation"]["reward_mean"] == result.info["start_reward"]
    assert start["key"]["evaluation"]["top_k"] == 0


def test_evaluating_along_the_run_does_not_change_training(evaluated_run, tmp_path):
    result = evaluated_run[2]
    once = run_inner(_tiny(checkpoints=1), SPARSE, output_dir=tmp_path, seed=5)
    assert once.learning_curve == result.learning_curve
    assert [c["step"] for c in once.info["checkpoints"]] == [3]
    # Same prompts, same sampling seed, same trained policy: the same final evaluation.
    assert once.info["heldout_reward"] == pytest.approx(result.info["heldout_reward"], abs=1e-9)
    assert once.info["start_reward"] == pytest.approx(result.info["start_reward"], abs=1e-9)


def _checkpoint(step, reward, kl):
    return Checkpoint(step, float(step), step, step, reward, 0.1, kl, 0.01)


@pytest.mark.parametrize(
    "objective, expected, reached",
    [
        # Start (0, 1.0); the path crosses KL 0.3 between (0.2, 2.0) and (0.4, 1.0): 1.5.
        ("reward_at_kl", 1.5, True),
        ("reward_minus_kl", 3.0 - 2.0 * 0.6, None),
        ("heldout_reward", 3.0, None),
        ("curve_mean", 2.0, None),
    ],
)
def test_each_objective_by_hand(objective, expected, reached):
    data = config_to_dict(load_config("tiny"))
    data["sweep"].update({"objective": objective, "kl_budget": 0.3, "kl_penalty": 2.0})
    data["training"]["checkpoints"] = 3
    config = config_from_dict(data)
    checkpoints = [_checkpoint(1, 2.0, 0.2), _checkpoint(2, 1.0, 0.4), _checkpoint(3, 3.0, 0.6)]
    value, flag = objective_value(config, 1.0, checkpoints, [1.0, 2.0, 3.0])
    assert value == pytest.approx(expected)
    assert flag == reached


def test_a_run_that_never_reaches_the_budget_gives_its_last_reward_and_is_flagged():
    data = config_to_dict(load_config("tiny"))
    data["sweep"].update({"objective": "reward_at_kl", "kl_budget": 5.0})
    data["training"]["checkpoints"] = 2
    config = config_from_dict(data)
    value, reached = objective_value(
        config, 1.0, [_checkpoint(1, 2.0, 0.2), _checkpoint(2, 2.5, 0.4)], [0.0, 0.0]
    )
    assert (value, reached) == (2.5, False)
