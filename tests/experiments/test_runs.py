"""A run's specification: what it holds, and which differences make a finished run another run."""

from __future__ import annotations

import pytest

from tokenshape.experiments.config import config_from_dict, config_to_dict, load_config
from tokenshape.experiments.runs import RunMismatchError, finished_result, run_spec, write_json
from tokenshape.shaping.params import ShapingParams

SPARSE = ShapingParams({"sparse": 1.0})


def _config(**sweep):
    data = config_to_dict(load_config("tiny"))
    data["sweep"].update(sweep)
    return config_from_dict(data)


def _finished(folder, config, *, whole_sweep=False):
    """A finished run of ``config``; ``whole_sweep`` records every sweep field, as older runs did."""
    spec = run_spec(config, SPARSE, 3)
    if whole_sweep:
        spec["config"]["sweep"] = config_to_dict(config)["sweep"]
    folder.mkdir(parents=True)
    write_json(folder / "result.json", {"spec": spec, "objective": 1.0})


def test_the_spec_keeps_only_the_sweep_fields_a_run_depends_on():
    at_kl = run_spec(_config(objective="reward_at_kl", kl_budget=0.3), SPARSE, 3)
    assert at_kl["config"]["sweep"] == {"objective": "reward_at_kl", "kl_budget": 0.3}
    minus = run_spec(_config(objective="reward_minus_kl", kl_penalty=2.0), SPARSE, 3)
    assert minus["config"]["sweep"] == {"objective": "reward_minus_kl", "kl_penalty": 2.0}
    final = run_spec(_config(objective="heldout_reward"), SPARSE, 3)
    assert final["config"]["sweep"] == {"objective": "heldout_reward"}
    assert at_kl["seed"] == 3 and at_kl["weights"] == {"sparse": 1.0}


def test_study_settings_do_not_make_a_finished_run_another(tmp_path):
    recorded = _config(objective="heldout_reward", n_trials=4, kl_budget=0.05)
    _finished(tmp_path / "run", recorded, whole_sweep=True)
    wanted = _config(objective="heldout_reward", n_trials=9, kl_budget=0.3, replicates=2)
    assert finished_result(tmp_path / "run", run_spec(wanted, SPARSE, 3))["objective"] == 1.0


@pytest.mark.parametrize(
    "change, differs",
    [
        ({"kl_budget": 0.2}, "sweep.kl_budget: 0.1 -> 0.2"),
        ({"objective": "heldout_reward"}, "sweep.objective"),
    ],
)
def test_what_the_recorded_objective_depends_on_does(tmp_path, change, differs):
    _finished(tmp_path / "run", _config(objective="reward_at_kl", kl_budget=0.1))
    wanted = _config(**{"objective": "reward_at_kl", "kl_budget": 0.1, **change})
    with pytest.raises(RunMismatchError, match=differs):
        finished_result(tmp_path / "run", run_spec(wanted, SPARSE, 3))
