"""Tests of tokenshape.tuning.store: the SQLite trial store, its lock and its refusals."""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tokenshape.errors import InvalidArgumentError, StudyStoreError
from tokenshape.shaping.params import ShapingParams
from tokenshape.tuning.store import LOCK_FILE, STUDY_FILE, TrialStore

SIGNALS = ["sparse", "attention", "kernel_shap"]


def params(a: float, b: float) -> ShapingParams:
    return ShapingParams(weights={"sparse": a, "attention": b, "kernel_shap": 1.0 - a - b})


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a folder, by name, with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def open_in_subprocess(folder: Path) -> subprocess.CompletedProcess:
    code = f"from tokenshape.tuning.store import TrialStore\nTrialStore({str(folder)!r}).close()\n"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_new_study_creates_folder_file_and_definition(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "study"
    with TrialStore(folder) as store:
        assert store.path == folder / STUDY_FILE
        assert store.study is None
        info = store.define_study(signals=SIGNALS, seed=3, normalization="abs")
        assert info.signals == tuple(SIGNALS) and info.seed == 3 and info.normalization == "abs"
        assert store.interrupted == ()
    assert sorted(p.name for p in folder.iterdir()) == sorted([STUDY_FILE, LOCK_FILE])
    with TrialStore(folder) as store:
        assert store.study == info
        assert store.define_study(signals=SIGNALS, seed=3, normalization="abs") == info
    with sqlite3.connect(folder / STUDY_FILE) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("signals", {"signals": ["sparse", "kernel_shap", "attention"]}),
        ("seed", {"seed": 4}),
        ("normalization", {"normalization": "sum"}),
    ],
)
def test_resumed_study_must_match_its_definition(tmp_path: Path, name: str, change: dict) -> None:
    definition = {"signals": SIGNALS, "seed": 3, "normalization": "abs"}
    with TrialStore(tmp_path) as store:
        store.define_study(**definition)
    with TrialStore(tmp_path) as store, pytest.raises(InvalidArgumentError) as raised:
        store.define_study(**{**definition, **change})
    assert raised.value.name == name
    assert str(definition[name]) in str(raised.value)


def test_trial_lifecycle_is_recorded_and_survives_reopening(tmp_path: Path) -> None:
    with TrialStore(tmp_path) as store:
        store.define_study(signals=SIGNALS, seed=0)
        added = store.add_trials([params(0.2, 0.3), params(0.6, 0.1)], seeds=[7, 8])
        assert [t.id for t in added] == [0, 1]
        assert [t.status for t in added] == ["pending", "pending"]
        running = store.start_trial(0)
        assert running.status == "running" and running.attempts == 1
        done = store.complete_trial(
            0, objective=1.5, learning_curve=[0.1, 0.7, 1.5], info={"kl": 0.02}
        )
        store.start_trial(1)
        failed = store.fail_trial(1, error="ValueError: diverged")
    assert done.status == "complete" and done.is_finished
    assert done.duration_s is not None and done.duration_s >= 0
    assert failed.status == "failed" and failed.objective is None
    with TrialStore(tmp_path) as store:
        first, second = store.trials()
        assert store.trials(status="complete") == [first]
        assert store.trials(status=("failed", "pending")) == [second]
    assert first.params == params(0.2, 0.3) and first.seed == 7
    assert first.objective == 1.5
    assert first.learning_curve == (0.1, 0.7, 1.5)
    assert first.info == {"kl": 0.02}
    assert second.params == params(0.6, 0.1) and second.seed == 8
    assert second.error == "ValueError: diverged"


def test_status_changes_are_checked(tmp_path: Path) -> None:
    with TrialStore(tmp_path) as store:
        store.define_study(signals=SIGNALS, seed=0)
        store.add_trials([params(0.2, 0.3)], seeds=[0])
        with pytest.raises(InvalidArgumentError, match="pending") as raised:
            store.complete_trial(0, objective=1.0)
        assert raised.value.name == "trial_id"
        store.start_trial(0)
        with pytest.raises(InvalidArgumentError) as raised:
            store.start_trial(0)
        assert raised.value.name == "trial_id"
        for bad in (math.nan, math.inf, "1.0"):
            with pytest.raises(InvalidArgumentError) as raised:
                store.complete_trial(0, objective=bad)
            assert raised.value.name == "objective"
        with pytest.raises(InvalidArgumentError) as raised:
            store.complete_trial(0, objective=1.0, info={"model": object()})
        assert raised.value.name == "info"
        assert store.trial(0).status == "running"
        with pytest.raises(InvalidArgumentError) as raised:
            store.trial(5)
        assert raised.value.name == "trial_id"
        with pytest.raises(InvalidArgumentError) as raised:
            store.add_trials([params(0.2, 0.3)], seeds=[0, 1])
        assert raised.value.name == "seeds"


