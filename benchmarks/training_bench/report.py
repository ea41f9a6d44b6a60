"""The results file's markdown and its verdict."""

from __future__ import annotations

import math
import os
import platform
from typing import Any

import torch
from harness.machine import cpu_affinity, package_version
from harness.tables import fmt

from tokenshape.machine import cpu_model
from training_bench.settings import (
    BASELINE,
    CLEAN_OTHER_CORES,
    TARGET_CONFIG,
    TARGET_MODEL,
    TARGET_RATIO,
)


def render_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    s = results["settings"]
    load = results["load"]
    out = ["# Training-step benchmark: vanilla GRPO vs ShapedGRPOTrainer", ""]
    out += [
        f"Command: `{results['command']}`  ",
        f"Date: {results['date']}  ",
        (
            f"Machine: {m['nproc']} CPUs (affinity {m['affinity']}), {m['cpu_model']}; torch "
            f"{m['torch']} ({m['torch_threads']} threads), transformers {m['transformers']}, trl "
            f"{m['trl']}, Python {m['python']}  "
        ),
        "Load: 1-min load average "
        + (
            f"{load['load1']['min']}-{load['load1']['max']} (mean {load['load1']['mean']}) over "
            f"{load['samples']} samples; this process kept {load['own_cores']['mean']} cores busy, "
            f"other processes {load['other_cores']['mean']} on average (max "
            f"{load['other_cores']['max']}); a `benchmarks/attribution.py` process (waiting or "
            f"running) seen: {load['attribution_benchmark_seen']}"
            if load.get("samples")
            else "not sampled"
        )
        + f"; at start {results['load_start'][0]:.2f}, at end {results['load_end'][0]:.2f}"
        + (
            f"; waited {results['wait']['waited_s']:.0f} s for a quiet machine "
            f"(quiet: {results['wait']['quiet']})"
            if results.get("wait")
            else ""
        ),
        "",
        f"Setting: batch {s['batch_size']} ({s['batch_size'] // s['num_generations']} prompts x "
        f"{s['num_generations']} generations), {s['max_completion_length']} new tokens, "
        f"{s['prompt_tokens']}-token IMDB openings, beta 0, loss_type dapo, lr {s['learning_rate']}, "
        "`use_cpu=True`, GRPOConfig defaults otherwise (as `experiments/inner_run.py`; here: "
        + ", ".join(f"{k}={v}" for k, v in results.get("trainer_args", {}).items())
        + "), one process, seed 0 for every configuration. Reward model: MiniLM "
        "sentiment (`load_sentiment_reward_model`, reward = logit(positive) - logit(negative)) for "
        "both policies. Vanilla: `trl.GRPOTrainer` with the plain sequence reward callable. Shaped: "
        "`ShapedGRPOTrainer` (mode weight) with `ShapedReward(..., {signal: 0.5, sparse: 0.5}, "
        "budget=...)`, token units, default masking ([MASK]) and rows per forward (16 on CPU). "
        f"Warm-up steps excluded: {s['warmup_steps']}; timed steps: "
        + ", ".join(f"{k} {v}" for k, v in s["timed_steps"])
        + ". Seconds are medians over the timed steps. Vanilla runs first and again last; the "
        f"ratios (x vanilla) divide by the median of both runs' steps (row `{BASELINE}`).",
        "",
        (
            "Columns: **total** wall time from one step's end to the next; **gen** "
            "`GRPOTrainer._generate`; **reward** `_calculate_rewards` = **attr** (the "
            "`tokenshape/<signal>/seconds` ShapedReward logs) + **rest** (rendering, tokenising, "
            "aligning to the policy's tokens, shaping); **rm fwd** seconds inside the reward model's "
            "forward (hooks); **tok adv** `ShapedGRPOTrainer._token_advantages`; **loss+bwd** "
            "`training_step` minus `_generate_and_score_completions`; **opt** the rest of the step "
            "(AdamW, clipping, callbacks). **RM rows** reward-model rows per step (8 completions); "
            "**RM width** mean padded tokens per reward-model row (in brackets: attended tokens); **ms/RM row** rm fwd / RM rows. "
            f"**steps** timed steps used / timed: only the steps during which other processes kept fewer "
            f"than {CLEAN_OTHER_CORES} cores busy are used (all of them, marked disturbed, when fewer "
            "than 2 are clean)."
        ),
        "",
    ]
    for block in results["models"].values():
        summary = block["summary"]
        medians, ratios = summary["medians"], summary["ratios"]
        out += [f"## {block['title']}", ""]
        out += [
            "| config | steps | total s | min-max | x vanilla | x vanilla (reward side) | gen | reward | attr | rest | rm fwd | tok adv | loss+bwd | opt | RM rows | rows/seq vs budget | RM width | ms/RM row | tokens gen |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        rows = [(r["config"], r["budget"]) for r in block["configs"]]
        if BASELINE in medians:
            rows.append((BASELINE, None))
        for name, budget in rows:
            med = medians[name]
            ratio = ratios.get(name, {})
            vanilla_row = name.startswith("vanilla")
            rows_seq = med["rm_rows"] / s["batch_size"]
            budget_txt = (
                f"{rows_seq:.0f} / {budget}"
                if budget is not None
                else (f"{rows_seq:.0f} / 1 (vanilla)" if vanilla_row else f"{rows_seq:.0f} / 1")
            )
            width = med["rm_tokens"] / med["rm_rows"] if med["rm_rows"] else 0.0
            attended = med["rm_attended"] / med["rm_rows"] if med["rm_rows"] else 0.0
            ms_row = 1000 * med["rm_forward"] / med["rm_rows"] if med["rm_rows"] else 0.0
            steps_txt = f"{med['steps_used']}/{med['steps_timed']}" + (
                "" if med["only_clean"] else " (disturbed)"
            )
            out.append(
                f"| {name} | {steps_txt} | {fmt(med['total'])} | {fmt(med['total_min'])}-{fmt(med['total_max'])} | "
                f"{fmt(ratio.get('total'))} | {fmt(ratio.get('reward_side'))} | "
                f"{fmt(med['generate'])} | {fmt(med['reward'])} | {fmt(med['attribution'])} | "
                f"{fmt(med['reward_other'], 3)} | {fmt(med['rm_forward'])} | "
                f"{fmt(med['token_advantages'], 3)} | {fmt(med['loss_backward'])} | "
                f"{fmt(med['optimizer_other'])} | {med['rm_rows']:.0f} | {budget_txt} | {width:.1f} ({attended:.1f}) | "
                f"{ms_row:.2f} | {med['completion_tokens']:.0f} |"
            )
        out.append("")
        out += [
            (
                "Per-step totals in s (in brackets: cores other processes kept busy during the step), "
                "warm-up excluded:"
            ),
            "",
        ]
        for result in block["configs"]:
            totals = ", ".join(
                fmt(step["total"])
                + (f" ({step['other_cores']:.2f})" if step.get("other_cores") is not None else "")
                for step in result["steps"]
            )
            out.append(f"- {result['config']}: {totals}")
        out.append("")
    out += results.get("notes", [])
    return "\n".join(out) + "\n"


def _padding_notes(results: dict[str, Any]) -> list[str]:
    """How the reward model's per-row cost follows the padded width of the batch."""
    notes = []
    for block in results["models"].values():
        for result in block["configs"]:
            if result["config"] != TARGET_CONFIG:
                continue
            steps = [s for s in result["steps"] if s["rm_rows"]]
            if len(steps) < 2:
                continue

            def padded(step):
                return step["rm_tokens"] / step["rm_attended"]

            low, high = min(steps, key=padded), max(steps, key=padded)

            def describe(step):
                return (
                    f"{step['rm_tokens'] / step['rm_rows']:.0f} columns per row for "
                    f"{step['rm_attended'] / step['rm_rows']:.1f} attended tokens, "
                    f"{1000 * step['rm_forward'] / step['rm_rows']:.2f} ms/row, "
                    f"step {step['total']:.2f} s"
                )

            notes += [
                "",
                (
                    f"Padding ({block['title'].split(' (')[0]}, {TARGET_CONFIG}): every masked row is as "
                    f"wide as the batch's longest row. Least padded step: {describe(low)}; most padded: "
                    f"{describe(high)}."
                ),
            ]
    return notes


def verdict(results: dict[str, Any]) -> list[str]:
    notes = ["## Verdict", ""]
    block = results["models"].get(TARGET_MODEL)
    if block is None or TARGET_CONFIG not in block["summary"]["ratios"]:
        notes.append(
            f"Target ({TARGET_CONFIG} on {TARGET_MODEL} <= {TARGET_RATIO}x vanilla): not measured in this run."
        )
        return notes + [""]
    summary = block["summary"]
    ratio = summary["ratios"][TARGET_CONFIG]["total"]
    met = "met" if ratio <= TARGET_RATIO else "missed"
    notes.append(
        f"Target: shaped at most {TARGET_RATIO}x vanilla at budget 64 on SmolLM2-135M: **{met}** "
        f"({ratio:.2f}x measured; {summary['ratios'][TARGET_CONFIG]['reward_side']:.2f}x "
        "counting only the reward-side difference)."
    )
    base, shaped = summary["medians"][BASELINE], summary["medians"][TARGET_CONFIG]
    extra = shaped["total"] - base["total"]
    ms_row = shaped["rm_forward"] / shaped["rm_rows"] if shaped["rm_rows"] else float("nan")
    notes += [
        "",
        (
            f"Where the time goes ({TARGET_CONFIG}, SmolLM2, medians): the step is "
            f"{shaped['total']:.2f} s against {base['total']:.2f} s, {extra:+.2f} s. Generation "
            f"{shaped['generate']:.2f} s vs {base['generate']:.2f} s and loss+backward "
            f"{shaped['loss_backward']:.2f} s vs {base['loss_backward']:.2f} s are the same work; the "
            f"reward call is {shaped['reward']:.2f} s vs {base['reward']:.2f} s. Of the shaped reward "
            f"call, {shaped['rm_forward']:.2f} s is inside the reward model's forward "
            f"({shaped['rm_rows']:.0f} rows at {1000 * ms_row:.2f} ms/row), "
            f"{shaped['attribution'] - shaped['rm_forward']:.3f} s is the attribution's own work "
            f"(coalition sampling, masking, the solve), {shaped['reward_other']:.3f} s is rendering, "
            f"tokenising, aligning and shaping, and the token advantages take "
            f"{shaped['token_advantages'] * 1000:.1f} ms."
        ),
    ]
    budget_seconds = (TARGET_RATIO - 1.0) * base["total"] + base["reward"] - shaped["reward_other"]
    if math.isfinite(ms_row) and ms_row > 0:
        rows = budget_seconds / ms_row
        notes.append(
            f"At {TARGET_RATIO}x the reward side may take {budget_seconds:.2f} s: "
            f"{rows:.0f} reward-model rows per step at this per-row cost, {rows / 8:.0f} per "
            f"completion (budget 64 needs {ms_row * 512 * 1000 / max(budget_seconds * 1000, 1e-9):.2f}x "
            "fewer seconds per row)."
        )
    notes += _padding_notes(results)
    probe = results.get("probe")
    if probe:
        notes += [
            "",
            (
                f"### Probe: one ShapedReward call (kernel_shap, budget {probe['budget']}) on the last "
                f"SmolLM2 batch ({probe['rows']} rows, batch width {probe['width']} reward-model tokens, "
                f"attended {min(probe['attended'])}-{max(probe['attended'])})"
            ),
            "",
            "Median of 3 calls after one unmeasured call, nothing else running in this process.",
            "",
            "| ShapedReward setting | s per call | x default |",
            "|---|---|---|",
        ]
        default = probe["calls"][0]["seconds"]
        for call in probe["calls"]:
            notes.append(
                f"| {call['variant']} | {call['seconds']:.3f} | {call['seconds'] / default:.2f} |"
            )
        notes += ["", "| floor: same rows, unmasked | s | x default call |", "|---|---|---|"]
        for floor in probe["floors"]:
            label = f"chunk {floor['chunk']}, " + (
                "trimmed to the chunk's longest row"
                if floor["trimmed"]
                else "padded to the batch width"
            )
            notes.append(f"| {label} | {floor['seconds']:.3f} | {floor['seconds'] / default:.2f} |")
    return notes + [""]


def machine_info() -> dict[str, Any]:
    """The machine and the library versions of a run."""

    def version(name: str) -> str:
        return package_version(name) or "not installed"

    return {
        "nproc": os.cpu_count(),
        "affinity": cpu_affinity(),
        "cpu_model": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": version("transformers"),
        "trl": version("trl"),
        "accelerate": version("accelerate"),
        "tokenshape": version("tokenshape"),
    }
