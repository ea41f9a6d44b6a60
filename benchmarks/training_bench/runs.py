"""One trainer configuration run for a few steps: the models, the reward callables, the trainer."""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_callback import PrinterCallback

from training_bench.settings import SEED, RunConfig, Settings
from training_bench.summary import derive_step
from training_bench.timers import StepCallback, StepTimer, TimedTrainer


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

    from tokenshape.amortized import AmortizedExplainer
    from tokenshape.integrations.trl import ShapedGRPOTrainer, ShapedReward, TokenShapeConfig
    from tokenshape.shaping import ShapingParams
    from tokenshape.shaping.params import AMORTIZED

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
        "callbacks": [StepCallback(timer, label)],
    }
    if config.shaped:
        methods = {}
        if config.signal == AMORTIZED:
            # Teacher budget = the run's budget; no fidelity floor, so the head answers for the
            # sequences it is not audited on from the first call (the fidelity is logged).
            methods[AMORTIZED] = AmortizedExplainer(
                reward,
                teacher_budget=config.budget,
                audit_fraction=0.25,
                min_pearson=None,
                seed=SEED,
            )
        shaped = ShapedReward(
            reward,
            ShapingParams({config.signal: 0.5, "sparse": 0.5}),
            methods=methods,
            budget=config.budget,
            seed=SEED,
            name="shaped_reward",
        )
        trainer_cls = type("TimedShapedGRPOTrainer", (TimedTrainer, ShapedGRPOTrainer), {})
        trainer = trainer_cls(
            reward_funcs=[shaped], shaping_config=TokenShapeConfig(mode="weight"), **common
        )
    else:
        trainer_cls = type("TimedGRPOTrainer", (TimedTrainer, GRPOTrainer), {})
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
        "steps": [derive_step(record) for record in steps],
    }
