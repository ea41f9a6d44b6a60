"""One inner run: train a policy with shaped rewards, then score it on held-out prompts.

This is the objective the outer loop maximises (DESIGN.md section 1): ``ShapedGRPOTrainer`` for
``training.steps`` steps, then the mean original reward-model score of completions sampled (with
the run's seed) for the held-out prompts, or, with ``sweep.objective: curve_mean``, the mean of
the learning curve (the training reward per step; its area divided by the steps). The run also
records the curve, the starting policy's reward on the same prompts with the same seed, and the
KL from the starting policy on the held-out completions.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from tokenshape.errors import InvalidArgumentError
from tokenshape.experiments.config import ExperimentConfig
from tokenshape.experiments.grpo_args import grpo_config
from tokenshape.experiments.prompts import load_prompts
from tokenshape.experiments.sources import load_policy_source, load_reward
from tokenshape.reward import RewardFn
from tokenshape.shaped_reward import ShapedReward
from tokenshape.shaping.params import ShapingParams
from tokenshape.tuning.optimizer import ObjectiveResult

__all__ = ["InnerRun", "StepProgress", "run_inner"]

#: ``(step, total_steps)`` after each optimizer step.
StepProgress = Callable[[int, int], None]


class _Steps(TrainerCallback):
    def __init__(self, progress: StepProgress | None) -> None:
        self.progress = progress

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress(state.global_step, state.max_steps)


@dataclass
class _HeldOut:
    """Completions of the trained policy on the held-out prompts, and how they score.

    ``start_reward`` is the starting policy's mean reward on the same prompts, sampled with the
    same seed: the level the run is measured against.
    """

    mean_reward: float
    start_reward: float
    kl_to_start: float
    samples: list[tuple[str, str, float]]


@dataclass
class _Sampled:
    """One seeded completion per prompt: ``ids`` and ``mask`` are ``B x (P + C)``."""

    ids: torch.Tensor
    mask: torch.Tensor
    prompt_len: int
    texts: list[str]
    rewards: torch.Tensor


def _sequence_log_probs(
    model, ids: torch.Tensor, mask: torch.Tensor, prompt_len: int
) -> torch.Tensor:
    """Sum of the log-probabilities of each row's completion tokens: ``B``."""
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, prompt_len - 1 : -1].float()
    targets = ids[:, prompt_len:]
    log_probs = torch.log_softmax(logits, dim=-1).gather(2, targets[..., None]).squeeze(-1)
    return (log_probs * mask[:, prompt_len:]).sum(dim=1)


def _sample_and_score(config, model, tokenizer, reward: RewardFn, prompts: list[str]) -> _Sampled:
    """Sample one completion per prompt with the run's seed and score it with ``reward``."""
    from tokenshape.encoding import encode_pairs

    model.eval()
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        with torch.inference_mode():
            out = model.generate(
                **batch,
                max_new_tokens=config.training.max_completion_length,
                do_sample=True,
                temperature=config.training.temperature,
                pad_token_id=tokenizer.pad_token_id,
            )
    prompt_len = batch["input_ids"].shape[1]
    completion = out[:, prompt_len:]
    # Tokens after the first end-of-sequence are not part of the completion.
    ended = (completion == tokenizer.eos_token_id).cumsum(dim=1)
    completion_mask = (ended == 0) | ((ended == 1) & (completion == tokenizer.eos_token_id))
    texts = [
        tokenizer.decode(row[keep], skip_special_tokens=True)
        for row, keep in zip(completion, completion_mask)
    ]
    rm_tokenizer = reward.tokenizer
    encoded = encode_pairs(
        rm_tokenizer, prompts, texts, max_length=getattr(rm_tokenizer, "model_max_length", None)
    )
    with torch.inference_mode():
        rewards = reward(encoded.input_ids, encoded.attention_mask).double().cpu()
    mask = torch.cat([batch["attention_mask"], completion_mask.long()], dim=1)
    return _Sampled(out, mask, prompt_len, texts, rewards)


def _evaluate(
    config, policy, start_policy, tokenizer, reward: RewardFn, prompts: list[str]
) -> _HeldOut:
    """Score the trained and the starting policy on the held-out prompts; KL on the former's samples."""
    trained = _sample_and_score(config, policy, tokenizer, reward, prompts)
    start = _sample_and_score(config, start_policy, tokenizer, reward, prompts)
    kls = _sequence_log_probs(
        policy, trained.ids, trained.mask, trained.prompt_len
    ) - _sequence_log_probs(start_policy, trained.ids, trained.mask, trained.prompt_len)
    samples = [(p, t, float(r)) for p, t, r in zip(prompts, trained.texts, trained.rewards)]
    return _HeldOut(
        float(trained.rewards.mean()), float(start.rewards.mean()), float(kls.mean()), samples
    )


