"""Fidelity against exact Shapley values: the exact pass, the budget sweep, rows to a target."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from harness.machine import ROOT

import tokenshape
from attribution_bench.game import Context, Method
from attribution_bench.game_tables import coalition_values, load_games, row_table, save_games
from attribution_bench.peers.shapiq_latest import run_latest_shapiq
from attribution_bench.rewards import CountingReward
from attribution_bench.sequences import Sequence, batch_tensors
from attribution_bench.settings import Settings
from attribution_bench.smooth_games import MASK_ID as SMOOTH_MASK_ID
from attribution_bench.smooth_games import smooth_games

#: The two games of the fidelity part: replacement by [MASK], and deletion.
GAMES = ("mask", "remove")


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def relative_l2(phi: np.ndarray, exact: np.ndarray) -> float:
    return float(np.linalg.norm(phi - exact) / np.linalg.norm(exact))


def exact_tables(
    context: Context, sequences: list[Sequence], masking: str
) -> tuple[list[np.ndarray], dict[bytes, float], float]:
    """Exact Shapley values with tokenshape's ``exact`` and every coalition's value, recorded.

    Returns:
        (one ``M`` array per sequence, the row-key -> value table, seconds).
    """
    reward = context.reward
    table: dict[bytes, float] = {}
    reward.record = table
    reward.reset()
    start = time.perf_counter()
    ids, attention, response = batch_tensors(sequences)
    try:
        result = tokenshape.attribute(
            reward,
            ids,
            attention,
            response,
            method="exact",
            masking=masking,
            max_rows=context.peer_chunk,
        )
    finally:
        reward.record = None
    seconds = time.perf_counter() - start
    expected = len(sequences) * 2 ** sequences[0].response_positions.shape[0]
    if reward.rows != expected:
        raise RuntimeError(f"exact spent {reward.rows} rows, expected {expected}")
    return [phi.detach().cpu().double().numpy() for phi in result.unit_scores], table, seconds


def sweep_fidelity(
    methods: list[Method],
    context: Context,
    sequences: list[Sequence],
    exact: list[np.ndarray],
    budgets: tuple[int, ...],
    seeds: int,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Every method at every budget on every sequence and seed, against ``exact``.

    Means are over reviews and seeds (``seeds`` runs per review; deterministic methods run once).
    """
    records = []
    reward = context.reward
    for method in methods:
        for budget in budgets[:1] if method.fixed_rows else budgets:
            per_review = []
            start = time.perf_counter()
            for index, (sequence, phi_star) in enumerate(zip(sequences, exact)):
                for k in range(1 if method.fixed_rows else seeds):
                    reward.reset()
                    phi = method.explain(context, sequence, budget, 1000 * k + index)
                    per_review.append(
                        {
                            "review": sequence.review,
                            "seed": 1000 * k + index,
                            "rows": reward.rows,
                            "pearson": pearson(phi, phi_star),
                            "rel_l2": relative_l2(phi, phi_star),
                        }
                    )
            records.append(
                {
                    "method": method.name,
                    "budget": None if method.fixed_rows else budget,
                    "rows": float(np.mean([r["rows"] for r in per_review])),
                    "pearson": float(np.nanmean([r["pearson"] for r in per_review])),
                    "pearson_min": float(np.nanmin([r["pearson"] for r in per_review])),
                    "rel_l2": float(np.mean([r["rel_l2"] for r in per_review])),
                    "rel_l2_max": float(np.max([r["rel_l2"] for r in per_review])),
                    "cpu_seconds_per_run": (time.perf_counter() - start) / len(per_review),
                    "per_review": per_review,
                }
            )
        last = records[-1]
        log(
            f"fidelity {method.name}: rel L2 {last['rel_l2']:.3f} Pearson {last['pearson']:.4f} at {last['rows']:.0f} rows"
        )
    return records


def rows_to_target(records: list[dict[str, Any]], method: str, target: float) -> dict[str, Any]:
    """The first swept budget from which the mean relative L2 stays at most ``target``."""
    mine = sorted(
        (r for r in records if r["method"] == method and r["budget"] is not None),
        key=lambda r: r["budget"],
    )
    for i, record in enumerate(mine):
        if all(later["rel_l2"] <= target for later in mine[i:]):
            return {
                "method": method,
                "budget": record["budget"],
                "rows": record["rows"],
                "rel_l2": record["rel_l2"],
            }
    best = min(mine, key=lambda r: r["rel_l2"]) if mine else None
    return {
        "method": method,
        "budget": None,
        "rows": None,
        "rel_l2": None,
        "best_rel_l2": None if best is None else best["rel_l2"],
        "best_rows": None if best is None else best["rows"],
    }