def test_trial_left_running_is_reported_interrupted_and_can_run_again(tmp_path: Path) -> None:
    store = TrialStore(tmp_path)
    store.define_study(signals=SIGNALS, seed=0)
    store.add_trials([params(0.2, 0.3), params(0.1, 0.1)], seeds=[11, 12])
    store.start_trial(0)
    store.complete_trial(0, objective=0.5)
    store.start_trial(1)
    store.close()  # the file now looks as it does after the process was killed mid-trial

    with TrialStore(tmp_path) as store:
        assert store.interrupted == (1,)
        interrupted = store.trial(1)
        assert interrupted.status == "interrupted" and not interrupted.is_finished
        assert store.trials(status="complete") == [store.trial(0)]
        rerun = store.start_trial(1)
    assert rerun.attempts == 2
    assert rerun.params == params(0.1, 0.1) and rerun.seed == 12


def test_interrupt_trial_puts_a_running_trial_back(tmp_path: Path) -> None:
    with TrialStore(tmp_path) as store:
        store.define_study(signals=SIGNALS, seed=0)
        store.add_trials([params(0.2, 0.3)], seeds=[0])
        store.start_trial(0)
        assert store.interrupt_trial(0).status == "interrupted"
        assert store.start_trial(0).attempts == 2


def test_to_dataframe_has_one_row_per_trial_and_weight_columns(tmp_path: Path) -> None:
    with TrialStore(tmp_path) as store:
        empty = store.to_dataframe()
        assert empty.empty and "status" in empty.columns
        store.define_study(signals=SIGNALS, seed=0)
        store.add_trials([params(0.2, 0.3), params(0.6, 0.1), params(0.0, 0.5)], seeds=[0, 1, 2])
        store.start_trial(0)
        store.complete_trial(0, objective=2.0, learning_curve=[1.0, 2.0])
        store.start_trial(1)
        store.fail_trial(1, error="boom")
        frame = store.to_dataframe()
    assert list(frame.index) == [0, 1, 2]
    assert frame.index.name == "trial"
    assert list(frame["status"]) == ["complete", "failed", "pending"]
    assert [c for c in frame.columns if c.startswith("w_")] == [f"w_{s}" for s in SIGNALS]
    assert frame.loc[2, "w_attention"] == 0.5 and frame.loc[1, "w_sparse"] == 0.6
    assert frame.loc[0, "objective"] == 2.0 and math.isnan(frame.loc[1, "objective"])
    assert frame.loc[1, "error"] == "boom"
    assert frame.loc[0, "learning_curve"] == [1.0, 2.0]
    assert list(frame["seed"]) == [0, 1, 2]
    assert pd.api.types.is_datetime64_any_dtype(frame["created_at"])
    assert frame.loc[0, "finished_at"] >= frame.loc[0, "started_at"]
    assert pd.isna(frame.loc[2, "started_at"])


def test_random_bytes_are_refused_and_left_unchanged(tmp_path: Path) -> None:
    (tmp_path / STUDY_FILE).write_bytes(os.urandom(8192))
    before = (tmp_path / STUDY_FILE).read_bytes()
    with pytest.raises(StudyStoreError, match="not a SQLite database"):
        TrialStore(tmp_path)
    assert (tmp_path / STUDY_FILE).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([STUDY_FILE, LOCK_FILE])


def test_foreign_sqlite_database_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / STUDY_FILE)
    db.execute("CREATE TABLE trials (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO trials (name) VALUES ('not ours')")
    db.commit()
    db.close()
    before = snapshot(tmp_path)
    with pytest.raises(StudyStoreError, match="another application"):
        TrialStore(tmp_path)
    after = snapshot(tmp_path)
    after.pop(LOCK_FILE)
    assert after == before


def test_study_of_another_schema_version_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    TrialStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / STUDY_FILE)
    db.execute("PRAGMA user_version = 99")
    db.close()
    before = (tmp_path / STUDY_FILE).read_bytes()
    with pytest.raises(StudyStoreError, match="schema version 99"):
        TrialStore(tmp_path)
    assert (tmp_path / STUDY_FILE).read_bytes() == before


