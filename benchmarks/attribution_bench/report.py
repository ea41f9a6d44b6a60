"""The results file's markdown, and the targets with their verdicts."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
from harness.machine import cpu_affinity, git_state, package_version
from harness.tables import fmt, markdown_table

from attribution_bench.targets import targets
from tokenshape.machine import cpu_model

ANALYSIS_START = "<!-- analysis: kept by --render -->"
ANALYSIS_END = "<!-- end of analysis -->"


def rerender(json_path: Path) -> dict[str, Any]:
    """Rewrite ``json_path``'s markdown from its numbers, keeping the analysis written into it."""
    results = json.loads(json_path.read_text(encoding="utf-8"))
    results["targets"] = targets(results)
    md_path = json_path.with_suffix(".md")
    analysis = ""
    if md_path.exists():
        text = md_path.read_text(encoding="utf-8")
        if ANALYSIS_START in text and ANALYSIS_END in text:
            analysis = text.split(ANALYSIS_START, 1)[1].split(ANALYSIS_END, 1)[0]
    md_path.write_text(render_markdown(results, analysis), encoding="utf-8")
    print(f"wrote {md_path}")
    return results


def _ms(seconds: float | None) -> str:
    """Seconds as milliseconds with two decimals, ``-`` when not recorded."""
    return "-" if seconds is None else f"{1e3 * seconds:.2f}"


def render_markdown(results: dict[str, Any], analysis: str = "") -> str:
    """The results file's markdown, section by section."""
    out = _head(results)
    out += _targets_section(results, analysis)
    if "timing" in results:  # absent from a fidelity-only run
        out += _floor_section(results)
        out += _timing_section(results)
        out += _batch_section(results)
    out += _fidelity_section(results)
    out += _deletion_section(results)
    out += _smooth_section(results)
    out += _latest_overhead_section(results)
    return "\n".join(out) + "\n"


def _head(results: dict[str, Any]) -> list[str]:
    s = results["settings"]
    m = results["machine"]
    out = ["# Attribution benchmark", ""]
    out += [
        f"Command: `{results['command']}`  ",
        f"Date: {results['started']} to {results['finished']} (UTC)  ",
        f"Machine: `nproc` = {m['nproc']}, CPU {m['cpu_model']}, device {m['device']}"
        + (f" ({m['gpu']})" if m["gpu"] else "")
        + f", torch {m['versions']['torch']} with `torch.get_num_threads()` = {m['torch_threads']} (the default, not set)  ",
        "Libraries: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + "  ",
        f"tokenshape at commit {m['git']['commit'][:12]}"
        + (
            f", with uncommitted changes in {', '.join(line[3:] for line in m['git']['modified'])}"
            if m["git"]["modified"]
            else ""
        )
        + "  ",
        f"Load average (1 min) at start {results['load_start'][0]:.2f}, at the timed parts "
        f"{results.get('load_timing', '(no timed part)')}, at the end {results['load_end'][0]:.2f}"
        + (
            f"; waited {results['waited_s']:.0f} s for a quiet machine"
            if results.get("waited_s")
            else ""
        ),
        "",
        (
            "Reward model: all-MiniLM-L6-v2 fine-tuned on IMDB (`load_sentiment_reward_model`), reward = "
            "logit(positive) - logit(negative). Players: response tokens. Game: a hidden token becomes "
            "[MASK]; the prompt, [CLS] and [SEP] are never hidden (every peer plays the same game: captum's "
            "baseline is the mask id, shap's masker replaces by the mask id). Sequences: held-out IMDB reviews "
            f"(split seed 0) cut by tokens: [CLS] + {s['prompt_tokens']} prompt tokens + R response tokens + [SEP]."
        ),
        "",
    ]
    return out


def _targets_section(results: dict[str, Any], analysis: str) -> list[str]:
    out = ["## Targets", ""]
    out += [
        markdown_table(
            ["target", "result", "verdict"],
            [[t["target"], t["result"], t["verdict"]] for t in results["targets"]],
        ),
        "",
    ]
    if analysis:
        out += [ANALYSIS_START, analysis.strip("\n"), ANALYSIS_END, ""]
    return out


