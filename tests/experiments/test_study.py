"""A sweep with replicated trials, on a stand-in inner run: the noise reaches the store, an
interrupted trial keeps its finished replicates, and the report says what the study can tell."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from rich.console import Console

from tokenshape.experiments import study as study_module
from tokenshape.experiments.config import config_from_dict, config_to_dict, load_config
from tokenshape.experiments.report import write_report
from tokenshape.experiments.runs import run_spec, write_json
from tokenshape.tuning.optimizer import ObjectiveResult
from tokenshape.tuning.store import TrialStore


def _config(replicates: int):
    data = config_to_dict(load_config("tiny"))
    data["sweep"].update({"replicates": replicates, "n_trials": 4, "n_initial": 2})
    return config_from_dict(data)


class FakeInnerRun:
    """Writes a result as the real inner run does; the objective is the kernel_shap weight plus
    a seed effect, so replicates differ. Raises KeyboardInterrupt at the call numbered
    ``interrupt_at``."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.interrupt_at = interrupt_at

    def __call__(self, config, params, *, output_dir, seed, start_cache, progress=None):
        self.calls.append((Path(output_dir).parent.name, seed))
        if len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        value = params.weights.get("kernel_shap", 0.0) + 0.1 * (seed - config.seed)
        checkpoints = [
            {
                "step": s,
                "kl": 0.01 * s,
                "reward_mean": value * s / 2,
                "wall_seconds": float(s),
                "reward_rows": 4 * s,
                "policy_tokens": 8 * s,
                "reward_sem": 0.1,
                "kl_sem": 0.0,
            }
            for s in (1, 2)
        ]
        write_json(
            Path(output_dir) / "result.json",
            {
                "spec": run_spec(config, params, seed),
                "objective": value,
                "learning_curve": [value, value],
                "seed": seed,
                "heldout_reward": value,
                "heldout_reward_sem": 0.1,
                "start_reward": 0.0,
                "kl_to_start": 0.02,
                "kl_sem": 0.0,
                "kl_budget_reached": seed % 2 == 0,
                "train_seconds": 1.0,
                "reward_rows": 8,
                "policy_tokens": 16,
                "checkpoints": checkpoints,
            },
        )
        return ObjectiveResult(value)


def test_replicated_sweep_interrupted_mid_trial_keeps_finished_replicates(tmp_path, monkeypatch):
    config = _config(replicates=2)
    first = FakeInnerRun(interrupt_at=4)  # trial 1's second replicate
    monkeypatch.setattr(study_module, "run_inner", first)
    with pytest.raises(KeyboardInterrupt):
        study_module.run_sweep(config, tmp_path, Console(quiet=True))
    assert first.calls == [("000", 0), ("000", 1), ("001", 0), ("001", 1)]
    second = FakeInnerRun()
    monkeypatch.setattr(study_module, "run_inner", second)
    study_module.run_sweep(config, tmp_path, Console(quiet=True))
    # Trial 1's seed 0 was finished and is kept; only its seed 1 runs again.
    assert second.calls[0] == ("001", 1)
    assert len(second.calls) == 1 + 2 * 2
    with TrialStore(tmp_path) as store:
        frame = store.to_dataframe()
        trials = store.trials()
    assert list(frame["status"]) == ["complete"] * 4
    assert list(frame["replicates"]) == [2, 2, 2, 2]
    # Replicates differ by 0.1: sd 0.0707, over sqrt(2): 0.05.
    assert frame["objective_sem"].tolist() == pytest.approx([0.05] * 4)
    assert trials[0].params.weights["sparse"] == 1.0
    assert trials[0].objective == pytest.approx(0.05)
    replicates = trials[1].info["replicates"]
    assert [r["seed"] for r in replicates] == [0, 1]


def test_a_replicate_of_another_spec_is_run_again(tmp_path, monkeypatch):
    config = _config(replicates=1)
    fake = FakeInnerRun()
    monkeypatch.setattr(study_module, "run_inner", fake)
    folder = tmp_path / "trial"
    params = study_module.ShapingParams({"sparse": 0.5, "kernel_shap": 0.5})
    study_module.run_replicates(config, params, folder, start_cache=tmp_path / "start.json")
    study_module.run_replicates(config, params, folder, start_cache=tmp_path / "start.json")
    assert len(fake.calls) == 1
    moved = study_module.ShapingParams({"sparse": 0.5 + 1e-9, "kernel_shap": 0.5 - 1e-9})
    result = study_module.run_replicates(config, moved, folder, start_cache=tmp_path / "start.json")
    assert len(fake.calls) == 2
    assert result.replicate_values == [pytest.approx(0.5 - 1e-9)]
    recorded = json.loads((folder / "seed0" / "result.json").read_text())
    assert recorded["spec"]["weights"]["kernel_shap"] == 0.5 - 1e-9


def test_the_report_says_what_the_study_can_tell(tmp_path, monkeypatch):
    monkeypatch.setattr(study_module, "run_inner", FakeInnerRun())
    study_module.run_sweep(_config(replicates=2), tmp_path, Console(quiet=True))
    page = write_report(tmp_path).read_text()
    assert "Recommended blend (highest GP posterior mean" in page
    assert "Plain sparse GRPO (trial 0): posterior mean" in page
    assert "Posterior probability that the recommended blend beats sparse GRPO" in page
    assert "indistinguishable at this budget" in page
    assert "runs never reached the KL budget" in page
    for png in ("objective.png", "checkpoints.png", "posterior.png"):
        assert (tmp_path / png).stat().st_size > 1000
    assert "objective_sem" in page


def test_a_study_of_single_seeds_says_its_noise_is_not_measured(tmp_path, monkeypatch):
    monkeypatch.setattr(study_module, "run_inner", FakeInnerRun())
    study_module.run_sweep(_config(replicates=1), tmp_path, Console(quiet=True))
    page = write_report(tmp_path).read_text()
    assert "its noise is not measured" in page
    with TrialStore(tmp_path) as store:
        assert all(math.isnan(v) for v in store.to_dataframe()["objective_sem"])