def test_damaged_study_pages_are_refused_and_left_unchanged(tmp_path: Path) -> None:
    with TrialStore(tmp_path) as store:
        store.define_study(signals=SIGNALS, seed=0)
        store.add_trials([params(0.2, 0.3)] * 40, seeds=[0] * 40)
    path = tmp_path / STUDY_FILE
    data = bytearray(path.read_bytes())
    data[4096:] = bytes((7 * i) % 256 for i in range(len(data) - 4096))
    path.write_bytes(bytes(data))
    with pytest.raises(StudyStoreError, match="damaged"):
        TrialStore(tmp_path)
    assert path.read_bytes() == bytes(data)


def test_a_file_in_place_of_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "study").write_text("x")
    with pytest.raises(InvalidArgumentError) as raised:
        TrialStore(tmp_path / "study")
    assert raised.value.name == "folder"


def test_second_process_is_refused_while_the_study_is_open(tmp_path: Path) -> None:
    with TrialStore(tmp_path) as store:
        store.define_study(signals=SIGNALS, seed=0)
        refused = open_in_subprocess(tmp_path)
        assert refused.returncode != 0
        assert "StudyStoreError" in refused.stderr
        assert f"open in another process (pid {os.getpid()})" in refused.stderr
        with pytest.raises(StudyStoreError, match="open in another process"):
            TrialStore(tmp_path)
        assert store.study is not None  # the refused openings did not disturb this one
    with TrialStore(tmp_path) as reopened:  # closing released the lock
        assert reopened.study is not None


def test_closed_store_refuses_use(tmp_path: Path) -> None:
    store = TrialStore(tmp_path)
    store.close()
    store.close()
    with pytest.raises(StudyStoreError, match="closed"):
        store.trials()


def test_replicates_give_the_objective_its_standard_error(tmp_path: Path) -> None:
    with TrialStore(tmp_path) as store:
        store.define_study(signals=SIGNALS, seed=0)
        store.add_trials([params(0.2, 0.3), params(0.6, 0.1), params(0.1, 0.1)], seeds=[0, 0, 0])
        store.start_trial(0)
        store.complete_trial(0, objective=2.0, replicate_values=[1.0, 2.0, 3.0])
        store.start_trial(1)
        store.complete_trial(1, objective=0.5, replicate_values=[0.5])
        store.start_trial(2)
        with pytest.raises(InvalidArgumentError, match="mean of replicate_values"):
            store.complete_trial(2, objective=1.0, replicate_values=[1.0, 2.0])
        with pytest.raises(InvalidArgumentError, match="replicate_values"):
            store.complete_trial(2, objective=1.0, replicate_values=[1.0, float("nan")])
        store.complete_trial(2, objective=1.0)
        frame = store.to_dataframe()
        assert store.trial(0).replicate_values == (1.0, 2.0, 3.0)
    # sd of (1, 2, 3) is 1, over sqrt(3) replicates.
    assert frame.loc[0, "objective_sem"] == pytest.approx(1.0 / math.sqrt(3), abs=1e-12)
    assert math.isnan(frame.loc[1, "objective_sem"]) and math.isnan(frame.loc[2, "objective_sem"])
    assert list(frame["replicates"]) == [3, 1, 1]


def test_a_study_of_schema_version_1_is_upgraded_with_its_trials_kept(tmp_path: Path) -> None:
    with TrialStore(tmp_path) as store:
        store.define_study(signals=SIGNALS, seed=0)
        store.add_trials([params(0.2, 0.3)], seeds=[0])
        store.start_trial(0)
        store.complete_trial(0, objective=1.5)
    db = sqlite3.connect(tmp_path / STUDY_FILE)
    db.execute("CREATE TABLE old AS SELECT * FROM trials")
    db.execute("DROP TABLE trials")
    columns = [
        row[1]
        for row in db.execute("PRAGMA table_info(old)")
        if row[1] not in ("objective_sem", "replicate_values")
    ]
    db.execute(f"CREATE TABLE trials AS SELECT {', '.join(columns)} FROM old")
    db.execute("DROP TABLE old")
    db.execute("UPDATE study SET schema_version = 1")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with TrialStore(tmp_path) as store:
        trial = store.trial(0)
        assert trial.objective == 1.5 and trial.objective_sem is None
        assert math.isnan(store.to_dataframe().loc[0, "objective_sem"])
    assert sqlite3.connect(tmp_path / STUDY_FILE).execute("PRAGMA user_version").fetchone()[0] == 2
