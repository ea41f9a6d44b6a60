"""Run shapiq's current Shapley estimators on recorded games: the other side of ``shapiq_latest``.

Runs under the benchmark's Python >= 3.12 environment (numpy and shapiq, no torch): shapiq 1.5
and later need it. It reads the games file (every coalition's value of every game, and the exact
Shapley values), plays each estimator on a :class:`~attribution_bench.lookup_games.LookupGame`
that counts the coalitions it asks for, and writes one JSON document: the fidelity records in the
format of :func:`attribution_bench.fidelity.sweep_fidelity`, each estimator's own seconds per
run on a cheap additive game of the timing part's sizes, and any estimator it could not run,
with the reason.

    python shapiq_latest_runner.py --games G.npz --sets mask,smooth --budgets 64,256 --seeds 5 \
        --methods kernel_shap,regression_msr --out result.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from attribution_bench.lookup_games import LookupGame

#: Proxies in the order RegressionMSR and ProxySHAP prefer them (xgboost is shapiq's default):
#: module -> shapiq's name for it; the first importable one is used, scikit-learn's tree else.
PROXIES = (("xgboost", "xgboost"), ("lightgbm", "lightgbm"))


def proxy_model() -> str:
    for module, name in PROXIES:
        if importlib.util.find_spec(module) is not None:
            return name
    return "tree"


def estimators(proxy: str) -> dict[str, tuple[Callable[[int, int], Any], str]]:
    """Method name -> (``(n, seed) -> approximator``, its settings as the results show them)."""
    from shapiq import approximator as approx

    out: dict[str, tuple[Callable[[int, int], Any], str]] = {
        "kernel_shap": (
            lambda n, seed: approx.KernelSHAP(n, pairing_trick=True, random_state=seed),
            "KernelSHAP, pairing_trick=True",
        ),
        "leverage_shap": (
            lambda n, seed: approx.LeverageSHAP(n, random_state=seed),
            "LeverageSHAP defaults (pairing, deterministic counts)",
        ),
        "poly_shap": (
            lambda n, seed: approx.PolySHAP(n, random_state=seed),
            "PolySHAP defaults (order-2 frontier, no pairing)",
        ),
        "poly_shap[paired]": (
            lambda n, seed: approx.PolySHAP(n, pairing_trick=True, random_state=seed),
            "PolySHAP order-2 frontier, pairing_trick=True",
        ),
        "regression_msr": (
            lambda n, seed: approx.RegressionMSR(n, "SV", proxy_model=proxy, random_state=seed),
            f"RegressionMSR index SV, proxy {proxy}, pairing (defaults)",
        ),
    }
    if hasattr(approx, "ProxySHAP"):
        out["proxy_shap"] = (
            lambda n, seed: approx.ProxySHAP(
                n, max_order=1, index="SV", proxy_model=proxy, random_state=seed
            ),
            f"ProxySHAP index SV, proxy {proxy}, no adjustment (defaults)",
        )
    if hasattr(approx, "OddSHAP"):
        out["odd_shap"] = (
            lambda n, seed: approx.OddSHAP(n, random_state=seed),
            "OddSHAP defaults",
        )
    return out


def shapley_vector(values: Any, n: int) -> np.ndarray:
    return np.array([values[(i,)] for i in range(n)], dtype=np.float64)


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    if np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def sweep(
    make: Callable[[int, int], Any],
    name: str,
    values: np.ndarray,
    exact: np.ndarray,
    labels: list[int],
    budgets: list[int],
    seeds: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every budget on every game and seed; returns (records, failed budgets with the error)."""
    records, failures = [], []
    for budget in budgets:
        per_game = []
        start = time.perf_counter()
        try:
            for index, (table, phi_star, label) in enumerate(zip(values, exact, labels)):
                for k in range(seeds):
                    game = LookupGame(table)
                    n = game.n_players
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        result = make(n, 1000 * k + index).approximate(budget=budget, game=game)
                    phi = shapley_vector(result, n)
                    per_game.append(
                        {
                            "review": label,
                            "seed": 1000 * k + index,
                            "rows": game.rows,
                            "pearson": pearson(phi, phi_star),
                            "rel_l2": float(
                                np.linalg.norm(phi - phi_star) / np.linalg.norm(phi_star)
                            ),
                        }
                    )
        except Exception as error:  # noqa: BLE001 (any failure of a peer is recorded, not raised)
            failures.append({"method": name, "budget": budget, "error": repr(error)[:300]})
            continue
        pearsons = [r["pearson"] for r in per_game if r["pearson"] is not None]
        records.append(
            {
                "method": name,
                "budget": budget,
                "rows": float(np.mean([r["rows"] for r in per_game])),
                "pearson": float(np.mean(pearsons)) if pearsons else None,
                "pearson_min": float(np.min(pearsons)) if pearsons else None,
                "rel_l2": float(np.mean([r["rel_l2"] for r in per_game])),
                "rel_l2_max": float(np.max([r["rel_l2"] for r in per_game])),
                "cpu_seconds_per_run": (time.perf_counter() - start) / len(per_game),
                "per_review": per_game,
            }
        )
        print(f"  {name} @{budget}: rel L2 {records[-1]['rel_l2']:.3f}", flush=True)
    return records, failures


