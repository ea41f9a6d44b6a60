"""Per-step breakdowns, the steps no other process disturbed, and medians and ratios."""

from __future__ import annotations

import statistics
from typing import Any

from training_bench.settings import BASELINE, CLEAN_OTHER_CORES


def derive_step(record: dict[str, Any]) -> dict[str, Any]:
    """Per-step breakdown from the raw timers."""
    phases, counts, metrics = record["phases"], record["counts"], record["metrics"]
    attribution = sum(v for k, v in metrics.items() if k.endswith("/seconds"))
    rows_per_sequence = sum(v for k, v in metrics.items() if k.endswith("/rows_per_sequence"))
    generate = phases.get("generate", 0.0)
    reward = phases.get("reward", 0.0)
    gas = phases.get("generate_and_score", 0.0)
    token_adv = phases.get("token_advantages", 0.0)
    training_step = phases.get("training_step", 0.0)
    wall = record["wall"]
    out = {
        "total": wall,
        "other_cores": record.get("other_cores"),
        "generate": generate,
        "reward": reward,
        "attribution": attribution,
        "reward_other": reward - attribution,
        "rm_forward": phases.get("rm_forward", 0.0),
        "token_advantages": token_adv,
        "score_other": gas - generate - reward - token_adv,
        "loss_backward": training_step - gas,
        "optimizer_other": (wall - training_step) if wall is not None else None,
        "trl_step_time": record.get("trl_step_time"),
        "rm_rows": counts.get("rm_rows", 0.0),
        "rm_tokens": counts.get("rm_tokens", 0.0),
        "rm_attended": counts.get("rm_attended", 0.0),
        "rm_calls": counts.get("rm_calls", 0.0),
        "rows_per_sequence_logged": rows_per_sequence,
        "completion_tokens": counts.get("completion_tokens", 0.0),
        "completion_max_len": metrics.get("completion_max_len"),
        "reward_mean": record.get("reward_mean"),
    }
    return out


BREAKDOWN = (
    "total",
    "generate",
    "reward",
    "attribution",
    "reward_other",
    "rm_forward",
    "token_advantages",
    "score_other",
    "loss_backward",
    "optimizer_other",
    "trl_step_time",
    "rm_rows",
    "rm_tokens",
    "rm_attended",
    "completion_tokens",
    "other_cores",
)


def clean_steps(steps: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """The steps no other process disturbed (at least 2 of them), else all steps."""
    clean = [
        s
        for s in steps
        if s.get("other_cores") is not None and s["other_cores"] < CLEAN_OTHER_CORES
    ]
    return (clean, True) if len(clean) >= min(2, len(steps)) else (steps, False)


def _medians(steps: list[dict[str, Any]], timed: int, only_clean: bool) -> dict[str, Any]:
    out = {
        key: statistics.median(s[key] for s in steps if s[key] is not None)
        if any(s[key] is not None for s in steps)
        else None
        for key in BREAKDOWN
    }
    out["total_min"] = min(s["total"] for s in steps)
    out["total_max"] = max(s["total"] for s in steps)
    out["steps_used"] = len(steps)
    out["steps_timed"] = timed
    out["only_clean"] = only_clean
    return out


def summarise(model_results: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per configuration, and ratios against the baseline: the median of the vanilla
    steps of both vanilla runs (the first and the last configuration), which brackets any drift
    of the machine over the run."""
    medians = {}
    baseline_steps: list[dict[str, Any]] = []
    baseline_timed, baseline_clean = 0, True
    for result in model_results:
        steps, only_clean = clean_steps(result["steps"])
        medians[result["config"]] = _medians(steps, len(result["steps"]), only_clean)
        if result["signal"] is None:
            baseline_steps += steps
            baseline_timed += len(result["steps"])
            baseline_clean &= only_clean
    if baseline_steps:
        medians[BASELINE] = _medians(baseline_steps, baseline_timed, baseline_clean)
    vanilla = medians.get(BASELINE)
    ratios = {}
    if vanilla:
        for name, m in medians.items():
            ratios[name] = {
                "total": m["total"] / vanilla["total"],
                # The same ratio with this run's generation and loss replaced by vanilla's: only the
                # reward-side difference counts, which removes the noise of sampled lengths.
                "reward_side": (
                    vanilla["total"]
                    + (m["reward"] + m["token_advantages"])
                    - (vanilla["reward"] + vanilla["token_advantages"])
                )
                / vanilla["total"],
            }
    return {"medians": medians, "ratios": ratios}
