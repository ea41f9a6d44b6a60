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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from tokenshape.amortized import AmortizedExplainer
from tokenshape.experiments.config import ExperimentConfig
from tokenshape.reward import RewardFn, SequenceClassifierReward, StringScorerReward
from tokenshape.shaped_reward import ShapedReward
from tokenshape.shaping.params import AMORTIZED, ShapingParams
from tokenshape.tuning.optimizer import ObjectiveResult

__all__ = ["StepProgress", "load_policy_for", "load_reward", "run_inner"]

#: ``(step, total_steps)`` after each optimizer step.
StepProgress = Callable[[int, int], None]


def load_reward(config: ExperimentConfig) -> RewardFn:
    """The reward function the config names."""
    if config.reward.model == "minilm_sentiment":
        from tokenshape.models.sentiment import SENTIMENT_LABELS, load_sentiment_reward_model

        model, tokenizer = load_sentiment_reward_model()
        positive = SENTIMENT_LABELS.index("positive")
        return SequenceClassifierReward(model, tokenizer, label=positive, minus_label=1 - positive)
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from tokenshape.models.tiny import minilm_tokenizer

    analyzer = SentimentIntensityAnalyzer()

    def vader(text: str) -> float:
        return analyzer.polarity_scores(text)["compound"]

    return StringScorerReward(vader, minilm_tokenizer(), name="vader")


def load_policy_for(config: ExperimentConfig, folder: Path):
    """The starting policy and its tokenizer, saved under ``folder`` for the reference model.

    GRPO with ``beta > 0`` reloads the reference model from the policy's path, so the starting
    weights must be on disk.
    """
    from tokenshape.models.policy import load_policy, policy_path, smollm2_tokenizer

    if config.policy.model == "smollm2":
        model, tokenizer = load_policy()
        return model, tokenizer, policy_path()
    from tokenshape.models.tiny import tiny_llama_policy

    tokenizer = smollm2_tokenizer()
    model = tiny_llama_policy(tokenizer, seed=config.seed)
    start = folder / "policy_start"
    model.save_pretrained(start)
    tokenizer.save_pretrained(start)
    return model, tokenizer, start


class _Steps(TrainerCallback):
    def __init__(self, progress: StepProgress | None) -> None:
        self.progress = progress

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress(state.global_step, state.max_steps)


def _prompts(config: ExperimentConfig, tokenizer, split: str, n: int) -> list[str]:
    from tokenshape.models.data import review_openings

    return review_openings(tokenizer, n, config.data.prompt_tokens, split=split, seed=config.seed)


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


def run_inner(
    config: ExperimentConfig,
    params: ShapingParams,
    *,
    output_dir: str | Path,
    progress: StepProgress | None = None,
) -> ObjectiveResult:
    """Train with ``params`` and return the objective, with the curve, the KL and the rewards.

    The objective is ``config.sweep.objective``: the held-out mean reward, or the mean training
    reward over the steps. ``info`` holds both rewards, the starting policy's held-out reward and
    the KL, whichever is the objective.

    Args:
        config: the experiment.
        params: the blend weights of this run.
        output_dir: where the run writes its files (``result.json``, the starting policy of a
            tiny run).
        progress: called as ``progress(step, total_steps)`` after each training step.
    """
    from datasets import Dataset
    from trl import GRPOConfig

    from tokenshape.integrations.trl import ShapedGRPOTrainer, TokenShapeConfig

    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    policy, tokenizer, start_path = load_policy_for(config, folder)
    reward = load_reward(config)
    attribution = config.attribution
    methods = {}
    if params.weights.get(AMORTIZED, 0) > 0:
        methods[AMORTIZED] = AmortizedExplainer(
            reward,
            teacher=attribution.amortized_teacher,
            teacher_budget=attribution.budget,
            audit_fraction=attribution.amortized_audit_fraction,
            min_pearson=attribution.amortized_min_pearson,
            seed=config.seed,
        )
    shaped = ShapedReward(
        reward,
        ShapingParams(params.weights, normalization=attribution.normalization),
        methods=methods,
        budget=attribution.budget,
        seed=config.seed,
        unit=attribution.unit,
        masking=attribution.masking,
        name="shaped_reward",
    )
    training = config.training
    args = GRPOConfig(
        output_dir=str(folder / "trainer"),
        report_to="none",
        use_cpu=True,
        max_steps=training.steps,
        per_device_train_batch_size=training.batch_size,
        num_generations=training.num_generations,
        max_completion_length=training.max_completion_length,
        learning_rate=training.learning_rate,
        beta=training.beta,
        temperature=training.temperature,
        loss_type="dapo",
        logging_steps=1,
        save_strategy="no",
        seed=config.seed,
        disable_tqdm=True,
    )
    train_prompts = _prompts(config, tokenizer, "train", config.data.train_prompts)
    trainer = ShapedGRPOTrainer(
        model=policy,
        reward_funcs=[shaped],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": train_prompts}),
        processing_class=tokenizer,
        shaping_config=TokenShapeConfig(mode=training.mode),
        callbacks=[_Steps(progress)],
    )
    # Progress is reported through ``progress``; the trainer's own printing of every log is off.
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    train_seconds = time.perf_counter() - started
    curve = [float(entry["reward"]) for entry in trainer.state.log_history if "reward" in entry]
    start_policy = type(policy).from_pretrained(start_path)
    held_out = _evaluate(
        config,
        trainer.model,
        start_policy,
        tokenizer,
        reward,
        _prompts(config, tokenizer, "heldout", config.data.eval_prompts),
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