def overhead(
    make: Callable[[int, int], Any], name: str, sizes: list[int], budgets: list[int]
) -> list[dict[str, Any]]:
    """Seconds per run on an additive numpy game (no model): the estimator's own time."""
    out = []
    for n in sizes:
        weights = np.linspace(-1.0, 1.0, n)

        def additive(coalitions: np.ndarray, weights: np.ndarray = weights) -> np.ndarray:
            return (np.asarray(coalitions) != 0) @ weights

        for budget in budgets:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                make(n, 0).approximate(budget=budget, game=additive)  # warm-up
                start = time.perf_counter()
                make(n, 1).approximate(budget=budget, game=additive)
            out.append(
                {
                    "method": name,
                    "response_tokens": n,
                    "budget": budget,
                    "own_seconds": time.perf_counter() - start,
                }
            )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--games", required=True, help="the games file (.npz)")
    parser.add_argument("--sets", required=True, help="comma-separated game sets, e.g. mask")
    parser.add_argument("--budgets", required=True, help="comma-separated budgets")
    parser.add_argument("--seeds", type=int, required=True, help="runs per game and budget")
    parser.add_argument("--methods", required=True, help="comma-separated estimator names")
    parser.add_argument("--overhead-sizes", default="", help="players of the overhead games")
    parser.add_argument("--overhead-budgets", default="", help="budgets of the overhead games")
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    args = parser.parse_args(argv)

    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x]

    with np.load(args.games) as data:
        games = {name: data[name] for name in data.files}
    proxy = proxy_model()
    available = estimators(proxy)
    result: dict[str, Any] = {
        "python": platform.python_version(),
        "versions": {
            p: _version(p)
            for p in ("shapiq", "numpy", "scikit-learn", "xgboost", "xgboost-cpu", "lightgbm")
        },
        "how": {name: how for name, (_, how) in available.items()},
        "records": {},
        "failures": [],
        "skipped": [],
        "overhead": [],
    }
    wanted = [m for m in args.methods.split(",") if m]
    for name in wanted:
        if name not in available:
            result["skipped"].append(
                {"method": name, "reason": f"not in shapiq {_version('shapiq')}"}
            )
    for game_set in args.sets.split(","):
        values, exact = games[f"values_{game_set}"], games[f"exact_{game_set}"]
        labels = [int(x) for x in games.get(f"labels_{game_set}", np.arange(len(values)))]
        result["records"][game_set] = []
        for name in wanted:
            if name not in available:
                continue
            print(f"{game_set}: {name}", flush=True)
            records, failures = sweep(
                available[name][0], name, values, exact, labels, ints(args.budgets), args.seeds
            )
            result["records"][game_set] += records
            result["failures"] += [{**f, "set": game_set} for f in failures]
    sizes, budgets = ints(args.overhead_sizes), ints(args.overhead_budgets)
    for name in wanted:
        if name in available and sizes and budgets:
            try:
                result["overhead"] += overhead(available[name][0], name, sizes, budgets)
            except Exception as error:  # noqa: BLE001 (recorded, as in the sweep)
                result["failures"].append({"method": name, "overhead": True, "error": repr(error)})
    Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