def _exact_or_stored(
    fidelity_set: list[Sequence],
    *,
    live: Context,
    games_path: Path,
    reuse_games: bool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Both games' exact values and row tables: from the model, saved to ``games_path``, or
    read back from it (``reuse_games``: no model time)."""
    reviews = np.array([s.review for s in fidelity_set])
    out: dict[str, Any] = {}
    if reuse_games:
        stored = load_games(games_path)
        if stored["reviews"].tolist() != reviews.tolist():
            raise RuntimeError(f"{games_path} holds other reviews than the fidelity set")
        for game in GAMES:
            values = stored[f"values_{game}"]
            out[game] = (
                list(stored[f"exact_{game}"]),
                row_table(values, fidelity_set, mask_id=live.mask_id, remove=game == "remove"),
                float(stored[f"exact_seconds_{game}"]),
                values,
            )
        log(f"exact values and coalition tables read from {games_path}")
        return out
    for game, masking in (("mask", "auto"), ("remove", "remove")):
        exact, table, seconds = exact_tables(live, fidelity_set, masking)
        log(f"exact ({game} game): {seconds:.1f} s, {len(table)} distinct rows")
        values = np.stack(
            [
                coalition_values(table, s, mask_id=live.mask_id, remove=game == "remove")
                for s in fidelity_set
            ]
        )
        out[game] = (exact, table, seconds, values)
    return out


def measure_fidelity(
    methods: list[Method],
    settings: Settings,
    fidelity_set: list[Sequence],
    *,
    live: Context,
    replay_context: Callable[[dict[bytes, float]], Context],
    games_path: Path,
    reuse_games: bool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The fidelity part: exact values of both games, then every method's budget sweep, on the
    reward model's games and on the smooth games, shapiq's current estimators included.

    Args:
        live: the context whose reward runs the model (the exact passes).
        replay_context: a recorded table -> a context whose reward looks rows up in it.
        games_path: where every coalition's value is saved (and read back with ``reuse_games``).
    """
    by_name = {m.name: m for m in methods}
    games = _exact_or_stored(
        fidelity_set, live=live, games_path=games_path, reuse_games=reuse_games, log=log
    )
    exact, table, exact_seconds, values = games["mask"]
    exact_rm, table_rm, exact_rm_seconds, values_rm = games["remove"]
    smooth_values, smooth_exact, smooth_set, smooth_reward = smooth_games(
        settings.smooth_players, settings.smooth_games
    )
    save_games(
        games_path,
        reviews=np.array([s.review for s in fidelity_set]),
        values_mask=values,
        exact_mask=np.stack(exact),
        exact_seconds_mask=np.array(exact_seconds),
        values_remove=values_rm,
        exact_remove=np.stack(exact_rm),
        exact_seconds_remove=np.array(exact_rm_seconds),
        labels_mask=np.array([s.review for s in fidelity_set]),
        values_smooth=smooth_values,
        exact_smooth=smooth_exact,
    )
    sweep_methods = [m for m in methods if m.game == "mask"]
    records = sweep_fidelity(
        sweep_methods,
        replay_context(table),
        fidelity_set,
        exact,
        settings.sweep_budgets,
        settings.fidelity_seeds,
        log,
    )
    remove_records = sweep_fidelity(
        [by_name["tokenshape.kernel_shap[remove]"]],
        replay_context(table_rm),
        fidelity_set,
        exact_rm,
        settings.sweep_budgets,
        settings.fidelity_seeds,
        log,
    )
    smooth_methods = [m for m in sweep_methods if not m.fixed_rows and not m.needs_tokenizer]
    smooth_context = replace(
        live, reward=CountingReward(smooth_reward), mask_id=SMOOTH_MASK_ID, tokenizer=None
    )
    smooth_records = sweep_fidelity(
        smooth_methods,
        smooth_context,
        smooth_set,
        list(smooth_exact),
        settings.smooth_budgets,
        settings.smooth_seeds,
        log,
    )
    latest = run_latest_shapiq(
        games_path,
        sets=("mask",),
        budgets=settings.sweep_budgets,
        seeds=settings.fidelity_seeds,
        overhead_sizes=settings.overhead_tokens,
        overhead_budgets=settings.budgets,
        log=log,
    )
    latest_smooth = run_latest_shapiq(
        games_path,
        sets=("smooth",),
        budgets=settings.smooth_budgets,
        seeds=settings.smooth_seeds,
        overhead_sizes=(),
        overhead_budgets=(),
        log=log,
    )
    latest_records = latest["records"].get("mask", [])
    records += latest_records
    smooth_records += latest_smooth["records"].get("smooth", [])
    latest_names = list(dict.fromkeys(r["method"] for r in latest_records))
    correlations = [pearson(a, b) for a, b in zip(exact, exact_rm)]
    rows_needed = [
        rows_to_target(records, name, settings.target_rel_l2)
        for name in [m.name for m in sweep_methods if not m.fixed_rows] + latest_names
    ]
    rows_needed.append(
        rows_to_target(remove_records, "tokenshape.kernel_shap[remove]", settings.target_rel_l2)
    )
    smooth_names = list(dict.fromkeys(r["method"] for r in smooth_records))
    return {
        "reviews": len(fidelity_set),
        "review_rows": [s.review for s in fidelity_set],
        "tokens": settings.fidelity_tokens,
        "exact_seconds": exact_seconds,
        "exact_remove_seconds": exact_rm_seconds,
        "games_file": str(
            games_path.relative_to(ROOT) if games_path.is_relative_to(ROOT) else games_path
        ),
        "exact": [e.tolist() for e in exact],
        "exact_remove": [e.tolist() for e in exact_rm],
        "methods": [m.name for m in sweep_methods] + latest_names,
        "records": records,
        "rows_to_target": rows_needed,
        "remove": {
            "exact_correlations": correlations,
            "exact_correlation_mean": float(np.nanmean(correlations)),
            "exact_correlation_min": float(np.nanmin(correlations)),
            "exact_correlation_max": float(np.nanmax(correlations)),
            "records": remove_records,
        },
        "smooth": {
            "players": settings.smooth_players,
            "games": settings.smooth_games,
            "methods": smooth_names,
            "records": smooth_records,
            "rows_to_target": [
                rows_to_target(smooth_records, name, settings.target_rel_l2)
                for name in smooth_names
            ],
        },
        "latest_shapiq": {
            "python": latest["python"],
            "versions": latest["versions"],
            "how": {**latest["how"], **latest_smooth["how"]},
            "skipped": latest["skipped"] + latest_smooth["skipped"],
            "failures": latest["failures"] + latest_smooth["failures"],
            "overhead": latest["overhead"],
        },
    }
