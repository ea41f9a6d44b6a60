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
import gc
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from tokenshape.machine import cpu_model

RESULTS = Path(__file__).resolve().parent / "results" / "training_step"
SEED = 0
TARGET_RATIO = 1.5
TARGET_CONFIG = "kernel_shap@64"
TARGET_MODEL = "smollm2"


# ----------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class RunConfig:
    """One trainer configuration: vanilla (signal None) or shaped with one signal + sparse."""

    name: str
    signal: str | None = None
    budget: int | None = None

    @property
    def shaped(self) -> bool:
        return self.signal is not None


CONFIGS = (
    RunConfig("vanilla"),
    RunConfig("kernel_shap@64", "kernel_shap", 64),
    RunConfig("kernel_shap@128", "kernel_shap", 128),
    RunConfig("lime@64", "lime", 64),
    RunConfig("attention", "attention", None),
    RunConfig("vanilla (again)"),
)
#: The ratios' denominator: both vanilla runs' steps together.
BASELINE = "vanilla (both runs)"
MODELS = ("smollm2", "tiny")


@dataclass(frozen=True)
class Settings:
    models: tuple[str, ...] = MODELS
    timed_steps: tuple[tuple[str, int], ...] = (("smollm2", 10), ("tiny", 12))
    warmup_steps: int = 1
    batch_size: int = 8
    num_generations: int = 4
    max_completion_length: int = 24
    prompt_tokens: int = 8
    learning_rate: float = 1e-5
    temperature: float = 1.0

    def steps_for(self, model: str) -> int:
        return dict(self.timed_steps)[model]


FULL = Settings()
QUICK = Settings(models=("tiny",), timed_steps=(("smollm2", 1), ("tiny", 1)))
#: A step counts as clean when other processes kept fewer cores than this busy during it.
CLEAN_OTHER_CORES = 0.25


# ----------------------------------------------------------------------------------------------
# Timing


