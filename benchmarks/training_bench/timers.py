"""Timers around the trainer's own methods and hooks on the reward model's forward."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from harness.load import busy_jiffies, own_jiffies
from transformers import TrainerCallback


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
        jiffies = (busy_jiffies(), own_jiffies())
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


class StepCallback(TrainerCallback):
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


class TimedTrainer:
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


def count_rm_forwards(model: torch.nn.Module, timer_of: list[StepTimer | None]):
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
