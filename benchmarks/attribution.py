"""Attribution benchmark: tokenshape's methods beside shap, captum, shapiq and lime.

Everything runs in one process on the project's reward model, all-MiniLM-L6-v2 fine-tuned on IMDB
(:func:`tokenshape.models.sentiment.load_sentiment_reward_model`, reward = logit(positive) -
logit(negative)), with one player per response token and one masking game for every method: a
hidden token becomes the tokenizer's [MASK] id; the prompt and the [CLS] / [SEP] tokens are never
hidden. Every forward of every method goes through one counting wrapper
(:class:`attribution_bench.rewards.CountingReward`).

Sequences are real held-out IMDB reviews cut by tokens: [CLS], the first ``P`` tokens (the prompt),
the next ``R`` tokens (the response), [SEP].

Parts (each in its module of ``benchmarks/attribution_bench/``; one module per peer library in
``attribution_bench/peers/``):

* **floor**: seconds per row under ``torch.inference_mode`` at each batch size; the best batch size
  is measured. The floor of a run is its rows, at the widths it used, at the best per-row time.
* **timing**: seconds per explained sequence, forward rows and time over the floor, per method and
  budget, for 64- and 128-token responses after a 32-token prompt.
* **batch**: sequences per second when explaining the 32 responses one training step hands over
  (tokenshape: one batched call; peers: looping over the sequences).
* **fidelity**: exact Shapley values (tokenshape ``exact``, 2^12 rows) of 12-token responses, then
  Pearson and relative L2 of every method over a budget sweep, and the rows each needs to reach
  relative L2 <= 0.05; the same for the deletion game (``masking="remove"``) against its own exact
  values. The sweep reads coalition values from the table the exact pass filled (every coalition
  of a 12-token response is in it), so it costs no model time; rows are still counted.

Usage::

    python benchmarks/attribution.py                 # full run -> benchmarks/results/attribution.{md,json}
    python benchmarks/attribution.py --quick         # smoke run (about a minute), results in a temp dir
    python benchmarks/attribution.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import torch
from attribution_bench.fidelity import measure_fidelity
from attribution_bench.floor import measure_floor, recheck_floor
from attribution_bench.game import Context
from attribution_bench.methods import build_methods
from attribution_bench.report import machine_info, render_markdown, rerender
from attribution_bench.rewards import CountingReward, TableReward
from attribution_bench.sequences import cut_reviews
from attribution_bench.settings import CUDA_BATCH_SIZES, FULL, QUICK
from attribution_bench.targets import targets
from attribution_bench.timing import time_responses, time_training_batch, warm_up
from harness.load import wait_for_load_below

from tokenshape.evaluation import default_chunk_rows
from tokenshape.models.sentiment import load_sentiment_reward_model
from tokenshape.reward import SequenceClassifierReward

RESULTS = Path(__file__).resolve().parent / "results" / "attribution"
#: Rows per forward of the exact passes when the floor is not measured (--only-fidelity).
ONLY_FIDELITY_CHUNK = 16


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny settings, a smoke run in about a minute"
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device of the reward model (default cpu)"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="results path prefix (default benchmarks/results/attribution; a temp dir with --quick)",
    )
    parser.add_argument(
        "--wait-for-load",
        type=float,
        default=None,
        metavar="LOAD",
        help="before timing, wait until the 1-minute load average is below LOAD (poll every minute, at most 30 minutes)",
    )
    parser.add_argument(
        "--games",
        default=None,
        metavar="NPZ",
        help="where every coalition value of the fidelity set is saved (default "
        "benchmarks/results/attribution_games.npz, next to the results)",
    )
    parser.add_argument(
        "--reuse-games",
        action="store_true",
        help="read the exact values and coalition tables from --games instead of the model",
    )
    parser.add_argument(
        "--only-fidelity",
        action="store_true",
        help="run the fidelity part alone (no floor, timing or batch part) and write it to --out",
    )
    parser.add_argument(
        "--fidelity-reviews",
        type=int,
        default=None,
        metavar="N",
        help="explain N reviews in the fidelity part instead of the preset's",
    )
    parser.add_argument(
        "--fidelity-seeds",
        type=int,
        default=None,
        metavar="N",
        help="runs per review and budget in the fidelity sweep instead of the preset's",
    )
    parser.add_argument(
        "--render",
        default=None,
        metavar="JSON",
        help="only rewrite the markdown next to JSON from its numbers, keeping its analysis section",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.render is not None:
        return rerender(Path(args.render))

    settings = QUICK if args.quick else FULL
    if args.fidelity_reviews is not None:
        settings = replace(settings, fidelity_reviews=args.fidelity_reviews)
    if args.fidelity_seeds is not None:
        settings = replace(settings, fidelity_seeds=args.fidelity_seeds)
    device = torch.device(args.device)
    if args.out is not None:
        prefix = Path(args.out)
    elif args.quick:
        prefix = Path(tempfile.mkdtemp(prefix="tokenshape-bench-")) / "attribution"
    else:
        prefix = RESULTS
    games_path = Path(args.games) if args.games else prefix.with_name(prefix.name + "_games.npz")
    started = datetime.now(UTC)
    t0 = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {message}", flush=True)

    if device.type == "cuda":
        settings = replace(
            settings, floor_batch_sizes=CUDA_BATCH_SIZES if not args.quick else (64, 256)
        )

    model, tokenizer = load_sentiment_reward_model()
    model.to(device)
    reward = CountingReward(
        SequenceClassifierReward(model, tokenizer, label=1, minus_label=0),
        synchronize=device.type == "cuda",
    )
    mask_id = int(tokenizer.mask_token_id)
    methods = build_methods()
    log(f"model loaded on {device}; mask id {mask_id}; torch threads {torch.get_num_threads()}")

    # Sequences.
    p = settings.prompt_tokens
    timing_sets = {
        r: cut_reviews(tokenizer, settings.sequences_for(r), p, r) for r in settings.response_tokens
    }
    batch_set = cut_reviews(tokenizer, settings.batch_sequences, p, settings.batch_response_tokens)
    if settings.batch_response_tokens in timing_sets:
        # The timing sequences are the first ones of the batch, so the peers' loop is measured once.
        timing_sets[settings.batch_response_tokens] = batch_set[
            : settings.sequences_for(settings.batch_response_tokens)
        ]
    fidelity_set = cut_reviews(tokenizer, settings.fidelity_reviews, p, settings.fidelity_tokens)
    widths = {p + r + 2: timing_sets[r][0] for r in settings.response_tokens}
    widths[p + settings.fidelity_tokens + 2] = fidelity_set[0]
    widths.setdefault(p + settings.batch_response_tokens + 2, batch_set[0])

    width = p + settings.fidelity_tokens + 2
    captum_chunk = default_chunk_rows(device)

    def fidelity_part(chunk: int) -> dict[str, Any]:
        def context(the_reward: Any) -> Context:
            return Context(the_reward, mask_id, tokenizer, chunk, captum_chunk)

        return measure_fidelity(
            methods,
            settings,
            fidelity_set,
            live=context(reward),
            replay_context=lambda table: context(CountingReward(TableReward(table, reward))),
            games_path=games_path,
            reuse_games=args.reuse_games,
            log=log,
        )

    if args.only_fidelity:
        results = {
            "command": " ".join(["python", "benchmarks/attribution.py", *sys.argv[1:]]),
            "started": started.strftime("%Y-%m-%d %H:%M"),
            "machine": machine_info(device),
            "settings": dict(settings.__dict__),
            "load_start": list(os.getloadavg()),
        }
        if RESULTS.with_suffix(".json").exists():  # the recorded floor, for the own-time table
            recorded = json.loads(RESULTS.with_suffix(".json").read_text(encoding="utf-8"))
            results["floor_reference"] = {
                "source": f"benchmarks/results/attribution.json ({recorded['started']} UTC)",
                "grid": recorded["floor"]["grid"],
            }
        results["fidelity"] = fidelity_part(ONLY_FIDELITY_CHUNK)
        results["finished"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
        results["load_end"] = list(os.getloadavg())
        results["methods"] = {
            **{m.name: m.how for m in methods},
            **results["fidelity"]["latest_shapiq"]["how"],
        }
        return write_results(results, prefix, log)

    waited = 0.0
    if args.wait_for_load is not None:
        waited = wait_for_load_below(args.wait_for_load, 60.0, 1800.0, log)
    load_start = os.getloadavg()

    # Floor.
    floor = measure_floor(model, widths, settings, mask_id, device, settings.floor_batch_sizes, log)

    def context_for(width: int, the_reward: Any = reward) -> Context:
        return Context(the_reward, mask_id, tokenizer, floor.best_batch(width), captum_chunk)

    # Warm-up: imports, numba compilation and first-call set-up stay out of the timings.
    warm_up(
        methods, context_for(p + settings.fidelity_tokens + 2, reward), fidelity_set[0], mask_id
    )
    log("methods warmed up")
    recheck = partial(
        recheck_floor, model, floor, settings=settings, mask_id=mask_id, device=device
    )

    # Timing, then one training step's batch.
    timed = {"context_for": context_for, "floor": floor, "recheck": recheck, "log": log}
    timing, load_timing = time_responses(methods, settings, timing_sets, **timed)
    batch = time_training_batch(methods, settings, batch_set, timing, **timed)
    load_timing.append(round(os.getloadavg()[0], 2))

    # Fidelity: exact tables, then the sweep on the recorded values.
    fidelity = fidelity_part(floor.best_batch(width))

    results: dict[str, Any] = {
        "command": " ".join(
            ["python", "benchmarks/attribution.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "wall_seconds": time.perf_counter() - t0,
        "machine": machine_info(device),
        "settings": {k: v for k, v in settings.__dict__.items()},
        "waited_s": waited,
        "load_start": list(load_start),
        "load_timing": load_timing,
        "load_end": list(os.getloadavg()),
        "methods": {
            **{m.name: m.how for m in methods},
            **fidelity["latest_shapiq"]["how"],
        },
        "floor": {
            "sweep": {w: dict(s) for w, s in floor.sweep.items()},
            "best": {w: list(b) for w, b in floor.best.items()},
            "grid": [list(g) for g in floor.grid],
        },
        "timing": timing,
        "batch": batch,
        "fidelity": fidelity,
    }
    return write_results(results, prefix, log)


def write_results(
    results: dict[str, Any], prefix: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    """Add the targets, write ``prefix``.json and .md, and log the verdicts."""
    results["targets"] = targets(results)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = prefix.with_suffix(".json"), prefix.with_suffix(".md")
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(results), encoding="utf-8")
    for t in results["targets"]:
        log(f"target: {t['target']}: {t['result']} -> {t['verdict']}")
    log(f"wrote {md_path} and {json_path}")
    return results


if __name__ == "__main__":
    main()