class StepTimer:
    """Collects phase seconds and metrics per optimizer step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.current: dict[str, Any] = self._fresh()
        self.last_end: float | None = None
        self.last_jiffies: tuple[int, int] | None = None
        self.last_batch: tuple[list, list, list] | None = None

    @staticmethod
    def _fresh() -> dict[str, Any]:
        return {"phases": defaultdict(float), "counts": defaultdict(float), "metrics": {}}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.current["phases"][name] += time.perf_counter() - started

    def add(self, name: str, seconds: float) -> None:
        self.current["phases"][name] += seconds

    def count(self, name: str, value: float) -> None:
        self.current["counts"][name] += value

    def metric(self, name: str, value: float) -> None:
        self.current["metrics"][name] = float(value)

    def step_end(self) -> None:
        now = time.perf_counter()
        jiffies = (_busy_jiffies(), _own_jiffies())
        other_cores = None
        if self.last_end is not None and self.last_jiffies is not None:
            busy = jiffies[0] - self.last_jiffies[0]
            own = jiffies[1] - self.last_jiffies[1]
            other_cores = (
                max(0, busy - own) / os.sysconf("SC_CLK_TCK") / max(now - self.last_end, 1e-9)
            )
        self.last_jiffies = jiffies
        record = {
            "other_cores": other_cores,
            "wall": None if self.last_end is None else now - self.last_end,
            "phases": dict(self.current["phases"]),
            "counts": dict(self.current["counts"]),
            "metrics": dict(self.current["metrics"]),
        }
        self.steps.append(record)
        self.current = self._fresh()
        self.last_end = now


class _StepCallback(TrainerCallback):
    def __init__(self, timer: StepTimer, label: str) -> None:
        self.timer = timer
        self.label = label

    def on_step_end(self, args, state, control, **kwargs):
        self.timer.step_end()
        record = self.timer.steps[-1]
        wall = record["wall"]
        phases = record["phases"]
        print(
            f"  [{self.label}] step {state.global_step}/{state.max_steps}: "
            + (f"{wall:.2f} s" if wall is not None else "warm-up")
            + f" (generate {phases.get('generate', 0):.2f}, reward {phases.get('reward', 0):.2f}, "
            f"train_step {phases.get('training_step', 0):.2f}"
            + (
                f", other processes {record['other_cores']:.2f} cores"
                if record["other_cores"] is not None
                else ""
            )
            + ")",
            flush=True,
        )


class _TimedTrainer:
    """Mixed in before a GRPO trainer: times its phases into ``self.step_timer``."""

    step_timer: StepTimer

    def _generate(self, prompts):
        with self.step_timer.phase("generate"):
            output = super()._generate(prompts)
        completion_ids = output[1]
        lengths = [len(ids) for ids in completion_ids]
        self.step_timer.count("completion_tokens", sum(lengths))
        self.step_timer.metric("completion_max_len", max(lengths, default=0))
        return output

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        self.step_timer.last_batch = (
            list(prompts),
            list(completions),
            [[int(t) for t in ids] for ids in completion_ids_list],
        )
        with self.step_timer.phase("reward"):
            return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)

    def _generate_and_score_completions(self, inputs):
        with self.step_timer.phase("generate_and_score"):
            return super()._generate_and_score_completions(inputs)

    def _token_advantages(self, sequence_advantages, loss_mask, mode):
        with self.step_timer.phase("token_advantages"):
            return super()._token_advantages(sequence_advantages, loss_mask, mode)

    def training_step(self, model, inputs, num_items_in_batch):
        with self.step_timer.phase("training_step"):
            return super().training_step(model, inputs, num_items_in_batch)

    def _log_metric(self, name, value):
        super()._log_metric(name, value)
        self.step_timer.metric(name, value)


def _count_rm_forwards(model: torch.nn.Module, timer_of: list[StepTimer | None]):
    """Hooks on the reward model: rows, tokens and seconds of every forward, into the current timer."""
    started: list[float] = []

    def pre(module, args, kwargs):
        started.append(time.perf_counter())

    def post(module, args, kwargs, output):
        seconds = time.perf_counter() - started.pop()
        timer = timer_of[0]
        if timer is None:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        timer.add("rm_forward", seconds)
        if ids is not None:
            timer.count("rm_rows", ids.shape[0])
            timer.count("rm_tokens", ids.shape[0] * ids.shape[1])
            mask = kwargs.get("attention_mask")
            attended = int(mask.sum()) if mask is not None else ids.shape[0] * ids.shape[1]
            timer.count("rm_attended", attended)
        timer.count("rm_calls", 1)

    return [
        model.register_forward_pre_hook(pre, with_kwargs=True),
        model.register_forward_hook(post, with_kwargs=True),
    ]


# ----------------------------------------------------------------------------------------------
# Machine and load


def machine_info() -> dict[str, Any]:

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
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


def _busy_jiffies() -> int:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return user + nice + system + irq + softirq + steal


def _own_jiffies() -> int:
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (all threads)


class LoadMonitor:
    """Samples the 1-minute load average and how many cores other processes keep busy."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def _run(self) -> None:
        wall, busy, own = time.monotonic(), _busy_jiffies(), _own_jiffies()
        while not self._stop.wait(self.every):
            now, busy_now, own_now = time.monotonic(), _busy_jiffies(), _own_jiffies()
            elapsed = max(now - wall, 1e-9)
            self.samples.append(
                {
                    "load1": os.getloadavg()[0],
                    "busy_cores": (busy_now - busy) / self._tick / elapsed,
                    "own_cores": (own_now - own) / self._tick / elapsed,
                    "other_cores": max(0.0, (busy_now - busy) - (own_now - own))
                    / self._tick
                    / elapsed,
                    "attribution_benchmark_running": float(_attribution_benchmark_running()),
                }
            )
            wall, busy, own = now, busy_now, own_now

    def start(self) -> LoadMonitor:
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        if not self.samples:
            return {"samples": 0}

        def summary(key: str) -> dict[str, float]:
            values = [s[key] for s in self.samples]
            return {
                "min": round(min(values), 2),
                "mean": round(statistics.fmean(values), 2),
                "max": round(max(values), 2),
            }

        return {
            "samples": len(self.samples),
            "every_s": self.every,
            "load1": summary("load1"),
            "own_cores": summary("own_cores"),
            "other_cores": summary("other_cores"),
            "attribution_benchmark_seen": any(
                s["attribution_benchmark_running"] for s in self.samples
            ),
        }


def _other_cores(seconds: float) -> float:
    """Cores kept busy by other processes over the next ``seconds``."""
    busy, own = _busy_jiffies(), _own_jiffies()
    time.sleep(seconds)
    delta = (_busy_jiffies() - busy) - (_own_jiffies() - own)
    return max(0, delta) / os.sysconf("SC_CLK_TCK") / seconds


