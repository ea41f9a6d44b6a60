"""Fixtures of the TRL integration tests: the real SmolLM2 tokenizer, a tiny random Llama policy
that sometimes ends its completions, and a tiny random BERT reward model on the MiniLM tokenizer,
so that reward and policy tokenize differently and alignment is exercised."""

from __future__ import annotations

import pytest
import torch

PROMPTS = ["The movie was", "I think that", "This film is", "Honestly the"]


@pytest.fixture(scope="session")
def policy_tokenizer():
    """The real SmolLM2-135M-Instruct tokenizer (byte-level BPE, pad = eos = <|im_end|>)."""
    from tokenshape.models.policy import smollm2_tokenizer

    return smollm2_tokenizer()


@pytest.fixture(scope="session")
def reward_tokenizer():
    """The real all-MiniLM-L6-v2 WordPiece tokenizer (fast, no chat template)."""
    from tokenshape.models.tiny import minilm_tokenizer

    return minilm_tokenizer()


@pytest.fixture
def make_policy(policy_tokenizer):
    """``() -> model``: a tiny random Llama on the SmolLM2 vocabulary, the same weights on every
    call. Its end-of-sequence logit is raised so that some completions of 8 tokens end early and
    others are truncated."""
    from tokenshape.models.tiny import tiny_llama_policy

    def build():
        model = tiny_llama_policy(policy_tokenizer)
        direction = torch.randn(
            model.config.hidden_size, generator=torch.Generator().manual_seed(1)
        )
        with torch.no_grad():
            model.lm_head.weight[policy_tokenizer.eos_token_id] = direction
        return model

    return build


@pytest.fixture(scope="session")
def tiny_bert_reward(reward_tokenizer):
    """A tiny random two-label BERT as a reward: logit 1 minus logit 0."""
    from tokenshape.models.tiny import tiny_bert_reward_model
    from tokenshape.reward import SequenceClassifierReward

    model = tiny_bert_reward_model(reward_tokenizer)
    return SequenceClassifierReward(model, reward_tokenizer, label=1, minus_label=0)


@pytest.fixture
def prompt_dataset():
    """Four plain-text prompts."""
    from datasets import Dataset

    return Dataset.from_dict({"prompt": PROMPTS})


@pytest.fixture
def grpo_config(tmp_path):
    """``(**overrides) -> GRPOConfig`` for tiny CPU runs: 8 new tokens, 2 generations, 4 rows."""
    from trl import GRPOConfig

    def build(**overrides):
        settings = {
            "output_dir": str(tmp_path / "out"),
            "report_to": "none",
            "use_cpu": True,
            "max_completion_length": 8,
            "num_generations": 2,
            "per_device_train_batch_size": 4,
            "max_steps": 2,
            "logging_steps": 1,
            "save_strategy": "no",
            "seed": 0,
            "learning_rate": 1e-3,
        }
        settings.update(overrides)
        return GRPOConfig(**settings)

    return build