def _floor_section(results: dict[str, Any]) -> list[str]:
    s = results["settings"]
    floor = results["floor"]
    out = ["## Floor: the reward model alone", ""]
    out += [
        (
            "Seconds per row under `torch.inference_mode()` by batch size (median of "
            f"{s['floor_repeats']} runs of {s['floor_rows']} rows). The floor of a run is its rows, at the "
            "widths it used, times the best per-row time at that width."
        ),
        "",
    ]
    sweeps = {int(w): {int(b): t for b, t in sweep.items()} for w, sweep in floor["sweep"].items()}
    best = {int(w): b for w, b in floor["best"].items()}
    sizes = sorted({b for sweep in sweeps.values() for b in sweep})
    rows = []
    for width, sweep in sweeps.items():
        best_b, _best_s = best[width]
        rows.append(
            [width] + [f"{1e3 * sweep[b]:.2f}" if b in sweep else "-" for b in sizes] + [best_b]
        )
    out += [
        markdown_table(["width (tokens)"] + [f"bs {b} ms/row" for b in sizes] + ["best"], rows),
        "",
    ]
    out += [
        "Width grid at the best batch size (used for the deletion game's shorter rows): "
        + ", ".join(f"{w}: {1e3 * t:.2f} ms" for w, t in floor["grid"]),
        "",
    ]
    return out


def _timing_section(results: dict[str, Any]) -> list[str]:
    s = results["settings"]
    out = ["## Timing per explained sequence", ""]
    out += [
        (
            "One call per sequence. `x floor` = wall time / floor time of the same rows and shapes, with "
            "the floor measured before the section; `x after` = the same against the floor re-measured "
            "right after the section (the difference is the machine's drift). `own ms/seq` = wall time "
            "outside the reward-model calls. `rows/fwd` and `width/fwd` = mean rows and tokens per row of "
            "the forwards. Peers that hand over many rows at once are chunked at the floor's best batch size; "
            "captum gets `perturbations_per_eval=16` (tokenshape's CPU chunk), shap Partition batches as its "
            "Text masker does (5 pairs)."
        ),
        "",
    ]
    for timing in results["timing"].values():
        out += [
            (
                f"### Response {timing['response_tokens']} tokens (width {timing['width']}; up to {timing['sequences']} "
                f"sequences per cell, at most {s['timing_row_cap']} // budget). Floor at the best batch size: "
                f"{1e3 * timing['floor_row_seconds_before']:.2f} ms/row before the section, "
                f"{1e3 * timing['floor_row_seconds_after']:.2f} ms/row re-measured after it."
            ),
            "",
        ]
        rows = []
        for r in timing["records"]:
            rows.append(
                [
                    r["method"],
                    r["budget"] if not r.get("fixed_rows") else "-",
                    r["sequences"],
                    fmt(r["rows_per_sequence"], 0),
                    fmt(r["seconds_per_sequence"], 3),
                    fmt(r["floor_seconds"] / r["sequences"], 3),
                    fmt(r["floor_ratio"], 3),
                    fmt(r.get("floor_ratio_after"), 3),
                    fmt(r["overhead_ms_per_sequence"], 1),
                    fmt(r["mean_rows_per_forward"], 1),
                    fmt(r.get("mean_width"), 1),
                ]
            )
        out += [
            markdown_table(
                [
                    "method",
                    "budget",
                    "seqs",
                    "rows/seq",
                    "s/seq",
                    "floor s/seq",
                    "x floor",
                    "x after",
                    "own ms/seq",
                    "rows/fwd",
                    "width/fwd",
                ],
                rows,
            ),
            "",
        ]
    return out


def _batch_section(results: dict[str, Any]) -> list[str]:
    batch = results["batch"]
    out = [
        f"## One training step: {batch['sequences']} responses of {batch['response_tokens']} tokens, budget {batch['budget']}",
        "",
    ]
    out += [
        (
            "tokenshape: one batched call over all sequences. Peers: looping over the sequences one call each "
            f"(measured on the first {batch['peer_sequences']} of the batch, the timing table's run). "
            f"Floor at the best batch size {_ms(batch.get('floor_row_seconds_before'))} ms/row "
            f"before, {_ms(batch.get('floor_row_seconds_after'))} ms/row after the batched calls."
        ),
        "",
    ]
    rows = [
        [
            r["method"],
            "yes" if r["batched"] else "no",
            r["sequences"],
            fmt(r["rows_per_sequence"], 0),
            fmt(r["sequences_per_second"], 3),
            fmt(r["floor_ratio"], 3),
            fmt(r.get("floor_ratio_after"), 3),
        ]
        for r in batch["records"]
    ]
    out += [
        markdown_table(
            ["method", "batched", "sequences", "rows/seq", "seq/s", "x floor", "x after"], rows
        ),
        "",
    ]
    return out