def _attribution_benchmark_running() -> bool:
    try:
        found = subprocess.run(
            ["pgrep", "-f", "benchmarks/attribution.py"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return False
    pids = [int(p) for p in found.stdout.split() if p.strip().isdigit()]
    return any(pid != os.getpid() for pid in pids)


def wait_for_quiet(minutes: float, max_load: float) -> dict[str, Any]:
    """Poll every minute until no attribution benchmark runs and the load is below ``max_load``."""
    started = time.monotonic()
    polls = 0
    while True:
        load = os.getloadavg()[0]
        busy = _attribution_benchmark_running()
        others = _other_cores(5.0)
        polls += 1
        quiet = not busy and load < max_load and others < 0.3
        if quiet or time.monotonic() - started >= minutes * 60:
            state = {
                "waited_s": time.monotonic() - started,
                "quiet": quiet,
                "load1": load,
                "other_cores": others,
                "polls": polls,
            }
            return state if quiet else {**state, "attribution_benchmark_running": busy}
        print(
            f"waiting for a quiet machine: load {load:.2f}, other processes {others:.2f} cores, "
            f"attribution benchmark running: {busy}",
            flush=True,
        )
        time.sleep(60)


# ----------------------------------------------------------------------------------------------
# Models and trainers


def plain_sequence_reward(reward, tokenizer):
    """The vanilla TRL reward callable: one reward-model row per completion."""
    max_length = getattr(tokenizer, "model_max_length", None)
    max_length = max_length if isinstance(max_length, int) and max_length < 100_000 else None

    def sentiment(prompts, completions, completion_ids=None, **kwargs):
        batch = tokenizer(
            [p + c for p, c in zip(prompts, completions)],
            padding=True,
            truncation=max_length is not None,
            max_length=max_length,
            return_tensors="pt",
        )
        with torch.inference_mode():
            scores = reward(batch["input_ids"], batch["attention_mask"])
        return scores.double().cpu().tolist()

    return sentiment


def load_reward():
    from tokenshape.models.sentiment import SENTIMENT_LABELS, load_sentiment_reward_model
    from tokenshape.reward import SequenceClassifierReward

    model, tokenizer = load_sentiment_reward_model()
    positive = SENTIMENT_LABELS.index("positive")
    return SequenceClassifierReward(model, tokenizer, label=positive, minus_label=1 - positive)


def load_policy(model_name: str):
    from tokenshape.models.policy import load_policy as load_smollm2
    from tokenshape.models.policy import smollm2_tokenizer

    if model_name == "smollm2":
        return load_smollm2()
    from tokenshape.models.tiny import tiny_llama_policy

    tokenizer = smollm2_tokenizer()
    return tiny_llama_policy(tokenizer, seed=SEED), tokenizer


def run_config(
    model_name: str,
    config: RunConfig,
    reward,
    prompts: list[str],
    settings: Settings,
    workdir: Path,
    timer_slot: list[StepTimer | None],
    last_batches: dict[str, Any],
) -> dict[str, Any]:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from tokenshape.integrations.trl import ShapedGRPOTrainer, TokenShapeConfig
    from tokenshape.shaped_reward import ShapedReward
    from tokenshape.shaping import ShapingParams

    timed = settings.steps_for(model_name)
    label = f"{model_name}/{config.name}"
    gc.collect()
    torch.manual_seed(SEED)
    load_started = time.perf_counter()
    policy, tokenizer = load_policy(model_name)
    load_seconds = time.perf_counter() - load_started
    args = GRPOConfig(
        output_dir=str(workdir / f"{model_name}-{config.name}"),
        report_to="none",
        use_cpu=True,
        max_steps=settings.warmup_steps + timed,
        per_device_train_batch_size=settings.batch_size,
        num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length,
        learning_rate=settings.learning_rate,
        beta=0.0,
        temperature=settings.temperature,
        loss_type="dapo",
        logging_steps=1,
        save_strategy="no",
        seed=SEED,
        disable_tqdm=True,
    )
    timer = StepTimer()
    common = {
        "model": policy,
        "args": args,
        "train_dataset": Dataset.from_dict({"prompt": prompts}),
        "processing_class": tokenizer,
        "callbacks": [_StepCallback(timer, label)],
    }
    if config.shaped:
        shaped = ShapedReward(
            reward,
            ShapingParams({config.signal: 0.5, "sparse": 0.5}),
            budget=config.budget,
            seed=SEED,
            name="shaped_reward",
        )
        trainer_cls = type("TimedShapedGRPOTrainer", (_TimedTrainer, ShapedGRPOTrainer), {})
        trainer = trainer_cls(
            reward_funcs=[shaped], shaping_config=TokenShapeConfig(mode="weight"), **common
        )
    else:
        trainer_cls = type("TimedGRPOTrainer", (_TimedTrainer, GRPOTrainer), {})
        trainer = trainer_cls(
            reward_funcs=[plain_sequence_reward(reward, reward.tokenizer)], **common
        )
    trainer.step_timer = timer
    trainer.remove_callback(PrinterCallback)
    timer_slot[0] = timer
    try:
        trainer.train()
    finally:
        timer_slot[0] = None
    history = [entry for entry in trainer.state.log_history if "step_time" in entry]
    for record, entry in zip(timer.steps, history):
        record["trl_step_time"] = entry.get("step_time")
        record["reward_mean"] = entry.get("reward")
    trainer_args = {
        key: getattr(args, key, None)
        for key in (
            "bf16",
            "gradient_checkpointing",
            "steps_per_generation",
            "num_iterations",
            "max_grad_norm",
            "optim",
            "use_transformers_paged",
        )
    }
    del trainer, policy
    gc.collect()
    steps = timer.steps[settings.warmup_steps :]
    last_batches[model_name] = (timer.last_batch, tokenizer)
    return {
        "config": config.name,
        "trainer_args": {
            k: str(v) if not isinstance(v, (bool, int, float, type(None))) else v
            for k, v in trainer_args.items()
        },
        "signal": config.signal,
        "budget": config.budget,
        "load_seconds": load_seconds,
        "warmup": timer.steps[: settings.warmup_steps],
        "steps": [_derive(record) for record in steps],
    }


def _derive(record: dict[str, Any]) -> dict[str, Any]:
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


# ----------------------------------------------------------------------------------------------
# Probe: the ShapedReward call alone, on one batch of the run


PROBE_VARIANTS = (
    ("max_rows=16 (CPU default)", {}),
    ("max_rows=8", {"max_rows": 8}),
    ("max_rows=32", {"max_rows": 32}),
    ("max_rows=64", {"max_rows": 64}),
    ("masking='remove' (deletion game)", {"masking": "remove"}),
    ("masking='remove', max_rows=32", {"masking": "remove", "max_rows": 32}),
)


def _median_seconds(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def probe_reward_call(reward, policy_tokenizer, batch, *, budget: int = 64, repeats: int = 3):
    """Seconds of one ``ShapedReward`` call (kernel_shap at ``budget``) on ``batch`` under a few
    settings, and the floor of the same rows: the unmasked rows repeated ``budget`` times, in
    chunks, padded to the batch's width as the reward game sends them, or trimmed per chunk to
    the chunk's longest row."""
    from tokenshape.shaped_reward import ShapedReward
    from tokenshape.shaping import ShapingParams

    prompts, completions, completion_ids = batch
    params = ShapingParams({"kernel_shap": 0.5, "sparse": 0.5})
    calls = []
    for label, options in PROBE_VARIANTS:
        shaped = ShapedReward(
            reward, params, policy_tokenizer=policy_tokenizer, budget=budget, seed=SEED, **options
        )
        seconds = _median_seconds(
            lambda shaped=shaped: shaped(prompts, completions, completion_ids), repeats
        )
        calls.append({"variant": label, "seconds": seconds})
        print(f"  probe {label}: {seconds:.3f} s", flush=True)
    tokenizer = reward.tokenizer
    encoded = tokenizer(
        [p + c for p, c in zip(prompts, completions)], padding=True, return_tensors="pt"
    )
    ids = encoded["input_ids"].repeat_interleave(budget, 0)
    mask = encoded["attention_mask"].repeat_interleave(budget, 0)
    floors = []
    for chunk in (16, 32):
        for trimmed in (False, True):

            def run(chunk=chunk, trimmed=trimmed):
                with torch.inference_mode():
                    for start in range(0, ids.shape[0], chunk):
                        rows_mask = mask[start : start + chunk]
                        width = int(rows_mask.sum(dim=1).max()) if trimmed else ids.shape[1]
                        reward(ids[start : start + chunk, :width], rows_mask[:, :width])

            seconds = _median_seconds(run, repeats)
            floors.append({"chunk": chunk, "trimmed": trimmed, "seconds": seconds})
            print(
                f"  floor chunk {chunk} {'trimmed' if trimmed else 'padded'}: {seconds:.3f} s",
                flush=True,
            )
    return {
        "budget": budget,
        "rows": int(ids.shape[0]),
        "width": int(encoded["input_ids"].shape[1]),
        "attended": encoded["attention_mask"].sum(dim=1).tolist(),
        "calls": calls,
        "floors": floors,
    }


# ----------------------------------------------------------------------------------------------
# Report


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


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
                f"| {name} | {steps_txt} | {_fmt(med['total'])} | {_fmt(med['total_min'])}-{_fmt(med['total_max'])} | "
                f"{_fmt(ratio.get('total'))} | {_fmt(ratio.get('reward_side'))} | "
                f"{_fmt(med['generate'])} | {_fmt(med['reward'])} | {_fmt(med['attribution'])} | "
                f"{_fmt(med['reward_other'], 3)} | {_fmt(med['rm_forward'])} | "
                f"{_fmt(med['token_advantages'], 3)} | {_fmt(med['loss_backward'])} | "
                f"{_fmt(med['optimizer_other'])} | {med['rm_rows']:.0f} | {budget_txt} | {width:.1f} ({attended:.1f}) | "
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
                _fmt(step["total"])
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


# ----------------------------------------------------------------------------------------------
# Main


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
    hooks = _count_rm_forwards(reward.model, timer_slot)
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
