"""The targets of the attribution benchmark, each with its result and a verdict."""

from __future__ import annotations

from typing import Any

#: tokenshape's Shapley estimators, each held to the rows and smooth-game targets.
ESTIMATORS = ("tokenshape.kernel_shap", "tokenshape.odd_surrogate_shap")


def _mid_ratio(record: dict[str, Any]) -> float:
    """Time over the floor against the mean of the floors before and after the section."""
    after = record.get("floor_ratio_after", record["floor_ratio"])
    return 2.0 / (1.0 / record["floor_ratio"] + 1.0 / after)


def targets(results: dict[str, Any]) -> list[dict[str, str]]:
    """The targets, each with its result and a verdict."""
    s = results["settings"]
    out = [_floor_target(results)] if "timing" in results else []
    fid = results["fidelity"]
    for method in ESTIMATORS:
        if any(r["method"] == method for r in fid["rows_to_target"]):
            out.append(_rows_target(fid["rows_to_target"], method, s))
    smooth = fid.get("smooth")
    smooth_budget = s.get("target_smooth_budget")
    if smooth is not None:
        for method in ESTIMATORS:
            at = next(
                (
                    r
                    for r in smooth["records"]
                    if r["method"] == method and r["budget"] == smooth_budget
                ),
                None,
            )
            if at is not None:
                limit = s["target_rel_l2"]
                out.append(
                    {
                        "target": f"{method}: rel L2 <= {limit} at {smooth_budget} rows on "
                        f"{smooth['players']}-player smooth games with interactions",
                        "result": f"mean {at['rel_l2']:.3f} (max {at['rel_l2_max']:.3f}) over "
                        f"{len(at['per_review'])} runs",
                        "verdict": "met"
                        if at["rel_l2"] <= limit
                        else f"missed by {at['rel_l2'] - limit:.3f}",
                    }
                )
    budget = s["target_pearson_budget"]
    at = next(
        (
            r
            for r in fid["records"]
            if r["method"] == "tokenshape.kernel_shap" and r["budget"] == budget
        ),
        None,
    )
    if at is not None:
        limit = s["target_pearson"]
        out.append(
            {
                "target": f"Pearson >= {limit} vs exact at budget {budget} on "
                f"{s['fidelity_tokens']} tokens",
                "result": f"mean {at['pearson']:.4f}, min {at['pearson_min']:.4f} over "
                f"{len(at['per_review'])} runs ({fid['reviews']} reviews, {at['rows']:.0f} rows)",
                "verdict": "met"
                if at["pearson"] >= limit
                else f"missed by {limit - at['pearson']:.4f}",
            }
        )
    return out


def _rows_target(
    rows_to_target: list[dict[str, Any]], method: str, s: dict[str, Any]
) -> dict[str, str]:
    """Rows to the relative-L2 target against the best peer's (at most half of them)."""
    target = s["target_rel_l2"]
    mine = next(r for r in rows_to_target if r["method"] == method)
    peers = [
        r
        for r in rows_to_target
        if not r["method"].startswith("tokenshape.") and r["rows"] is not None
    ]
    name = f"{method}: rows to rel L2 <= {target} at most half of the best peer's"
    if mine["rows"] is not None and peers:
        best = min(peers, key=lambda r: r["rows"])
        ratio = mine["rows"] / best["rows"]
        return {
            "target": name,
            "result": (
                f"{mine['rows']:.0f} rows vs {best['method']} {best['rows']:.0f} "
                f"rows (ratio {ratio:.2f})"
            ),
            "verdict": "met" if ratio <= 0.5 else f"missed: ratio {ratio:.2f} > 0.5",
        }
    return {
        "target": name,
        "result": f"{mine['rows']} rows; peers reaching it: "
        f"{[p['method'] for p in peers] or 'none'} (largest budget {max(s['sweep_budgets'])})",
        "verdict": "met (no peer reaches it in the sweep)"
        if mine["rows"] is not None
        else "missed (not reached)",
    }


def _floor_target(results: dict[str, Any]) -> dict[str, str]:
    """Time over the floor of tokenshape's sampling methods, the worst run against the limit."""
    s = results["settings"]
    sampled = ("tokenshape.kernel_shap", "tokenshape.lime", "tokenshape.kernel_shap[remove]")
    runs = [
        (r, key)
        for key, timing in results["timing"].items()
        for r in timing["records"]
        if r["method"] in sampled
    ]
    parts = []
    for name in sampled:
        mine = [r for r, _ in runs if r["method"] == name]
        if mine:
            parts.append(
                f"{name.removeprefix('tokenshape.')} {min(map(_mid_ratio, mine)):.3f}-"
                f"{max(map(_mid_ratio, mine)):.3f}"
            )
    worst, worst_key = max(runs, key=lambda item: _mid_ratio(item[0]))
    limit = s["target_floor_ratio"]
    return {
        "target": f"time over the floor <= {limit} at equal rows",
        "result": (
            "against the mean of the floors before and after each section: "
            + "; ".join(parts)
            + f". Worst: {worst['method']} R={worst_key} budget {worst['budget']}, "
            f"{worst['floor_ratio']:.3f} / {worst.get('floor_ratio_after', float('nan')):.3f} "
            "against the floor before / after"
        ),
        "verdict": "met"
        if _mid_ratio(worst) <= limit
        else f"missed by {_mid_ratio(worst) - limit:.3f} in the worst run",
    }
