"""The comparison script on the tiny config: a table and a plot, and finished runs not repeated."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from tokenshape.errors import InvalidArgumentError
from tokenshape.experiments.compare import Condition, run_comparison, smoothed, steps_to_reach


def test_steps_to_reach():
    assert steps_to_reach([0.1, 0.3, 0.2, 0.5], 0.25) == 2
    assert steps_to_reach([0.1, 0.2], 0.25) is None


def test_smoothed_is_a_trailing_mean():
    assert smoothed([1.0, 3.0, 5.0, 7.0], window=2) == [1.0, 2.0, 4.0, 6.0]
    assert smoothed([2.0, 4.0], window=5) == [2.0, 3.0]
    with pytest.raises(InvalidArgumentError, match="window"):
        smoothed([1.0], window=0)


def test_comparison_writes_a_table_and_resumes(tmp_path):
    conditions = {
        "sparse": Condition({"sparse": 1.0}),
        "kernel_shap": Condition({"kernel_shap": 1.0}),
        "sparse_lr3x": Condition({"sparse": 1.0}, learning_rate_scale=3.0),
    }
    table = run_comparison(
        "tiny", 2, None, tmp_path, Console(), conditions=conditions, steps=3, eval_prompts=5
    )
    text = table.read_text()
    assert "| sparse |" in text and "| kernel_shap |" in text
    assert "| sparse_lr3x | sparse 1.00; learning rate x3 |" in text
    assert "--steps 3 --eval-prompts 5" in text
    assert "starting policy scores" in text
    assert (tmp_path / "comparison.png").stat().st_size > 1000
    results = sorted((tmp_path / "runs").glob("*/result.json"))
    assert len(results) == 6
    for path in results:
        run = json.loads(path.read_text())
        assert len(run["learning_curve"]) == 3
        assert len(run["samples"]) == 5
    stamps = [path.stat().st_mtime_ns for path in results]
    run_comparison(
        "tiny", 2, None, tmp_path, Console(), conditions=conditions, steps=3, eval_prompts=5
    )
    assert [path.stat().st_mtime_ns for path in results] == stamps


def test_comparison_refuses_bad_arguments(tmp_path):
    with pytest.raises(InvalidArgumentError, match="training.steps"):
        run_comparison("tiny", 1, None, tmp_path, Console(), steps=0)
    with pytest.raises(InvalidArgumentError, match="seeds"):
        run_comparison("tiny", 0, None, tmp_path, Console())
    with pytest.raises(InvalidArgumentError, match="sparse"):
        run_comparison(
            "tiny", 1, None, tmp_path, Console(), conditions={"lime": Condition({"lime": 1.0})}
        )
    assert not (tmp_path / "runs").exists()


def test_ctrl_c_keeps_finished_runs_and_the_rerun_continues(tmp_path, monkeypatch, capsys):
    from tokenshape.experiments import compare

    calls: list[str] = []
    learning_rates: dict[str, float] = {}

    def fake_run_inner(config, params, *, output_dir, progress=None):
        calls.append(f"{output_dir.name}")
        learning_rates[output_dir.name] = config.training.learning_rate
        if len(calls) == 2:
            raise KeyboardInterrupt
        curve = [0.1 * step for step in range(1, config.training.steps + 1)]
        result = {
            "objective": float(len(calls)),
            "start_reward": 0.0,
            "learning_curve": curve,
            "kl_to_start": 0.01,
        }
        output_dir.mkdir(parents=True)
        (output_dir / "result.json").write_text(json.dumps(result))

    monkeypatch.setattr(compare, "run_inner", fake_run_inner)
    argv = ["--config", "tiny", "--seeds", "1", "--steps", "4", "--out", str(tmp_path)]
    assert compare.main(argv) == 130
    assert "run the same command to continue" in " ".join(capsys.readouterr().out.split())
    assert [p.parent.name for p in (tmp_path / "runs").glob("*/result.json")] == ["sparse-seed0"]
    assert compare.main(argv) == 0
    # sparse is not run again; the interrupted abc run and the rest are.
    assert calls == [
        "sparse-seed0",
        "abc-seed0",
        "abc-seed0",
        "kernel_shap-seed0",
        "lime-seed0",
        "sparse_lr2x-seed0",
    ]
    base_rate = learning_rates["sparse-seed0"]
    assert learning_rates["sparse_lr2x-seed0"] == pytest.approx(2 * base_rate)
    assert learning_rates["lime-seed0"] == base_rate
    text = (tmp_path / "results.md").read_text()
    lime_row = next(line for line in text.splitlines() if line.startswith("| lime |"))
    # Held-out rewards are the call numbers (sparse 1, lime 5); identical curves end level with
    # sparse and reach its averaged final (0.25) at the last step.
    assert "| 5.000 ± 0.000 | 4.000 ± 0.000 | 1/1 seeds | 0.000 ± 0.000 | 4.0 (1/1 reached) |" in (
        lime_row
    )