class InnerRun:
    """One inner run of a setting: train a fresh copy of the policy with given blend weights for
    ``training.steps`` steps, then score it on the held-out prompts.

    An instance is the objective :func:`tokenshape.tuning.tune_shaping` maximises: calling it
    with :class:`ShapingParams` returns an :class:`ObjectiveResult`. Every call starts from the
    same policy, prompts and seed, so trials differ only in their weights.

    Args:
        config: the run's settings; its ``training``, ``attribution``, ``grpo``, ``seed`` and
            ``sweep.objective`` are read (its ``policy``, ``reward`` and ``data`` sections are
            not: the objects below take their place). Build it with
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
        return cls(
            config,
            policy=policy,
            tokenizer=tokenizer,
            reward=load_reward(config, tokenizer),
            train_prompts=(prompts := load_prompts(config, tokenizer))[0],
            eval_prompts=prompts[1],
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
    ) -> ObjectiveResult:
        """Train with ``params`` and return the objective, with the curve, the KL and the rewards.

        The objective is ``config.sweep.objective``: the held-out mean reward, or the mean
        training reward over the steps. ``info`` holds both rewards, the starting policy's
        held-out reward and the KL, whichever is the objective.

        Args:
            params: the blend weights of this run.
            output_dir: where the run writes its files (``result.json``, the trainer's folder,
                the starting policy when it was given as an object); ``None``: a temporary
                folder, removed when the run returns.
            progress: called as ``progress(step, total_steps)`` after each training step.
        """
        if output_dir is None:
            with tempfile.TemporaryDirectory(prefix="tokenshape-run-") as folder:
                return self(params, output_dir=folder, progress=progress)
        from datasets import Dataset
        from transformers import AutoModelForCausalLM

        from tokenshape.integrations.trl import ShapedGRPOTrainer, TokenShapeConfig

        config = self.config
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        torch.manual_seed(config.seed)
        start_path = self._start(folder)
        policy = AutoModelForCausalLM.from_pretrained(start_path, dtype=torch.float32)
        if policy.config.pad_token_id is None:
            policy.config.pad_token_id = self.tokenizer.pad_token_id
        tokenizer, reward = self.tokenizer, self.reward
        attribution = config.attribution
        shaped = ShapedReward(
            reward,
            ShapingParams(params.weights, normalization=attribution.normalization),
            budget=attribution.budget,
            seed=config.seed,
            unit=attribution.unit,
            masking=attribution.masking,
            name="shaped_reward",
        )
        trainer = ShapedGRPOTrainer(
            model=policy,
            reward_funcs=[shaped],
            args=grpo_config(config, folder / "trainer"),
            train_dataset=Dataset.from_dict({"prompt": self.train_prompts}),
            processing_class=tokenizer,
            shaping_config=TokenShapeConfig(mode=config.training.mode),
            callbacks=[_Steps(progress)],
        )
        # Progress is reported through ``progress``; the trainer's own printing of every log is off.
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        train_seconds = time.perf_counter() - started
        curve = [float(entry["reward"]) for entry in trainer.state.log_history if "reward" in entry]
        start_policy = type(policy).from_pretrained(start_path)
        held_out = _evaluate(
            config, trainer.model, start_policy, tokenizer, reward, self.eval_prompts
        )
        value = (
            held_out.mean_reward
            if config.sweep.objective == "heldout_reward"
            else statistics.fmean(curve)
        )
        info = {
            "heldout_reward": held_out.mean_reward,
            "start_reward": held_out.start_reward,
            "kl_to_start": held_out.kl_to_start,
            "train_seconds": round(train_seconds, 1),
            "seconds": round(time.perf_counter() - started, 1),
            "weights": dict(params.weights),
        }
        record = {"objective": value, "learning_curve": curve, **info, "samples": held_out.samples}
        # Written beside and moved into place: a run killed while writing leaves no half file, so a
        # resumed comparison never reads one.
        staging = folder / "result.json.writing"
        staging.write_text(json.dumps(record, indent=2))
        os.replace(staging, folder / "result.json")
        return ObjectiveResult(value=value, learning_curve=curve, info=info)


def run_inner(
    config: ExperimentConfig,
    params: ShapingParams,
    *,
    output_dir: str | Path,
    progress: StepProgress | None = None,
) -> ObjectiveResult:
    """One inner run of ``config`` with ``params``: :class:`InnerRun` loaded from the config.

    Args:
        config: the experiment.
        params: the blend weights of this run.
        output_dir: where the run writes its files (``result.json``, the starting policy of a
            tiny run).
        progress: called as ``progress(step, total_steps)`` after each training step.
    """
    return InnerRun.from_config(config)(params, output_dir=output_dir, progress=progress)
