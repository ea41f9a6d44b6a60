"""Held-out evaluation along an inner run: reward and KL to the starting policy at checkpoints.

Every trial and condition of a study is scored on the same held-out prompts with the same sampling
seed (common random numbers), so two runs differ only by what training did. At each checkpoint
:class:`HeldOutEvaluator` samples ``samples`` completions per prompt from the policy's own
distribution (``top_k=0``, ``top_p=1``, the training temperature: what GRPO samples from) and
records:

- the mean original reward-model score and its standard error (prompts are the sampling unit: the
  sd of the per-prompt means over ``sqrt(prompts)``);
- the KL from the starting policy, ``KL(pi || pi_0)`` over whole completions, estimated without
  bias by ``mean_y [log pi(y|x) - log pi_0(y|x)]`` over the sampled ``y ~ pi`` (per sequence: the
  sum over the completion's tokens, up to and including its end-of-sequence token; both policies'
  log-probabilities at the training temperature), with its standard error the same way;
- the compute spent so far in training: wall seconds (evaluation excluded), reward-model forward
  rows, and policy tokens generated.

The starting policy is evaluated once per study and kept in a file keyed by what it depends on.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, TrainerCallback

from tokenshape.encoding import encode_pairs
from tokenshape.errors import InvalidArgumentError
from tokenshape.experiments.frontier import kl_path, reward_at
from tokenshape.experiments.runs import write_json
from tokenshape.reward import RewardFn

__all__ = [
    "Checkpoint",
    "CheckpointCallback",
    "Evaluation",
    "HeldOutEvaluator",
    "checkpoint_steps",
    "reward_at_kl",
    "start_evaluation",
]

#: Completions generated per ``generate`` call during evaluation.
_GENERATION_ROWS = 32


def checkpoint_steps(total_steps: int, checkpoints: int) -> list[int]:
    """``checkpoints`` evenly spaced steps in ``1..total_steps``, the last being ``total_steps``.

    >>> checkpoint_steps(50, 5)
    [10, 20, 30, 40, 50]
    >>> checkpoint_steps(3, 10)
    [1, 2, 3]
    """
    count = min(checkpoints, total_steps)
    return sorted({max(1, round(total_steps * (i + 1) / count)) for i in range(count)})


@dataclass(frozen=True)
class Evaluation:
    """One held-out evaluation of a policy.

    Attributes:
        reward_mean, reward_sem: the mean reward over every sample and its standard error.
        kl, kl_sem: the estimated KL to the starting policy (nats per completion) and its standard
            error; 0 for the starting policy itself.
        samples: ``(prompt, completion, reward)`` of the first sample of each prompt.
    """

    reward_mean: float
    reward_sem: float
    kl: float
    kl_sem: float
    samples: list[tuple[str, str, float]]


@dataclass(frozen=True)
class Checkpoint:
    """The held-out evaluation at one training step, with the compute spent until then.

    Attributes:
        step: optimizer steps done.
        wall_seconds: training wall-clock seconds so far, evaluations excluded.
        reward_rows: reward-model forward rows so far (sequence scores and attributions).
        policy_tokens: completion tokens the policy generated in training so far.
        reward_mean, reward_sem, kl, kl_sem: as :class:`Evaluation`.
    """

    step: int
    wall_seconds: float
    reward_rows: int
    policy_tokens: int
    reward_mean: float
    reward_sem: float
    kl: float
    kl_sem: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _mean_and_sem(values: torch.Tensor) -> tuple[float, float]:
    """Mean over ``P x S`` values and its standard error over the ``P`` per-row means."""
    per_prompt = values.double().mean(dim=1)
    sem = float(per_prompt.std(unbiased=True)) / math.sqrt(len(per_prompt))
    return float(values.double().mean()), sem if len(per_prompt) > 1 else math.nan


class HeldOutEvaluator:
    """Samples and scores completions of held-out prompts, the same way for every policy.

    Args:
        reward: the reward function (its ``tokenizer`` encodes prompt and completion).
        tokenizer: the policy's tokenizer.
        prompts: the ``P`` held-out prompts.
        samples: completions per prompt, ``S``.
        seed: the sampling seed, the same for every policy evaluated (common random numbers).
        max_new_tokens: tokens per completion at most.
        temperature: the sampling temperature of training, > 0.
    """

    def __init__(
        self,
        reward: RewardFn,
        tokenizer: Any,
        prompts: Sequence[str],
        *,
        samples: int,
        seed: int,
        max_new_tokens: int,
        temperature: float,
    ) -> None:
        if not prompts:
            raise InvalidArgumentError("prompts", list(prompts), "one or more held-out prompts")
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise InvalidArgumentError("samples", samples, "an int >= 1")
        if not temperature > 0:
            raise InvalidArgumentError("temperature", temperature, "a sampling temperature > 0")
        self.reward = reward
        self.tokenizer = tokenizer
        self.prompts = list(prompts)
        self.samples = samples
        self.seed = seed
        self.temperature = float(temperature)
        self.generation = GenerationConfig(
            do_sample=True,
            temperature=self.temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )

    def spec(self) -> dict[str, Any]:
        """What the evaluation depends on, for keys and comparisons of records."""
        return {
            "prompts": self.prompts,
            "samples": self.samples,
            "seed": self.seed,
            "max_new_tokens": self.generation.max_new_tokens,
            "temperature": self.temperature,
            "top_k": 0,
            "top_p": 1.0,
        }

    def evaluate(self, policy, start_policy=None) -> Evaluation:
        """Sample from ``policy``, score, and estimate the KL to ``start_policy``.

        Without ``start_policy`` the policy is the starting policy and its KL is 0.
        """
        was_training = policy.training
        policy.eval()
        try:
            ids, mask, prompt_len = self._sample(policy)
            rewards, texts = self._score(ids, mask, prompt_len)
            if start_policy is None:
                kls = torch.zeros_like(rewards)
            else:
                kls = self._log_probs(policy, ids, mask, prompt_len) - self._log_probs(
                    start_policy, ids, mask, prompt_len
                )
        finally:
            policy.train(was_training)
        shape = (len(self.prompts), self.samples)
        reward_mean, reward_sem = _mean_and_sem(rewards.reshape(shape))
        kl, kl_sem = _mean_and_sem(kls.reshape(shape))
        first = [i * self.samples for i in range(len(self.prompts))]
        samples = [(self.prompts[k], texts[i], float(rewards[i])) for k, i in enumerate(first)]
        return Evaluation(
            reward_mean, reward_sem, kl, 0.0 if start_policy is None else kl_sem, samples
        )

    def _sample(self, policy) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``P * S`` completions (each prompt's ``S`` in a row): ids and mask ``N x (L + C)``."""
        self.tokenizer.padding_side = "left"
        rows = [p for p in self.prompts for _ in range(self.samples)]
        batch = self.tokenizer(rows, return_tensors="pt", padding=True)
        prompt_len = batch["input_ids"].shape[1]
        width = prompt_len + self.generation.max_new_tokens
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        device = policy.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            for start in range(0, len(rows), _GENERATION_ROWS):
                stop = start + _GENERATION_ROWS
                with torch.inference_mode():
                    out = policy.generate(
                        input_ids=batch["input_ids"][start:stop].to(device),
                        attention_mask=batch["attention_mask"][start:stop].to(device),
                        generation_config=self.generation,
                    )
                ids[start:stop, : out.shape[1]] = out.cpu()
        completion = ids[:, prompt_len:]
        eos = self.tokenizer.eos_token_id
        # Tokens after the first end-of-sequence are padding, not part of the completion; the
        # end-of-sequence token is. (A batch that stopped early ends with all rows ended.)
        is_eos = (completion == eos).long()
        completion_mask = (torch.cumsum(is_eos, dim=1) - is_eos) == 0
        mask = torch.cat([batch["attention_mask"], completion_mask.long()], dim=1)
        return ids, mask, prompt_len

    def _score(
        self, ids: torch.Tensor, mask: torch.Tensor, prompt_len: int
    ) -> tuple[torch.Tensor, list[str]]:
        """The reward of each row, ``N`` float64, and the completion texts."""
        texts = [
            self.tokenizer.decode(
                row[prompt_len:][keep[prompt_len:].bool()], skip_special_tokens=True
            )
            for row, keep in zip(ids, mask)
        ]
        prompts = [p for p in self.prompts for _ in range(self.samples)]
        rm_tokenizer = self.reward.tokenizer
        encoded = encode_pairs(
            rm_tokenizer,
            prompts,
            texts,
            max_length=getattr(rm_tokenizer, "model_max_length", None),
        )
        with torch.inference_mode():
            rewards = self.reward(encoded.input_ids, encoded.attention_mask)
        return rewards.double().cpu(), texts

    def _log_probs(
        self, model, ids: torch.Tensor, mask: torch.Tensor, prompt_len: int
    ) -> torch.Tensor:
        """Sum of each row's completion-token log-probabilities at the temperature: ``N``."""
        device = model.device
        positions = (mask.cumsum(dim=1) - 1).clamp_min(0)
        sums = []
        for start in range(0, len(ids), _GENERATION_ROWS):
            rows = slice(start, start + _GENERATION_ROWS)
            with torch.inference_mode():
                logits = model(
                    input_ids=ids[rows].to(device),
                    attention_mask=mask[rows].to(device),
                    position_ids=positions[rows].to(device),
                ).logits[:, prompt_len - 1 : -1]
            log_probs = torch.log_softmax(logits.float().cpu() / self.temperature, dim=-1)
            chosen = log_probs.gather(2, ids[rows, prompt_len:, None]).squeeze(-1)
            sums.append((chosen * mask[rows, prompt_len:]).sum(dim=1))
        return torch.cat(sums).double()


