"""Fidelity against exact Shapley values: the exact pass, the budget sweep, rows to a target."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

import tokenshape
from attribution_bench.game import Context, Method
from attribution_bench.sequences import Sequence, batch_tensors
from attribution_bench.settings import Settings


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


def measure_fidelity(
    methods: list[Method],
    settings: Settings,
    fidelity_set: list[Sequence],
    *,
    live: Context,
    replay_context: Callable[[dict[bytes, float]], Context],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The fidelity part: exact values of both games, then every method's budget sweep.

    Args:
        live: the context whose reward runs the model (the exact passes).
        replay_context: a recorded table -> a context whose reward looks rows up in it.
    """
    by_name = {m.name: m for m in methods}
    exact, table, exact_seconds = exact_tables(live, fidelity_set, "auto")
    log(f"exact (mask game): {exact_seconds:.1f} s, {len(table)} coalition values")
    exact_rm, table_rm, exact_rm_seconds = exact_tables(live, fidelity_set, "remove")
    log(f"exact (deletion game): {exact_rm_seconds:.1f} s, {len(table_rm)} distinct rows")
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
    correlations = [pearson(a, b) for a, b in zip(exact, exact_rm)]
    rows_needed = [
        rows_to_target(records, m.name, settings.target_rel_l2)
        for m in sweep_methods
        if not m.fixed_rows
    ]
    rows_needed.append(
        rows_to_target(remove_records, "tokenshape.kernel_shap[remove]", settings.target_rel_l2)
    )
    return {
        "reviews": len(fidelity_set),
        "review_rows": [s.review for s in fidelity_set],
        "tokens": settings.fidelity_tokens,
        "exact_seconds": exact_seconds,
        "exact_remove_seconds": exact_rm_seconds,
        "exact": [e.tolist() for e in exact],
        "exact_remove": [e.tolist() for e in exact_rm],
        "methods": [m.name for m in sweep_methods],
        "records": records,
        "rows_to_target": rows_needed,
        "remove": {
            "exact_correlations": correlations,
            "exact_correlation_mean": float(np.nanmean(correlations)),
            "exact_correlation_min": float(np.nanmin(correlations)),
            "exact_correlation_max": float(np.nanmax(correlations)),
            "records": remove_records,
        },
    }
