"""One inner run: train a policy with shaped rewards, scoring it on held-out prompts along the way.

This is the objective the outer loop maximises (DESIGN.md section 1): ``ShapedGRPOTrainer`` for
``training.steps`` steps, with ``training.checkpoints`` held-out evaluations along the run (reward
and KL to the starting policy, :mod:`tokenshape.experiments.checkpoints`), then the value of
``sweep.objective``: the held-out reward at the KL budget, the final reward minus a KL penalty,
the final held-out reward, or the mean of the training-reward curve. The run records the
checkpoints, the curve, the starting policy's evaluation and its full specification
(:mod:`tokenshape.experiments.runs`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from tokenshape.experiments.checkpoints import (
    Checkpoint,
    CheckpointCallback,
    HeldOutEvaluator,
    checkpoint_steps,
    heldout_prompts,
    reward_at_kl,
    start_evaluation,
)
from tokenshape.experiments.config import ExperimentConfig
from tokenshape.experiments.quiet import quiet_libraries
from tokenshape.experiments.runs import RESULT_FILE, run_spec, write_json
from tokenshape.reward import RewardFn, SequenceClassifierReward, StringScorerReward
from tokenshape.shaped_reward import ShapedReward
from tokenshape.shaping.params import ShapingParams
from tokenshape.tuning.optimizer import ObjectiveResult

__all__ = ["StepProgress", "load_policy_for", "load_reward", "objective_value", "run_inner"]

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


def run_inner(
    config: ExperimentConfig,
    params: ShapingParams,
    *,
    output_dir: str | Path,
    progress: StepProgress | None = None,
    seed: int | None = None,
    start_cache: str | Path | None = None,
) -> ObjectiveResult:
    """Train with ``params`` and return the objective, with the checkpoints, curve and KL.

    ``info`` holds the final held-out reward and KL with their standard errors, the starting
    policy's reward, the checkpoints, the compute spent and whether the KL budget was reached,
    whichever is the objective.

    Args:
        config: the experiment.
        params: the blend weights of this run.
        output_dir: where the run writes its files (``result.json``, the starting policy of a
            tiny run).
        progress: called as ``progress(step, total_steps)`` after each training step.
        seed: the training seed (sampling, data order, attribution sampling); ``config.seed``
            when ``None``. The starting policy, the prompts and the held-out sampling do not
            depend on it.
        start_cache: a JSON file keeping the starting policy's held-out evaluation, shared by
            every run of a study (None: evaluate it in this run).
    """
    with quiet_libraries():
        return _run(
            config,
            params,
            folder=Path(output_dir),
            progress=progress,
            seed=seed,
            start_cache=start_cache,
        )


def _run(config, params, *, folder, progress, seed, start_cache) -> ObjectiveResult:
    """The body of :func:`run_inner`, run inside :func:`quiet_libraries`."""
    from datasets import Dataset
    from trl import GRPOConfig

    from tokenshape.integrations.trl import ShapedGRPOTrainer, TokenShapeConfig

    seed = config.seed if seed is None else seed
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    torch.manual_seed(seed)
    policy, tokenizer, start_path = load_policy_for(config, folder)
    reward = load_reward(config)
    attribution = config.attribution
    shaped = ShapedReward(
        reward,
        ShapingParams(params.weights, normalization=attribution.normalization),
        budget=attribution.budget,
        seed=seed,
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
        seed=seed,
        disable_tqdm=True,
    )
    train_prompts = _prompts(config, tokenizer, "train", config.data.train_prompts)
    start_policy = type(policy).from_pretrained(start_path).eval()
    evaluator = HeldOutEvaluator(
        reward,
        tokenizer,
        heldout_prompts(
            tokenizer,
            n=config.data.eval_prompts,
            offset=training.eval_prompt_offset,
            n_tokens=config.data.prompt_tokens,
            split_seed=config.seed,
        ),
        samples=training.eval_samples,
        seed=training.eval_seed,
        max_new_tokens=training.max_completion_length,
        temperature=training.temperature,
    )
    start = start_evaluation(
        evaluator, start_policy, cache=None if start_cache is None else Path(start_cache)
    )
    checkpoints = CheckpointCallback(
        evaluator,
        start_policy,
        steps=checkpoint_steps(training.steps, training.checkpoints),
        batch_size=training.batch_size,
    )
    trainer = ShapedGRPOTrainer(
        model=policy,
        reward_funcs=[shaped],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": train_prompts}),
        processing_class=tokenizer,
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
    # Written beside and moved into place: a run killed while writing leaves no half file, so a
    # resumed job never reads one.
    write_json(folder / RESULT_FILE, record)
    return ObjectiveResult(value=value, learning_curve=curve, info=info)