def start_evaluation(
    evaluator: HeldOutEvaluator, start_policy, *, cache: Path | None
) -> Evaluation:
    """The starting policy's evaluation, read from ``cache`` when it was made the same way.

    The cache key is the evaluation's spec and a fingerprint of the starting weights.
    """
    key = {"evaluation": evaluator.spec(), "policy": _fingerprint(start_policy)}
    if cache is not None and cache.exists():
        stored = json.loads(cache.read_text())
        if stored.get("key") == key:
            return Evaluation(**{**stored["evaluation"], "samples": []})
    evaluation = evaluator.evaluate(start_policy)
    if cache is not None:
        record = {"key": key, "evaluation": {**asdict(evaluation), "samples": []}}
        write_json(cache, record)
    return evaluation


def _fingerprint(model) -> str:
    """SHA-256 of a model's parameters and buffers, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class CheckpointCallback(TrainerCallback):
    """Evaluates the policy at the given steps and counts the compute spent in training.

    Evaluation runs after the step's metrics are logged, under its own random seed, so it does
    not change what training does; its time is excluded from ``wall_seconds``.

    Args:
        evaluator: scores the policy on the held-out prompts.
        start_policy: the frozen starting policy (the KL's reference).
        steps: the steps to evaluate at.
        batch_size: completions per step (for the row count of steps without attributions).

    Attributes:
        checkpoints: the :class:`Checkpoint` of each evaluated step, in order.
        last_samples: the first sample of each prompt at the last checkpoint.
    """

    def __init__(
        self,
        evaluator: HeldOutEvaluator,
        start_policy,
        *,
        steps: Sequence[int],
        batch_size: int,
    ) -> None:
        self.evaluator = evaluator
        self.start_policy = start_policy
        self.steps = set(steps)
        self.batch_size = batch_size
        self.checkpoints: list[Checkpoint] = []
        self.last_samples: list[tuple[str, str, float]] = []
        self.reward_rows = 0
        self.policy_tokens = 0
        self._started = 0.0
        self._evaluating = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()
        self._evaluating = 0.0

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        logs = logs or {}
        if "reward" not in logs:  # the summary logged at the end of training
            return
        rows = [v for k, v in logs.items() if k.endswith("/rows_per_sequence")]
        self.reward_rows += round(self.batch_size * (sum(rows) if rows else 1.0))
        self.policy_tokens += round(self.batch_size * float(logs.get("completions/mean_length", 0)))
        if state.global_step not in self.steps or model is None:
            return
        wall = time.perf_counter() - self._started - self._evaluating
        began = time.perf_counter()
        evaluation = self.evaluator.evaluate(model, self.start_policy)
        self._evaluating += time.perf_counter() - began
        self.last_samples = evaluation.samples
        self.checkpoints.append(
            Checkpoint(
                step=state.global_step,
                wall_seconds=round(wall, 3),
                reward_rows=self.reward_rows,
                policy_tokens=self.policy_tokens,
                reward_mean=evaluation.reward_mean,
                reward_sem=evaluation.reward_sem,
                kl=evaluation.kl,
                kl_sem=evaluation.kl_sem,
            )
        )


def reward_at_kl(
    start_reward: float, checkpoints: Sequence[Checkpoint], budget: float
) -> tuple[float, bool]:
    """The held-out reward where the run's KL reaches ``budget``, linearly interpolated.

    The run's path starts at the starting policy (KL 0, ``start_reward``) and goes through the
    checkpoints in step order, their KL estimates made non-decreasing
    (:func:`tokenshape.experiments.frontier.kl_path`). A run that never reaches the budget gives
    its last reward.

    Returns:
        ``(reward, reached)``.
    """
    if not budget > 0:
        raise InvalidArgumentError("budget", budget, "a KL budget > 0")
    rewards = [c.reward_mean for c in checkpoints]
    value = reward_at(kl_path(start_reward, [c.kl for c in checkpoints], rewards), budget)
    return (rewards[-1], False) if value is None else (value, True)
