"""The comparison script on the tiny config: a table and a plot, and finished runs not repeated."""

from __future__ import annotations

from rich.console import Console

from tokenshape.experiments.compare import run_comparison, steps_to_reach


def test_steps_to_reach():
    assert steps_to_reach([0.1, 0.3, 0.2, 0.5], 0.25) == 2
    assert steps_to_reach([0.1, 0.2], 0.25) is None


def test_comparison_writes_a_table_and_resumes(tmp_path):
    conditions = {"sparse": {"sparse": 1.0}, "kernel_shap": {"kernel_shap": 1.0}}
    table = run_comparison("tiny", 2, None, tmp_path, Console(), conditions=conditions)
    text = table.read_text()
    assert "| sparse |" in text and "| kernel_shap |" in text
    assert (tmp_path / "learning_curves.png").stat().st_size > 1000
    results = sorted((tmp_path / "runs").glob("*/result.json"))
    assert len(results) == 4
    stamps = [path.stat().st_mtime_ns for path in results]
    run_comparison("tiny", 2, None, tmp_path, Console(), conditions=conditions)
    assert [path.stat().st_mtime_ns for path in results] == stamps
