"""One inner run: train a policy with shaped rewards, scoring it on held-out prompts along the way.

This is the objective the outer loop maximises (DESIGN.md section 1): ``ShapedGRPOTrainer`` for
``training.steps`` steps, with ``training.checkpoints`` held-out evaluations along the run (reward
and KL to the starting policy, :mod:`tokenshape.experiments.checkpoints`), then the value of
``sweep.objective``: the held-out reward at the KL budget, the final reward minus a KL penalty,
the final held-out reward, or the mean of the training-reward curve. The run records the
checkpoints, the curve, the starting policy's evaluation and its full specification
(:mod:`tokenshape.experiments.runs`).

:class:`InnerRun` is the run built from objects (a user's policy, reward and prompts);
:func:`run_inner` is the run a config describes.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from tokenshape.amortized import AmortizedExplainer
from tokenshape.errors import InvalidArgumentError
from tokenshape.experiments.checkpoints import (
    Checkpoint,
    CheckpointCallback,
    HeldOutEvaluator,
    checkpoint_steps,
    reward_at_kl,
    start_evaluation,
)
from tokenshape.experiments.config import ExperimentConfig
from tokenshape.experiments.grpo_args import grpo_config
from tokenshape.experiments.interrupts import raise_if_interrupted
from tokenshape.experiments.prompts import load_prompts
from tokenshape.experiments.quiet import quiet_libraries
from tokenshape.experiments.runs import RESULT_FILE, run_spec, write_json
from tokenshape.experiments.sources import load_policy_source, load_reward
from tokenshape.integrations.trl import ShapedReward
from tokenshape.reward import RewardFn
from tokenshape.shaping.params import AMORTIZED, ShapingParams
from tokenshape.tuning.optimizer import ObjectiveResult

__all__ = ["InnerRun", "StepProgress", "objective_value", "run_inner"]

#: ``(step, total_steps)`` after each optimizer step.
StepProgress = Callable[[int, int], None]


class _Steps(TrainerCallback):
    def __init__(self, progress: StepProgress | None) -> None:
        self.progress = progress

    def on_step_end(self, args, state, control, **kwargs):
        raise_if_interrupted()
        if self.progress is not None:
            self.progress(state.global_step, state.max_steps)


def objective_value(
    config: ExperimentConfig,
    start_reward: float,
    checkpoints: list[Checkpoint],
    curve: list[float],
) -> tuple[float, bool | None]:
    """The value of ``config.sweep.objective`` for one run.

    Returns:
        ``(value, reached)``: ``reached`` says whether the run reached ``sweep.kl_budget``
        (``None`` for the objectives that have no budget).
    """
    sweep, final = config.sweep, checkpoints[-1]
    if sweep.objective == "reward_at_kl":
        return reward_at_kl(start_reward, checkpoints, sweep.kl_budget)
    if sweep.objective == "reward_minus_kl":
        return final.reward_mean - sweep.kl_penalty * final.kl, None
    if sweep.objective == "heldout_reward":
        return final.reward_mean, None
    return statistics.fmean(curve), None


class InnerRun:
    """One inner run of a setting: train a fresh copy of the policy with given blend weights for
    ``training.steps`` steps, evaluating it on the held-out prompts along the way.

    An instance is the objective :func:`tokenshape.tuning.tune_shaping` maximises: calling it
    with :class:`ShapingParams` returns an :class:`ObjectiveResult`. Every call starts from the
    same policy and prompts, and samples the held-out completions with the same seed, so trials
    differ only in their weights and training seed.

    Args:
        config: the run's settings; its ``training``, ``attribution``, ``grpo``, ``seed`` and
            ``sweep`` are read (its ``policy``, ``reward`` and ``data`` sections are not: the
            objects below take their place). Build it with
            :func:`tokenshape.experiments.config.config_from_dict` to have it validated.
        policy: the starting policy: a folder holding a causal LM (or a hub id), or a model
            object. A model object is saved under ``output_dir / "policy_start"`` at every call,
            because GRPO with ``beta > 0`` reloads its reference model from disk; pass the folder
            of a large model instead.
        tokenizer: the policy's tokenizer, with a pad token.
        reward: the reward function that is explained, shaped and used for the held-out score,
            e.g. a :class:`tokenshape.reward.SequenceClassifierReward`.
        train_prompts: the training prompts (text).
        eval_prompts: the held-out prompts (text).
    """

    def __init__(
        self,
        config: ExperimentConfig,
        *,
        policy: str | Path | Any,
        tokenizer: Any,
        reward: RewardFn,
        train_prompts: Sequence[str],
        eval_prompts: Sequence[str],
    ) -> None:
        if not isinstance(config, ExperimentConfig):
            raise InvalidArgumentError("config", config, "an ExperimentConfig")
        if not isinstance(policy, str | Path) and not hasattr(policy, "save_pretrained"):
            raise InvalidArgumentError(
                "policy", policy, "a model folder, a hub id or a model with save_pretrained"
            )
        if getattr(tokenizer, "pad_token_id", None) is None:
            raise InvalidArgumentError("tokenizer", tokenizer, "a tokenizer with a pad token")
        if not callable(reward) or getattr(reward, "tokenizer", None) is None:
            raise InvalidArgumentError("reward", reward, "a reward function with a .tokenizer")
        for name, prompts in (("train_prompts", train_prompts), ("eval_prompts", eval_prompts)):
            if (
                isinstance(prompts, str)
                or not prompts
                or not all(isinstance(prompt, str) for prompt in prompts)
            ):
                raise InvalidArgumentError(name, prompts, "a non-empty list of prompt strings")
        self.config = config
        self.policy = policy
        self.tokenizer = tokenizer
        self.reward = reward
        self.train_prompts = list(train_prompts)
        self.eval_prompts = list(eval_prompts)

    @classmethod
    def from_config(cls, config: ExperimentConfig) -> InnerRun:
        """The run a config describes: its policy, reward model and prompts, loaded."""
        policy, tokenizer = load_policy_source(config)
        train_prompts, eval_prompts = load_prompts(config, tokenizer)
        return cls(
            config,
            policy=policy,
            tokenizer=tokenizer,
            reward=load_reward(config, tokenizer),
            train_prompts=train_prompts,
            eval_prompts=eval_prompts,
        )

    def _start(self, folder: Path) -> str:
        """Where the starting policy is loaded from."""
        if isinstance(self.policy, str | Path):
            return str(self.policy)
        start = folder / "policy_start"
        self.policy.save_pretrained(start)
        self.tokenizer.save_pretrained(start)
        return str(start)

    def __call__(
        self,
        params: ShapingParams,
        *,
        output_dir: str | Path | None = None,
        progress: StepProgress | None = None,
        seed: int | None = None,
        start_cache: str | Path | None = None,
    ) -> ObjectiveResult:
        """Train with ``params`` and return the objective, with the checkpoints, curve and KL.

        ``info`` holds the final held-out reward and KL with their standard errors, the starting
        policy's reward, the checkpoints, the compute spent and whether the KL budget was
        reached, whichever is the objective.

        Args:
            params: the blend weights of this run.
            output_dir: where the run writes its files (``result.json``, the trainer's folder,
                the starting policy when it was given as an object); ``None``: a temporary
                folder, removed when the run returns.
            progress: called as ``progress(step, total_steps)`` after each training step.
            seed: the training seed (sampling, data order, attribution sampling);
                ``config.seed`` when ``None``. The starting policy, the prompts and the held-out
                sampling do not depend on it.
            start_cache: a JSON file keeping the starting policy's held-out evaluation, shared
                by every run of a study (None: evaluate it in this run).
        """
        if output_dir is None:
            with tempfile.TemporaryDirectory(prefix="tokenshape-run-") as folder:
                return self(
                    params, output_dir=folder, progress=progress, seed=seed, start_cache=start_cache
                )
        with quiet_libraries():
            return self._run(
                params,
                folder=Path(output_dir),
                progress=progress,
                seed=self.config.seed if seed is None else seed,
                start_cache=None if start_cache is None else Path(start_cache),
            )

    def _run(
        self,
        params: ShapingParams,
        *,
        folder: Path,
        progress: StepProgress | None,
        seed: int,
        start_cache: Path | None,
    ) -> ObjectiveResult:
        """The body of :meth:`__call__`, run inside :func:`quiet_libraries`."""
        from datasets import Dataset
        from transformers import AutoModelForCausalLM

        from tokenshape.integrations.trl import ShapedGRPOTrainer, TokenShapeConfig

        config, training = self.config, self.config.training
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        torch.manual_seed(seed)
        start_path = self._start(folder)
        policy = AutoModelForCausalLM.from_pretrained(start_path, dtype=torch.float32)
        if policy.config.pad_token_id is None:
            policy.config.pad_token_id = self.tokenizer.pad_token_id
        attribution = config.attribution
        methods = {}
        if params.weights.get(AMORTIZED, 0) > 0:
            methods[AMORTIZED] = AmortizedExplainer(
                self.reward,
                teacher=attribution.amortized_teacher,
                teacher_budget=attribution.budget,
                audit_fraction=attribution.amortized_audit_fraction,
                min_pearson=attribution.amortized_min_pearson,
                seed=seed,
            )
        shaped = ShapedReward(
            self.reward,
            ShapingParams(params.weights, normalization=attribution.normalization),
            methods=methods,
            budget=attribution.budget,
            seed=seed,
            unit=attribution.unit,
            masking=attribution.masking,
            name="shaped_reward",
        )
        start_policy = type(policy).from_pretrained(start_path).eval()
        evaluator = HeldOutEvaluator(
            self.reward,
            self.tokenizer,
            self.eval_prompts,
            samples=training.eval_samples,
            seed=training.eval_seed,
            max_new_tokens=training.max_completion_length,
            temperature=training.temperature,
        )
        start = start_evaluation(evaluator, start_policy, cache=start_cache)
        checkpoints = CheckpointCallback(
            evaluator,
            start_policy,
            steps=checkpoint_steps(training.steps, training.checkpoints),
            batch_size=training.batch_size,
        )
        trainer = ShapedGRPOTrainer(
            model=policy,
            reward_funcs=[shaped],
            args=grpo_config(config, folder / "trainer", seed=seed),
            train_dataset=Dataset.from_dict({"prompt": self.train_prompts}),
            processing_class=self.tokenizer,
            shaping_config=TokenShapeConfig(mode=training.mode),
            callbacks=[_Steps(progress), checkpoints],
        )
        # Progress is reported through ``progress``; the trainer's own printing of every log is off.
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        curve = [float(entry["reward"]) for entry in trainer.state.log_history if "reward" in entry]
        final = checkpoints.checkpoints[-1]
        value, reached = objective_value(config, start.reward_mean, checkpoints.checkpoints, curve)
        info = {
            "heldout_reward": final.reward_mean,
            "heldout_reward_sem": final.reward_sem,
            "start_reward": start.reward_mean,
            "start_reward_sem": start.reward_sem,
            "kl_to_start": final.kl,
            "kl_sem": final.kl_sem,
            "kl_budget_reached": reached,
            "train_seconds": round(final.wall_seconds, 1),
            "reward_rows": final.reward_rows,
            "policy_tokens": final.policy_tokens,
            "seconds": round(time.perf_counter() - started, 1),
            "seed": seed,
            "weights": dict(params.weights),
            "checkpoints": [c.to_dict() for c in checkpoints.checkpoints],
        }
        record = {
            "spec": run_spec(config, params, seed),
            "objective": value,
            "learning_curve": curve,
            **info,
            "samples": checkpoints.last_samples,
        }
        # Written beside and moved into place: a run killed while writing leaves no half file, so
        # a resumed job never reads one.
        write_json(folder / RESULT_FILE, record)
        return ObjectiveResult(value=value, learning_curve=curve, info=info)


def run_inner(
    config: ExperimentConfig,
    params: ShapingParams,
    *,
    output_dir: str | Path,
    progress: StepProgress | None = None,
    seed: int | None = None,
    start_cache: str | Path | None = None,
) -> ObjectiveResult:
    """One inner run of ``config`` with ``params``: :class:`InnerRun` loaded from the config.

    Args:
        config: the experiment.
        params: the blend weights of this run.
        output_dir: where the run writes its files (``result.json``, the starting policy of a
            tiny run).
        progress: called as ``progress(step, total_steps)`` after each training step.
        seed: the training seed; ``config.seed`` when ``None`` (see :meth:`InnerRun.__call__`).
        start_cache: a JSON file keeping the starting policy's held-out evaluation, shared by
            every run of a study.
    """
    with quiet_libraries():
        run = InnerRun.from_config(config)
    return run(params, output_dir=output_dir, progress=progress, seed=seed, start_cache=start_cache)
