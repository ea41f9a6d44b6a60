"""Training-step benchmark: seconds per GRPO step, vanilla TRL against ShapedGRPOTrainer.

Everything runs in one process, one configuration after the other, each with a fresh policy built
from the same weights and the same seed:

* **vanilla**: ``trl.GRPOTrainer`` whose reward function is the plain sequence reward (the reward
  model scores ``prompt + completion`` once per row);
* **shaped**: ``ShapedGRPOTrainer`` (``mode="weight"``) with a :class:`tokenshape.ShapedReward`
  on the same reward model, blending one signal half and half with the sparse reward
  (``{signal: 0.5, "sparse": 0.5}``) for each of kernel_shap at budget 64 and 128, lime at budget
  64, and attention.

Two models: a tiny random Llama policy with the real SmolLM2 tokenizer, and SmolLM2-135M-Instruct
(fp32, :func:`tokenshape.models.policy.load_policy`). The reward model is the MiniLM sentiment
classifier for both (:func:`tokenshape.models.sentiment.load_sentiment_reward_model`, reward =
logit(positive) - logit(negative)), so the tiny model shows the attribution's cost with almost no
policy cost around it. Prompts are 8-token IMDB review openings; batch 8 (2 prompts x 4
generations), 24 new tokens, beta 0, ``loss_type="dapo"``, on the CPU.

Each step is broken down with timers around the trainer's own methods:

* ``generate``: ``GRPOTrainer._generate`` (tokenising the prompts and sampling);
* ``reward``: ``GRPOTrainer._calculate_rewards``; for the shaped runs it splits into
  ``attribution`` (the ``tokenshape/<signal>/seconds`` that ShapedReward logs) and the rest of the
  ShapedReward call (rendering, tokenising, aligning to the policy tokens, shaping);
* ``rm_forward``: seconds inside the reward model's forward (hooks on the module), with its rows;
* ``token_advantages``: ``ShapedGRPOTrainer._token_advantages``;
* ``score_other``: the rest of ``_generate_and_score_completions`` (padding, GRPO advantages, logs);
* ``loss_backward``: ``training_step`` minus ``_generate_and_score_completions`` (policy forward,
  loss, backward);
* ``optimizer_other``: the step's wall time (from one ``on_step_end`` to the next) minus
  ``training_step`` (gradient clipping, AdamW, scheduler, callbacks, logging).

The parts live in ``benchmarks/training_bench/`` (settings, timers, runs, summary, probe, report);
the machine's load and the table helpers are shared with the attribution benchmark
(``benchmarks/harness/``).

The first step of every configuration is a warm-up and is not timed; medians are over the timed
steps. Vanilla runs first and again last; ratios are a configuration's median over the median of
all vanilla steps of both runs, which brackets any drift over the run.

Usage::

    python benchmarks/training_step.py               # full run -> benchmarks/results/training_step.{md,json}
    python benchmarks/training_step.py --quick       # smoke run (about a minute), results in a temp dir
    python benchmarks/training_step.py --models tiny --tiny-steps 10
    python benchmarks/training_step.py --wait-quiet 40   # wait up to 40 min for an idle machine first
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.load import LoadMonitor, wait_for_quiet
from training_bench.probe import probe_reward_call
from training_bench.report import machine_info, render_markdown, verdict
from training_bench.runs import load_reward, run_config
from training_bench.settings import CONFIGS, FULL, MODELS, QUICK, SEED, TARGET_MODEL, Settings
from training_bench.summary import summarise
from training_bench.timers import StepTimer, count_rm_forwards

RESULTS = Path(__file__).resolve().parent / "results" / "training_step"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny model only, 2 timed steps (about a minute)"
    )
    parser.add_argument("--models", default=None, help=f"comma-separated subset of {MODELS}")
    parser.add_argument(
        "--configs",
        default=None,
        help="comma-separated subset of " + ", ".join(c.name for c in CONFIGS),
    )
    parser.add_argument(
        "--tiny-steps", type=int, default=None, help="timed steps for the tiny model"
    )
    parser.add_argument(
        "--smollm2-steps", type=int, default=None, help="timed steps for SmolLM2-135M"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="MINUTES",
        help="first wait up to MINUTES for no attribution benchmark and load < --max-load",
    )
    parser.add_argument("--max-load", type=float, default=1.5)
    parser.add_argument(
        "--no-probe",
        dest="probe",
        action="store_false",
        help="skip the probe of the ShapedReward call on one SmolLM2 batch",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="results path prefix (default benchmarks/results/training_step; a temp dir with --quick)",
    )
    parser.add_argument(
        "--render",
        default=None,
        metavar="JSON",
        help="only rewrite the markdown next to a results JSON from it",
    )
    args = parser.parse_args(argv)
    if args.render:
        path = Path(args.render)
        results = json.loads(path.read_text())
        for block in results["models"].values():
            block["summary"] = summarise(block["configs"])
        results["notes"] = verdict(results)
        path.with_suffix(".md").write_text(render_markdown(results))
        print(f"wrote {path.with_suffix('.md')}")
        return results

    settings = QUICK if args.quick else FULL
    if args.quick:
        args.probe = False
    models = tuple(args.models.split(",")) if args.models else settings.models
    steps = dict(settings.timed_steps)
    if args.tiny_steps is not None:
        steps["tiny"] = args.tiny_steps
    if args.smollm2_steps is not None:
        steps["smollm2"] = args.smollm2_steps
    settings = Settings(
        **{**settings.__dict__, "models": models, "timed_steps": tuple(steps.items())}
    )
    configs = CONFIGS
    if args.configs:
        wanted = args.configs.split(",")
        configs = tuple(c for c in CONFIGS if c.name in wanted)
    if args.out:
        prefix = Path(args.out)
    elif args.quick:
        prefix = Path(tempfile.mkdtemp(prefix="tokenshape-training-step-")) / "training_step"
    else:
        prefix = RESULTS
    prefix.parent.mkdir(parents=True, exist_ok=True)

    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    wait = wait_for_quiet(args.wait_quiet, args.max_load) if args.wait_quiet > 0 else None
    load_start = os.getloadavg()
    monitor = LoadMonitor().start()
    started = time.perf_counter()

    from tokenshape.models.data import review_openings
    from tokenshape.models.policy import smollm2_tokenizer

    reward = load_reward()
    timer_slot: list[StepTimer | None] = [None]
    last_batches: dict[str, Any] = {}
    hooks = count_rm_forwards(reward.model, timer_slot)
    max_steps = settings.warmup_steps + max(settings.steps_for(m) for m in models)
    prompts = review_openings(
        smollm2_tokenizer(),
        max_steps * settings.batch_size // settings.num_generations + 8,
        settings.prompt_tokens,
        split="train",
        seed=SEED,
    )
    titles = {
        "tiny": "Tiny random Llama policy (hidden 64, 2 layers, SmolLM2 tokenizer) + MiniLM reward",
        "smollm2": "SmolLM2-135M-Instruct (fp32) + MiniLM reward",
    }
    results: dict[str, Any] = {
        "command": "python "
        + " ".join(
            shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]
        ),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": {**settings.__dict__, "configs": [c.name for c in configs]},
        "wait": wait,
        "load_start": list(load_start),
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="tokenshape-bench-") as workdir:
        for model_name in models:
            print(f"== {model_name}", flush=True)
            block = []
            for config in configs:
                block.append(
                    run_config(
                        model_name,
                        config,
                        reward,
                        prompts,
                        settings,
                        Path(workdir),
                        timer_slot,
                        last_batches,
                    )
                )
            results["models"][model_name] = {
                "title": titles[model_name],
                "configs": block,
                "summary": summarise(block),
            }
    for hook in hooks:
        hook.remove()
    if args.probe and TARGET_MODEL in last_batches and last_batches[TARGET_MODEL][0] is not None:
        print("== probe", flush=True)
        batch, policy_tokenizer = last_batches[TARGET_MODEL]
        results["probe"] = probe_reward_call(reward, policy_tokenizer, batch)
    for block in results["models"].values():
        if block["configs"]:
            results["trainer_args"] = block["configs"][0]["trainer_args"]
    results["seconds"] = time.perf_counter() - started
    results["load"] = monitor.stop()
    results["load_end"] = list(os.getloadavg())
    results["notes"] = verdict(results)
    prefix.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str))
    prefix.with_suffix(".md").write_text(render_markdown(results))
    print(render_markdown(results))
    print(
        f"wrote {prefix.with_suffix('.md')} and {prefix.with_suffix('.json')} in {results['seconds']:.0f} s"
    )
    return results


if __name__ == "__main__":
    main()
