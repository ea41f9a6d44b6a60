"""The command line end to end on the tiny config: sweep, resume after SIGKILL, report, errors."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tokenshape.experiments.cli import main

TOKENSHAPE = [sys.executable, "-m", "tokenshape.experiments.cli"]


def _statuses(study: Path) -> list[tuple[int, str, int]]:
    with sqlite3.connect(study / "study.sqlite") as db:
        return db.execute("SELECT id, status, attempts FROM trials ORDER BY id").fetchall()


def _sweep_in_its_second_trial(command: list[str], study: Path, *, stdout) -> subprocess.Popen:
    """Start a sweep in a subprocess and return once its second trial has started."""
    process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.DEVNULL, text=True)
    log = study / "study.log"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count("trial started") >= 2:
            return process
        time.sleep(0.05)
    process.kill()
    pytest.fail("the sweep never reached its second trial")


def test_sweep_writes_a_study_and_a_report_and_resumes_without_rerunning(tmp_path, capsys):
    study = tmp_path / "study"
    assert main(["sweep", "--config", "tiny", "--study-dir", str(study)]) == 0
    trials = _statuses(study)
    assert [status for _, status, _ in trials] == ["complete"] * 3
    with sqlite3.connect(study / "study.sqlite") as db:
        (first,) = db.execute("SELECT params FROM trials WHERE id = 0").fetchone()
    assert yaml.safe_load(first)["weights"] == {"sparse": 1.0, "kernel_shap": 0.0}
    report = (study / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 2
    assert "What this study can tell" in report and "w_kernel_shap" in report
    assert yaml.safe_load((study / "config.yaml").read_text())["name"] == "tiny"
    started = (study / "study.log").read_text().count("trial started")
    assert started == 3

    assert main(["sweep", "--config", "tiny", "--study-dir", str(study)]) == 0
    assert _statuses(study) == trials
    assert (study / "study.log").read_text().count("trial started") == started
    assert "3 of 3 trials finished" in " ".join(capsys.readouterr().out.split())


def test_a_different_config_is_refused_in_an_existing_study(tmp_path, capsys):
    study = tmp_path / "study"
    assert main(["sweep", "--config", "tiny", "--study-dir", str(study)]) == 0
    other = tmp_path / "other.yaml"
    config = yaml.safe_load((study / "config.yaml").read_text())
    config["training"]["steps"] = 3
    other.write_text(yaml.safe_dump(config))
    assert main(["sweep", "--config", str(other), "--study-dir", str(study)]) == 2
    assert "use another --study-dir" in " ".join(capsys.readouterr().out.split())


def test_sigkill_in_the_middle_of_a_sweep_then_resume(tmp_path):
    study = tmp_path / "study"
    command = [*TOKENSHAPE, "sweep", "--config", "tiny", "--study-dir", str(study)]
    process = _sweep_in_its_second_trial(command, study, stdout=subprocess.DEVNULL)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = {trial_id: status for trial_id, status, _ in _statuses(study)}
    assert "complete" in before.values()

    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = _statuses(study)
    assert [status for _, status, _ in after] == ["complete"] * 3
    # A trial complete before the kill was not run again; only the interrupted one was.
    for trial_id, _, attempts in after:
        assert attempts == (1 if before.get(trial_id) == "complete" else attempts)
    assert sum(attempts for _, _, attempts in after) <= 4


def test_missing_model_cache_says_to_run_prepare(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TOKENSHAPE_CACHE", str(tmp_path / "empty-cache"))
    assert main(["explain", "was wonderful", "--prompt", "The movie"]) == 2
    assert "tokenshape prepare" in " ".join(capsys.readouterr().out.split())


def test_report_of_a_folder_without_a_study(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "study.sqlite" in " ".join(capsys.readouterr().out.split())


@pytest.mark.slow
def test_explain_with_the_real_reward_model(tmp_path, capsys):
    from tokenshape.models.sentiment import ensure_sentiment_reward_model

    ensure_sentiment_reward_model()
    page = tmp_path / "explain.html"
    code = main(
        [
            "explain",
            " was wonderful but the ending was awful",
            "--prompt",
            "The movie",
            "--unit",
            "word",
            "--html",
            str(page),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "wonderful" in out and "awful" in out
    assert "wonderful" in page.read_text()


def test_ctrl_c_stops_cleanly_and_the_sweep_continues(tmp_path):
    study = tmp_path / "study"
    command = [*TOKENSHAPE, "sweep", "--config", "tiny", "--study-dir", str(study)]
    process = _sweep_in_its_second_trial(command, study, stdout=subprocess.PIPE)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "interrupted" in out
    statuses = [status for _, status, _ in _statuses(study)]
    assert statuses[0] == "complete"
    assert "running" not in statuses  # the store was told, not left for a later recovery
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert [status for _, status, _ in _statuses(study)] == ["complete"] * 3