def _fidelity_section(results: dict[str, Any]) -> list[str]:
    s = results["settings"]
    fid = results["fidelity"]
    out = [
        f"## Fidelity against exact Shapley ({fid['reviews']} reviews, {fid['tokens']}-token responses, prompt {s['prompt_tokens']})",
        "",
    ]
    out += [
        (
            f"Exact: tokenshape `exact`, {2 ** fid['tokens']} rows per review ({fid['exact_seconds']:.1f} s for all; "
            f"deletion game {fid['exact_remove_seconds']:.1f} s). The sweep replays the recorded coalition "
            "values (no model time; rows are still counted). Means over reviews and "
            f"{s['fidelity_seeds']} seeds per review (one run for deterministic methods); `rows` is the "
            "mean counted rows."
        ),
        "",
    ]
    out += _latest_shapiq_note(fid)
    shown = [b for b in s["budgets"] if b in s["sweep_budgets"]] or s["sweep_budgets"][:3]
    rows = []
    for name in fid["methods"]:
        row = [name]
        for budget in shown:
            rec = next(
                (
                    r
                    for r in fid["records"]
                    if r["method"] == name and r["budget"] in (budget, None)
                ),
                None,
            )
            row += ["-", "-"] if rec is None else [fmt(rec["pearson"], 4), fmt(rec["rel_l2"], 3)]
        rows.append(row)
    header = ["method"]
    for budget in shown:
        header += [f"Pearson @{budget}", f"rel L2 @{budget}"]
    out += [markdown_table(header, rows), ""]
    out += [
        (
            "Rows to mean relative L2 <= "
            f"{s['target_rel_l2']}: the first swept budget from which the mean stays at or below it "
            f"(swept: {', '.join(map(str, s['sweep_budgets']))}):"
        ),
        "",
    ]
    rows = []
    for r in fid["rows_to_target"]:
        if r["rows"] is not None:
            rows.append([r["method"], r["budget"], fmt(r["rows"], 0), fmt(r["rel_l2"], 3)])
        else:
            rows.append(
                [
                    r["method"],
                    "not reached",
                    "-",
                    f"best {fmt(r.get('best_rel_l2'), 3)} at {fmt(r.get('best_rows'), 0)} rows",
                ]
            )
    out += [markdown_table(["method", "budget", "rows", "rel L2"], rows), ""]
    out += ["Relative L2 over the sweep (mean over reviews and seeds):", ""]
    rows = []
    for name in fid["methods"]:
        recs = {r["budget"]: r for r in fid["records"] if r["method"] == name}
        rows.append(
            [name]
            + [
                fmt(recs[b]["rel_l2"], 3)
                if b in recs
                else ("-" if None not in recs else fmt(recs[None]["rel_l2"], 3))
                for b in s["sweep_budgets"]
            ]
        )
    out += [markdown_table(["method"] + [str(b) for b in s["sweep_budgets"]], rows), ""]
    return out


def _deletion_section(results: dict[str, Any]) -> list[str]:
    s = results["settings"]
    fid = results["fidelity"]
    rm = fid["remove"]
    out = ['## Deletion game (`masking="remove"`) against replacement', ""]
    out += [
        (
            f"Correlation of the two games' exact Shapley values, per review: mean {rm['exact_correlation_mean']:.3f} "
            f"(min {rm['exact_correlation_min']:.3f}, max {rm['exact_correlation_max']:.3f}). "
            "Fidelity of tokenshape kernel_shap in the deletion game against its own exact values:"
        ),
        "",
    ]
    rows = [
        [r["budget"], fmt(r["rows"], 0), fmt(r["pearson"], 4), fmt(r["rel_l2"], 3)]
        for r in rm["records"]
    ]
    out += [markdown_table(["budget", "rows", "Pearson", "rel L2"], rows), ""]
    if "timing" not in results:
        return out
    out += [
        (
            "Time, from the timing tables (`width/fwd`: mean tokens per row of the forwards; the deletion "
            "game's rows are shorter only as far as each forward's widest row allows):"
        ),
        "",
    ]
    rows = []
    for key, timing in results.get("timing", {}).items():
        for budget in s["budgets"]:
            pair = {
                r["method"]: r
                for r in timing["records"]
                if r["budget"] == budget
                and r["method"] in ("tokenshape.kernel_shap", "tokenshape.kernel_shap[remove]")
            }
            if len(pair) == 2:
                a, b = pair["tokenshape.kernel_shap"], pair["tokenshape.kernel_shap[remove]"]
                rows.append(
                    [
                        key,
                        budget,
                        fmt(a["seconds_per_sequence"], 3),
                        fmt(b["seconds_per_sequence"], 3),
                        fmt(a["seconds_per_sequence"] / b["seconds_per_sequence"], 2),
                        f"{fmt(a.get('mean_width'), 1)} / {fmt(b.get('mean_width'), 1)}",
                        f"{fmt(a['floor_ratio'], 3)} / {fmt(b['floor_ratio'], 3)}",
                    ]
                )
    header = ["R", "budget", "replace s/seq", "remove s/seq", "speed-up", "width/fwd", "x floor"]
    if rows:
        out += [markdown_table(header, rows), ""]
    return out


