"""The trials of one tuning study, kept in a SQLite file inside the study's folder.

A study folder holds ``study.sqlite`` (the trials) and ``study.lock``. While a :class:`TrialStore`
is open it holds an exclusive ``flock`` on ``study.lock``, so a second process opening the same
study is refused instead of interleaving trials; the kernel drops the lock when the process dies,
so a killed study can be reopened at once. Locks need a local file system (POSIX ``flock``).

The SQLite file carries an ``application_id`` and a schema version in its header. Both are read
from the raw header before SQLite touches the file, so a damaged file or another program's database
is refused with a clear error and left byte for byte as it was. A study of schema version 1 (before
replicates) is upgraded in place on opening: its trials gain empty replicate columns.

A trial goes ``pending -> running -> complete | failed``. A trial found ``running`` when the study
is reopened belonged to a process that was killed: it becomes ``interrupted`` and is run again
with the same params and seed, as is a trial stopped by Ctrl-C.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import pandas as pd

from tokenshape.errors import InvalidArgumentError, StudyStoreError
from tokenshape.shaping.params import ShapingParams

__all__ = ["LOCK_FILE", "STUDY_FILE", "TRIAL_STATUSES", "StudyInfo", "Trial", "TrialStore"]

_log = logging.getLogger(__name__)

STUDY_FILE = "study.sqlite"
LOCK_FILE = "study.lock"

#: Every status a trial can have; ``complete`` and ``failed`` are final.
TRIAL_STATUSES = ("pending", "running", "complete", "failed", "interrupted")

_SCHEMA_VERSION = 2
#: Older schema versions that opening upgrades, with the statements that do it.
_UPGRADES = {
    1: (
        "ALTER TABLE trials ADD COLUMN objective_sem REAL",
        "ALTER TABLE trials ADD COLUMN replicate_values TEXT",
    ),
}
_APPLICATION_ID = int.from_bytes(b"TkSh", "big")
_MARKER = "tokenshape study"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_TO_RUN = ("pending", "interrupted")

_SCHEMA = f"""
CREATE TABLE study (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    marker TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    signals TEXT,
    seed INTEGER,
    normalization TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE trials (
    id INTEGER PRIMARY KEY,
    params TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN {TRIAL_STATUSES!r}),
    objective REAL,
    objective_sem REAL,
    replicate_values TEXT,
    error TEXT,
    learning_curve TEXT,
    info TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    started_at TEXT,
    finished_at TEXT,
    duration_s REAL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class StudyInfo:
    """What defines a study; a resumed study must be asked for with the same values.

    Attributes:
        signals: the signal names, in the order of the weight vector.
        seed: the study's seed (Sobol scrambling, acquisition optimisation, trial seeds).
        normalization: the normalisation of every trial's :class:`ShapingParams`.
        created_at: ISO-8601 UTC time the study file was created.
    """

    signals: tuple[str, ...]
    seed: int
    normalization: str
    created_at: str


@dataclass(frozen=True)
class Trial:
    """One evaluation of the objective, as stored.

    Attributes:
        id: the trial number, from 0 in the order trials were proposed.
        params: the blend weights evaluated.
        seed: the seed the objective ran under.
        status: one of :data:`TRIAL_STATUSES`.
        objective: the value returned, for a ``complete`` trial (the mean of its replicates).
        objective_sem: the standard error of ``objective`` over its replicates (``sd / sqrt(n)``),
            or ``None`` with fewer than two replicates.
        replicate_values: the objective of each replicate (e.g. one per training seed), if the
            objective reported them.
        error: what went wrong, for a ``failed`` trial.
        learning_curve: the inner run's curve, if the objective reported one.
        info: extra JSON-ready values the objective reported.
        attempts: how many times the objective was started on it (2 after one interruption).
        created_at: ISO-8601 UTC time the trial was proposed.
        updated_at: ISO-8601 UTC time of its last change.
        started_at: ISO-8601 UTC time of its last start.
        finished_at: ISO-8601 UTC time it completed or failed.
        duration_s: seconds from its last start to its end.
    """

    id: int
    params: ShapingParams
    seed: int
    status: str
    objective: float | None
    objective_sem: float | None
    replicate_values: tuple[float, ...] | None
    error: str | None
    learning_curve: tuple[float, ...] | None
    info: dict[str, Any] | None
    attempts: int
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None
    duration_s: float | None

    @property
    def is_finished(self) -> bool:
        """Whether the trial is ``complete`` or ``failed`` (it counts towards a study's budget)."""
        return self.status in ("complete", "failed")


class TrialStore:
    """The trials of one study in ``<folder>/study.sqlite``, open in this process only.

    Opening creates the folder and an empty study if there is none, takes the study's lock, and
    marks trials left ``running`` by a killed process as ``interrupted`` (their ids are in
    :attr:`interrupted`). Close it (or use ``with``) to release the lock.

    Args:
        folder: the study folder.
        busy_timeout_s: how long SQLite waits for a busy database before failing, in seconds.

    Attributes:
        folder: the study folder.
        interrupted: ids of the trials found ``running`` on opening, now ``interrupted``.

    Raises:
        StudyStoreError: the study is open in another process, or ``study.sqlite`` is not a
            tokenshape study of this schema version (nothing is written in that case).

    Example:
        >>> import tempfile
        >>> with TrialStore(tempfile.mkdtemp()) as store:
        ...     _ = store.define_study(signals=["sparse", "attention"], seed=0)
        ...     len(store.trials())
        0
    """

    def __init__(self, folder: str | os.PathLike[str], *, busy_timeout_s: float = 10.0) -> None:
        if not isinstance(busy_timeout_s, int | float) or not busy_timeout_s >= 0:
            raise InvalidArgumentError("busy_timeout_s", busy_timeout_s, "a number of seconds >= 0")
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise InvalidArgumentError("folder", str(folder), "a study folder, not a file")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = _acquire_lock(self.folder / LOCK_FILE)
        self._conn: sqlite3.Connection | None = None
        try:
            if self.path.exists():
                _check_header(self.path)
            else:
                _create(self.path)
            self._conn = sqlite3.connect(self.path, isolation_level=None)
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._upgrade()
            self._check_contents()
            self.interrupted: tuple[int, ...] = self._recover_running()
        except BaseException:
            self.close()
            raise

    @property
    def path(self) -> Path:
        """The SQLite file, ``<folder>/study.sqlite``."""
        return self.folder / STUDY_FILE

    def close(self) -> None:
        """Close the database and release the study's lock; closing twice is harmless."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def study(self) -> StudyInfo | None:
        """The study's definition, or ``None`` before :meth:`define_study`."""
        row = self._db.execute(
            "SELECT signals, seed, normalization, created_at FROM study WHERE id = 1"
        ).fetchone()
        if row[0] is None:
            return None
        return StudyInfo(tuple(json.loads(row[0])), int(row[1]), row[2], row[3])

    def define_study(
        self, *, signals: Sequence[str], seed: int, normalization: str = "sum"
    ) -> StudyInfo:
        """Record what the study tunes, or check that a resumed study tunes the same.

        Args:
            signals: the signal names, in weight-vector order.
            seed: the study's seed.
            normalization: the normalisation of the trials' params.

        Returns:
            The study's definition.

        Raises:
            InvalidArgumentError: the study was defined with other values.
        """
        wanted = {"signals": list(signals), "seed": seed, "normalization": normalization}
        current = self.study
        if current is None:
            with self._transaction() as db:
                db.execute(
                    "UPDATE study SET signals = ?, seed = ?, normalization = ? WHERE id = 1",
                    (json.dumps(wanted["signals"]), seed, normalization),
                )
            return self.study
        stored = {
            "signals": list(current.signals),
            "seed": current.seed,
            "normalization": current.normalization,
        }
        for name, value in wanted.items():
            if value != stored[name]:
                raise InvalidArgumentError(
                    name,
                    value,
                    f"{stored[name]!r}, the value the study in {self.folder} was created with",
                )
        return current

    def add_trials(self, params: Sequence[ShapingParams], *, seeds: Sequence[int]) -> list[Trial]:
        """Save proposed trials as ``pending``, in one transaction.

        Args:
            params: the blend weights of each new trial.
            seeds: the seed of each new trial, as many as ``params``.

        Returns:
            The new trials, numbered after the existing ones.
        """
        if len(seeds) != len(params):
            raise InvalidArgumentError("seeds", list(seeds), f"{len(params)} seeds, one per params")
        now = _now()
        with self._transaction() as db:
            first = db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
            db.executemany(
                "INSERT INTO trials (id, params, seed, status, created_at, updated_at)"
                " VALUES (?, ?, ?, 'pending', ?, ?)",
                [
                    (first + i, json.dumps(p.to_dict()), int(s), now, now)
                    for i, (p, s) in enumerate(zip(params, seeds, strict=True))
                ],
            )
        return [self.trial(first + i) for i in range(len(params))]

    def start_trial(self, trial_id: int) -> Trial:
        """Mark a ``pending`` or ``interrupted`` trial as ``running`` and count the attempt."""
        now = _now()
        with self._transaction() as db:
            self._require_status(db, trial_id, _TO_RUN)
            db.execute(
                "UPDATE trials SET status = 'running', attempts = attempts + 1, started_at = ?,"
                " updated_at = ? WHERE id = ?",
                (now, now, trial_id),
            )
        return self.trial(trial_id)

    def complete_trial(
        self,
        trial_id: int,
        *,
        objective: float,
        replicate_values: Sequence[float] | None = None,
        learning_curve: Sequence[float] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> Trial:
        """Record a ``running`` trial's finite objective value (and optional curve and info).

        With ``replicate_values`` (the objective of each replicate, e.g. each training seed),
        ``objective`` must be their mean, and the trial's ``objective_sem`` is their sample
        standard deviation over ``sqrt(n)`` (``None`` for one replicate).
        """
        if isinstance(objective, bool) or not isinstance(objective, int | float):
            raise InvalidArgumentError("objective", objective, "a finite float")
        if not math.isfinite(objective):
            raise InvalidArgumentError("objective", objective, "a finite float")
        replicates, sem = _replicates(objective, replicate_values)
        curve = None if learning_curve is None else json.dumps([float(v) for v in learning_curve])
        try:
            info_json = None if info is None else json.dumps(dict(info))
        except (TypeError, ValueError):
            raise InvalidArgumentError("info", info, "a JSON-serialisable mapping") from None
        return self._finish(
            trial_id,
            "complete",
            "objective = ?, objective_sem = ?, replicate_values = ?, learning_curve = ?,"
            " info = ?, error = NULL",
            (float(objective), sem, replicates, curve, info_json),
        )

    def fail_trial(self, trial_id: int, *, error: str) -> Trial:
        """Record that a ``running`` trial failed, with the error text."""
        return self._finish(trial_id, "failed", "error = ?, objective = NULL", (str(error),))

    def interrupt_trial(self, trial_id: int) -> Trial:
        """Put a ``running`` trial back to be run again (same params and seed)."""
        with self._transaction() as db:
            self._require_status(db, trial_id, ("running",))
            db.execute(
                "UPDATE trials SET status = 'interrupted', updated_at = ? WHERE id = ?",
                (_now(), trial_id),
            )
        return self.trial(trial_id)

    def trial(self, trial_id: int) -> Trial:
        """One trial by id."""
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM trials WHERE id = ?", (trial_id,)
        ).fetchone()
        if row is None:
            raise InvalidArgumentError("trial_id", trial_id, "the id of a trial in this study")
        return _trial_from_row(row)

    def trials(self, *, status: str | Sequence[str] | None = None) -> list[Trial]:
        """The study's trials in id order, optionally only those with the given status(es)."""
        wanted = (status,) if isinstance(status, str) else status
        if wanted is not None and not set(wanted) <= set(TRIAL_STATUSES):
            raise InvalidArgumentError("status", status, f"one or more of {TRIAL_STATUSES}")
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM trials ORDER BY id").fetchall()
        found = [_trial_from_row(row) for row in rows]
        return found if wanted is None else [t for t in found if t.status in wanted]

    def to_dataframe(self) -> pd.DataFrame:
        """The study as a table, one row per trial, indexed by trial id.

        Columns: ``status``, ``objective``, ``objective_sem`` (NaN with fewer than two
        replicates), ``replicates`` (how many values the objective is the mean of), ``seed``, one ``w_<signal>`` per signal, ``attempts``,
        ``error``, ``duration_s``, ``created_at``, ``updated_at``, ``started_at``, ``finished_at``
        (UTC timestamps), ``learning_curve`` (a list or ``None``) and ``info`` (a dict or ``None``).
        """
        study = self.study
        signals = study.signals if study is not None else ()
        records = [
            {
                "trial": t.id,
                "status": t.status,
                "objective": t.objective,
                "objective_sem": t.objective_sem,
                "replicates": _replicate_count(t),
                "seed": t.seed,
                **{f"w_{name}": t.params.weights.get(name, 0.0) for name in signals},
                "attempts": t.attempts,
                "error": t.error,
                "duration_s": t.duration_s,
                "created_at": t.created_at,
                "updated_at": t.updated_at,
                "started_at": t.started_at,
                "finished_at": t.finished_at,
                "learning_curve": None if t.learning_curve is None else list(t.learning_curve),
                "info": t.info,
            }
            for t in self.trials()
        ]
        columns = ["trial", "status", "objective", "objective_sem", "replicates", "seed"]
        columns += [f"w_{n}" for n in signals]
        columns += ["attempts", "error", "duration_s", "created_at", "updated_at", "started_at"]
        columns += ["finished_at", "learning_curve", "info"]
        frame = pd.DataFrame.from_records(records, columns=columns).set_index("trial")
        for column in ("created_at", "updated_at", "started_at", "finished_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        for column in ("objective", "objective_sem"):
            frame[column] = frame[column].astype(float)
        frame["replicates"] = frame["replicates"].astype("Int64")
        return frame

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StudyStoreError(f"the study in {self.folder} is closed")
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _require_status(
        self, db: sqlite3.Connection, trial_id: int, allowed: Sequence[str]
    ) -> None:
        row = db.execute("SELECT status FROM trials WHERE id = ?", (trial_id,)).fetchone()
        if row is None or row[0] not in allowed:
            found = "no such trial" if row is None else f"trial {trial_id} is {row[0]}"
            raise InvalidArgumentError(
                "trial_id", trial_id, f"the id of a trial that is {' or '.join(allowed)} ({found})"
            )

    def _finish(self, trial_id: int, status: str, assignments: str, values: tuple) -> Trial:
        now = _now()
        with self._transaction() as db:
            self._require_status(db, trial_id, ("running",))
            started = db.execute(
                "SELECT started_at FROM trials WHERE id = ?", (trial_id,)
            ).fetchone()
            duration = (
                datetime.fromisoformat(now) - datetime.fromisoformat(started[0])
            ).total_seconds()
            db.execute(
                f"UPDATE trials SET status = ?, {assignments}, finished_at = ?, duration_s = ?,"
                " updated_at = ? WHERE id = ?",
                (status, *values, now, duration, now, trial_id),
            )
        return self.trial(trial_id)

    def _upgrade(self) -> None:
        """Bring a study of an older schema version to the current one, in one transaction."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in _UPGRADES:
            return
        with self._transaction() as db:
            for statement in _UPGRADES[version]:
                db.execute(statement)
            db.execute("UPDATE study SET schema_version = ? WHERE id = 1", (_SCHEMA_VERSION,))
            db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        _log.info("the study in %s was upgraded to schema version %d", self.folder, version)

    def _check_contents(self) -> None:
        """Check through SQLite what the raw header showed, as it may lag behind the WAL."""
        try:
            ids = (
                self._db.execute("PRAGMA application_id").fetchone()[0],
                self._db.execute("PRAGMA user_version").fetchone()[0],
            )
            check = self._db.execute("PRAGMA quick_check").fetchone()[0]
            row = self._db.execute(
                "SELECT marker, schema_version FROM study WHERE id = 1"
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise StudyStoreError(f"{self.path} is damaged and can't be read: {exc}") from exc
        if ids != (_APPLICATION_ID, _SCHEMA_VERSION):
            raise StudyStoreError(
                f"{self.path} has application_id {ids[0]:#x} and schema version {ids[1]}; this "
                f"tokenshape reads studies with {_APPLICATION_ID:#x} and version {_SCHEMA_VERSION}"
            )
        if check != "ok" or row is None or tuple(row) != (_MARKER, _SCHEMA_VERSION):
            raise StudyStoreError(
                f"{self.path} is damaged: integrity check {check!r}, study record {row!r}"
            )

    def _recover_running(self) -> tuple[int, ...]:
        with self._transaction() as db:
            ids = tuple(r[0] for r in db.execute("SELECT id FROM trials WHERE status = 'running'"))
            db.execute(
                "UPDATE trials SET status = 'interrupted', updated_at = ? WHERE status = 'running'",
                (_now(),),
            )
        for trial_id in ids:
            _log.warning(
                "trial %d of the study in %s was left running by a process that stopped; "
                "it is marked interrupted and will run again with the same params and seed",
                trial_id,
                self.folder,
            )
        return ids


_COLUMNS = (
    "id, params, seed, status, objective, objective_sem, replicate_values, error, learning_curve,"
    " info, attempts, created_at, updated_at, started_at, finished_at, duration_s"
)


def _replicates(
    objective: float, values: Sequence[float] | None
) -> tuple[str | None, float | None]:
    """The replicate values as JSON and their standard error (``None`` below two values)."""
    if values is None:
        return None, None
    try:
        floats = [float(v) for v in values]
    except (TypeError, ValueError):
        raise InvalidArgumentError("replicate_values", values, "a sequence of floats") from None
    if not floats or not all(math.isfinite(v) for v in floats):
        raise InvalidArgumentError("replicate_values", values, "one or more finite floats")
    mean = math.fsum(floats) / len(floats)
    if abs(mean - objective) > 1e-9 * (1.0 + abs(mean)):
        raise InvalidArgumentError(
            "objective", objective, f"the mean of replicate_values ({mean!r})"
        )
    if len(floats) < 2:
        return json.dumps(floats), None
    variance = math.fsum((v - mean) ** 2 for v in floats) / (len(floats) - 1)
    return json.dumps(floats), math.sqrt(variance / len(floats))


def _replicate_count(trial: Trial) -> int | None:
    if trial.replicate_values is not None:
        return len(trial.replicate_values)
    return 1 if trial.objective is not None else None


def _trial_from_row(row: tuple) -> Trial:
    (id_, params, seed, status, objective, sem, replicates, error, curve, info, attempts) = row[:11]
    *times, duration = row[11:]
    return Trial(
        id=id_,
        params=ShapingParams.from_dict(json.loads(params)),
        seed=seed,
        status=status,
        objective=objective,
        objective_sem=sem,
        replicate_values=None if replicates is None else tuple(json.loads(replicates)),
        error=error,
        learning_curve=None if curve is None else tuple(json.loads(curve)),
        info=None if info is None else json.loads(info),
        attempts=attempts,
        created_at=times[0],
        updated_at=times[1],
        started_at=times[2],
        finished_at=times[3],
        duration_s=duration,
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _acquire_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StudyStoreError(
            f"the study in {path.parent} is open in another process (pid {holder}); "
            "wait for it to finish or stop it, then open the study again"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _check_header(path: Path) -> None:
    with open(path, "rb") as handle:
        header = handle.read(100)
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise StudyStoreError(
            f"{path} is not a SQLite database (damaged, or some other file); it was left untouched. "
            "Move it away or choose another study folder."
        )
    application_id = int.from_bytes(header[68:72], "big")
    if application_id != _APPLICATION_ID:
        raise StudyStoreError(
            f"{path} is a SQLite database of another application (application_id "
            f"{application_id:#x}; a tokenshape study has {_APPLICATION_ID:#x}); it was left "
            "untouched. Choose another study folder."
        )
    version = int.from_bytes(header[60:64], "big")
    if version != _SCHEMA_VERSION and version not in _UPGRADES:
        raise StudyStoreError(
            f"{path} is a tokenshape study of schema version {version}; this tokenshape reads "
            f"version {_SCHEMA_VERSION} (and upgrades {sorted(_UPGRADES)}). It was left untouched."
        )


def _create(path: Path) -> None:
    """Write an empty study to a side file and move it into place, so no half-made file remains."""
    staging = path.with_name(path.name + ".creating")
    staging.unlink(missing_ok=True)
    db = sqlite3.connect(staging, isolation_level=None)
    try:
        db.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        db.executescript(_SCHEMA)
        db.execute(
            "INSERT INTO study (id, marker, schema_version, created_at) VALUES (1, ?, ?, ?)",
            (_MARKER, _SCHEMA_VERSION, _now()),
        )
        db.execute("PRAGMA journal_mode = WAL")
    finally:
        db.close()
    os.replace(staging, path)
