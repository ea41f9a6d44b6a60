"""Seconds per explained sequence, against the floor of the same rows."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from attribution_bench.floor import Floor
from attribution_bench.game import Context, Method
from attribution_bench.rewards import AdditiveReward, CountingReward
from attribution_bench.sequences import Sequence
from attribution_bench.settings import Settings


def warm_up(methods: list[Method], context: Context, sequence: Sequence, mask_id: int) -> None:
    """Run every method once on a small game before anything is timed."""
    synthetic = replace(
        context, reward=CountingReward(AdditiveReward(sequence, mask_id, context.tokenizer))
    )
    for method in methods:
        if method.name == "tokenshape.attention":
            method.explain(context, sequence, 64, 0)  # needs the model's attention: one row
        elif method.game == "mask" and not method.fixed_rows:
            method.explain(synthetic, sequence, 64, 0)
    context.reward.reset()


def run_timed(
    method: Method,
    context: Context,
    floor: Floor,
    sequences: list[Sequence],
    budget: int,
    *,
    batched: bool = False,
) -> dict[str, Any]:
    """Explain ``sequences`` (one call each, or one batched call) and time it."""
    reward = context.reward
    gc.collect()
    reward.reset()
    start = time.perf_counter()
    if batched:
        method.explain_batch(context, sequences, budget, 0)
    else:
        for seed, sequence in enumerate(sequences):
            method.explain(context, sequence, budget, seed)
    seconds = time.perf_counter() - start
    floor_seconds = floor.seconds_of(reward.shapes)
    n = len(sequences)
    return {
        "method": method.name,
        "budget": budget,
        "sequences": n,
        "batched": batched,
        "seconds": seconds,
        "seconds_per_sequence": seconds / n,
        "rows_per_sequence": reward.rows / n,
        "forwards": reward.calls,
        "mean_rows_per_forward": reward.rows / max(reward.calls, 1),
        "model_seconds": reward.seconds,
        "floor_seconds": floor_seconds,
        "floor_ratio": seconds / floor_seconds if floor_seconds > 0 else float("nan"),
        "mean_width": sum(r * w * c for (r, w), c in reward.shapes.items()) / max(reward.rows, 1),
        "overhead_ms_per_sequence": 1e3 * (seconds - reward.seconds) / n,
        "sequences_per_second": n / seconds,
        "load_average": os.getloadavg()[0],
    }


def time_responses(
    methods: list[Method],
    settings: Settings,
    timing_sets: dict[int, list[Sequence]],
    *,
    context_for: Callable[[int], Context],
    floor: Floor,
    recheck: Callable[[list[dict[str, Any]], Sequence, int], float],
    log: Callable[[str], None],
) -> tuple[dict[str, Any], list[float]]:
    """The timing part: every method at every budget for each response length.

    Args:
        timing_sets: response tokens -> the sequences timed at that length.
        context_for: width -> the live context at that width.
        recheck: re-measures the floor after a section (:func:`~attribution_bench.floor.recheck_floor`).

    Returns:
        (response tokens as a string -> the section's record, the load average after each).
    """
    p = settings.prompt_tokens
    timing: dict[str, Any] = {}
    load_timing = []
    for r in settings.response_tokens:
        width = p + r + 2
        context = context_for(width)
        records = []
        for budget in settings.budgets:
            for method in methods:
                if method.fixed_rows and budget != settings.budgets[0]:
                    continue
                sequences = timing_sets[r][: settings.sequences_for(r, budget)]
                record = run_timed(method, context, floor, sequences, budget)
                record["fixed_rows"] = method.fixed_rows
                records.append(record)
                log(
                    f"R={r} budget {budget} {method.name}: {record['seconds_per_sequence']:.3f} s/seq, "
                    f"{record['rows_per_sequence']:.0f} rows, x{record['floor_ratio']:.3f} floor "
                    f"(load {record['load_average']:.2f})"
                )
        load_timing.append(round(os.getloadavg()[0], 2))
        floor_after = recheck(records, timing_sets[r][0], width)
        log(
            f"R={r}: floor after the section {1e3 * floor_after:.2f} ms/row "
            f"(before {1e3 * floor.row_seconds(width):.2f})"
        )
        timing[str(r)] = {
            "response_tokens": r,
            "width": width,
            "sequences": len(timing_sets[r]),
            "floor_row_seconds_before": floor.row_seconds(width),
            "floor_row_seconds_after": floor_after,
            "records": records,
        }
    return timing, load_timing


def time_training_batch(
    methods: list[Method],
    settings: Settings,
    batch_set: list[Sequence],
    timing: dict[str, Any],
    *,
    context_for: Callable[[int], Context],
    floor: Floor,
    recheck: Callable[[list[dict[str, Any]], Sequence, int], float],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """One training step's responses: tokenshape batched, beside the peers' loop from ``timing``."""
    by_name = {m.name: m for m in methods}
    batch_width = settings.prompt_tokens + settings.batch_response_tokens + 2
    context = context_for(batch_width)
    records = []
    for name in settings.batch_methods:
        record = run_timed(
            by_name[name], context, floor, batch_set, settings.batch_budget, batched=True
        )
        records.append(record)
        log(
            f"batch {name}: {record['sequences_per_second']:.3f} seq/s, "
            f"x{record['floor_ratio']:.3f} floor"
        )
    floor_after = recheck(records, batch_set[0], batch_width)
    peer_sequences = 0
    if settings.batch_response_tokens in settings.response_tokens:
        peer_sequences = settings.sequences_for(
            settings.batch_response_tokens, settings.batch_budget
        )
    if peer_sequences:
        for record in timing[str(settings.batch_response_tokens)]["records"]:
            peer = not record["method"].startswith("tokenshape.")
            if record["budget"] == settings.batch_budget and (
                peer or record["method"] == "tokenshape.kernel_shap"
            ):
                records.append(dict(record))
    return {
        "sequences": settings.batch_sequences,
        "response_tokens": settings.batch_response_tokens,
        "budget": settings.batch_budget,
        "peer_sequences": peer_sequences,
        "floor_row_seconds_before": floor.row_seconds(batch_width),
        "floor_row_seconds_after": floor_after,
        "records": records,
    }