def machine_info(device: torch.device) -> dict[str, Any]:
    """The machine, the library versions and the commit of a run."""
    packages = (
        "tokenshape",
        "torch",
        "transformers",
        "shap",
        "captum",
        "shapiq",
        "lime",
        "numpy",
        "scikit-learn",
    )
    return {
        "git": git_state(),
        "nproc": os.cpu_count(),
        "sched_affinity": cpu_affinity(),
        "cpu_model": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {package: package_version(package) for package in packages},
    }


def _latest_shapiq_note(fid: dict[str, Any]) -> list[str]:
    """Which environment ran shapiq's current estimators, and the ones that did not run."""
    latest = fid.get("latest_shapiq")
    if latest is None:
        return []
    out = []
    if latest["python"]:
        out.append(
            "`shapiq-latest.*`: shapiq "
            f"{latest['versions'].get('shapiq')} under Python {latest['python']} "
            "(`.venv-bench312`, built by `make bench`), playing the same coalition values from "
            f"`{fid.get('games_file')}` through a lookup game that counts the coalitions they ask for."
        )
    for entry in latest["skipped"]:
        out.append(f"Skipped: {entry['method']}: {entry['reason']}.")
    for entry in latest["failures"]:
        where = f"budget {entry['budget']}" if "budget" in entry else "overhead"
        out.append(f"Failed: {entry['method']} at {where}: {entry['error']}.")
    return [" ".join(out), ""] if out else []


def _smooth_section(results: dict[str, Any]) -> list[str]:
    smooth = results["fidelity"].get("smooth")
    if smooth is None:
        return []
    s = results["settings"]
    out = [
        f"## Smooth games with interactions ({smooth['games']} games, {smooth['players']} players)",
        "",
        (
            "v(z) = 2 tanh(x(z) / 2), x = additive N(0, 1) values + N(0, 0.5^2) bonuses on 2M "
            "random pairs and M random triples (`attribution_bench/lookup_games.py`), against "
            f"exact Shapley values; {s['smooth_seeds']} runs per game and budget. shap's Partition "
            "needs the tokens' text and does not play them."
        ),
        "",
    ]
    budgets = s["smooth_budgets"]
    rows = []
    for name in smooth["methods"]:
        recs = {r["budget"]: r for r in smooth["records"] if r["method"] == name}
        rows.append([name] + [fmt(recs[b]["rel_l2"], 3) if b in recs else "-" for b in budgets])
    out += [markdown_table(["method"] + [f"rel L2 @{b}" for b in budgets], rows), ""]
    return out


def _latest_overhead_section(results: dict[str, Any]) -> list[str]:
    """shapiq's current estimators: their own time, and the time over the floor it implies."""
    latest = results["fidelity"].get("latest_shapiq")
    if not latest or not latest["overhead"]:
        return []
    reference = results.get("floor_reference")
    if "floor" in results:
        grid, floor_source = results["floor"]["grid"], "this file's floor"
    elif reference is not None:
        grid, floor_source = reference["grid"], f"the floor recorded in {reference['source']}"
    else:
        grid, floor_source = [], "a floor (none recorded)"
    prompt = results["settings"]["prompt_tokens"]
    rows = []
    for r in latest["overhead"]:
        floor_seconds = None
        if grid:
            width = prompt + r["response_tokens"] + 2
            row_seconds = float(np.interp(width, [w for w, _ in grid], [s for _, s in grid]))
            floor_seconds = r["budget"] * row_seconds
        rows.append(
            [
                r["method"],
                r["response_tokens"],
                r["budget"],
                fmt(1e3 * r["own_seconds"], 1),
                fmt(floor_seconds, 3),
                "-" if floor_seconds is None else fmt(1 + r["own_seconds"] / floor_seconds, 3),
            ]
        )
    return [
        "## shapiq's current estimators: own time",
        "",
        (
            "Their own seconds per explained sequence, measured on an additive numpy game of the "
            "timing part's sizes (no model; a table of every coalition is out of reach at 64 "
            "players); `implied x floor` adds the budget's rows at the per-row time of "
            f"{floor_source}: (floor + own) / floor, an estimate, not a timed run with the model. "
            "Measured during the fidelity run"
            + (f" ({results['fidelity_run']['started']} UTC)" if "fidelity_run" in results else "")
            + ", not yet on a quiet machine."
        ),
        "",
        markdown_table(
            ["method", "R", "budget", "own ms/seq", "floor s/seq", "implied x floor"], rows
        ),
        "",
    ]
