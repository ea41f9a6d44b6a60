"""shapiq's current Shapley estimators, run in the benchmark's Python >= 3.12 environment.

shapiq 1.5 and later (RegressionMSR, LeverageSHAP, PolySHAP, ProxySHAP, OddSHAP) need Python >=
3.12, and the project's environment is 3.11. ``make bench`` builds ``.venv-bench312`` with numpy
and shapiq only; these estimators play the reward model's recorded games there (every
coalition's value of every fidelity sequence, :mod:`attribution_bench.game_tables`), through
``shapiq_latest_runner.py``. The rows they ask for are counted as the in-process peers' are; their
time is their own seconds on a numpy game, to which the reward model's rows add the floor.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.machine import ROOT

PREFIX = "shapiq-latest."
VENV = ROOT / ".venv-bench312"
RUNNER = Path(__file__).resolve().parent / "shapiq_latest_runner.py"
#: The estimators asked for, by the runner's names.
ESTIMATORS = (
    "kernel_shap",
    "leverage_shap",
    "poly_shap",
    "poly_shap[paired]",
    "regression_msr",
    "proxy_shap",
    "odd_shap",
)
TIMEOUT_S = 3 * 3600


def run_latest_shapiq(
    games: Path,
    *,
    sets: tuple[str, ...],
    budgets: tuple[int, ...],
    seeds: int,
    overhead_sizes: tuple[int, ...],
    overhead_budgets: tuple[int, ...],
    log: Callable[[str], None],
    python: Path | None = None,
) -> dict[str, Any]:
    """Every estimator of :data:`ESTIMATORS` on the game sets of ``games``.

    Returns:
        ``{"records": {set: [fidelity record]}, "overhead": [...], "failures": [...],
        "skipped": [{"method", "reason"}], "how": {method: settings}, "versions": {...},
        "python": version}``; method names carry :data:`PREFIX`. When the environment is missing
        or the runner fails, every estimator is listed in ``skipped`` with the reason.
    """
    python = python if python is not None else VENV / "bin" / "python"
    if not python.exists():
        return _all_skipped(
            f"no Python >= 3.12 environment at {python.parent.parent.name}/ "
            "(`make bench` creates it when a Python >= 3.12 is installed)"
        )
    with tempfile.TemporaryDirectory(prefix="tokenshape-shapiq-") as tmp:
        out = Path(tmp) / "result.json"
        command = [
            str(python),
            str(RUNNER),
            f"--games={games}",
            f"--sets={','.join(sets)}",
            f"--budgets={','.join(map(str, budgets))}",
            f"--seeds={seeds}",
            f"--methods={','.join(ESTIMATORS)}",
            f"--overhead-sizes={','.join(map(str, overhead_sizes))}",
            f"--overhead-budgets={','.join(map(str, overhead_budgets))}",
            f"--out={out}",
        ]
        log(f"shapiq (Python >= 3.12): {' '.join(command[:2])} ...")
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return _all_skipped(f"the runner did not finish: {error!r}")
        if done.returncode != 0 or not out.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return _all_skipped(f"the runner failed (exit {done.returncode}): {' | '.join(tail)}")
        result = json.loads(out.read_text(encoding="utf-8"))
    return _prefixed(result)


def _all_skipped(reason: str) -> dict[str, Any]:
    return {
        "records": {},
        "overhead": [],
        "failures": [],
        "skipped": [{"method": PREFIX + name, "reason": reason} for name in ESTIMATORS],
        "how": {},
        "versions": {},
        "python": None,
    }


def _prefixed(result: dict[str, Any]) -> dict[str, Any]:
    """The runner's result with :data:`PREFIX` on every method name."""

    def rename(entry: dict[str, Any]) -> dict[str, Any]:
        return {**entry, "method": PREFIX + entry["method"]}

    return {
        **result,
        "records": {
            game_set: [rename(r) for r in records]
            for game_set, records in result["records"].items()
        },
        "overhead": [rename(r) for r in result["overhead"]],
        "failures": [rename(r) for r in result["failures"]],
        "skipped": [rename(r) for r in result["skipped"]],
        "how": {PREFIX + name: how for name, how in result["how"].items()},
    }
