"""Fixtures of the verl integration tests: a tiny random BERT reward model on the real MiniLM
tokenizer saved to a folder (so the manager loads it as it would a real one), the policy's
tokenizer (SmolLM2's, from ``tests/integrations/conftest.py``) saved to a folder, hand-built verl
batches, and verl's own trainer config.

verl needs an environment of its own (``make test-verl``). Elsewhere these tests are not
collected; with ``TOKENSHAPE_REQUIRE_VERL=1`` (set by ``make test-verl``) a missing verl fails
the run instead.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch


def _verl_installed() -> bool:
    spec = importlib.util.find_spec("verl")
    return spec is not None and spec.origin is not None  # not a namespace package


if not _verl_installed() and not os.environ.get("TOKENSHAPE_REQUIRE_VERL"):
    collect_ignore_glob = ["test_*.py"]

PROMPTS = ("The movie was", "I think that this film", "Honestly the", "A")
COMPLETIONS = (
    " great fun, really.",
    " is a waste of time and money!",
    " acting was fine",
    " ok",
)


@pytest.fixture(scope="session")
def texts() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The prompts and completions :func:`make_data` uses by default."""
    return PROMPTS, COMPLETIONS


@pytest.fixture(scope="session")
def policy_tokenizer_path(policy_tokenizer, tmp_path_factory) -> Path:
    """A folder holding the policy tokenizer, as verl's ``actor_rollout_ref.model.path``."""
    folder = tmp_path_factory.mktemp("policy")
    policy_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def reward_model_path(tmp_path_factory) -> Path:
    """A tiny random two-label BERT and the real MiniLM tokenizer, saved to a folder."""
    from tokenshape.models.tiny import minilm_tokenizer, tiny_bert_reward_model

    tokenizer = minilm_tokenizer()
    folder = tmp_path_factory.mktemp("reward_model")
    tiny_bert_reward_model(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def trainer_config(policy_tokenizer_path, reward_model_path):
    """``(tokenshape settings) -> DictConfig``: verl's generated PPO trainer config with the
    reward manager set to ``tokenshape`` and ``reward.tokenshape`` set to the settings."""
    import verl
    from omegaconf import OmegaConf

    base = OmegaConf.load(
        Path(verl.__file__).parent / "trainer" / "config" / "_generated_ppo_trainer.yaml"
    )

    def build(settings: dict | None = None, **overrides):
        config = base.copy()
        config.actor_rollout_ref.model.path = str(policy_tokenizer_path)
        config.reward.reward_manager.name = "tokenshape"
        config.reward.num_workers = 1
        tokenshape = {"reward_model_path": str(reward_model_path), "label": 1}
        tokenshape.update({"minus_label": 0, **(settings or {})})
        config.reward.tokenshape = tokenshape
        for key, value in overrides.items():
            OmegaConf.update(config, key, value, force_add=True)
        return config

    return build


@pytest.fixture
def make_data(policy_tokenizer):
    """``(prompts, completions, ...) -> DataProto`` as verl's rollout leaves it: prompts
    left-padded to ``prompt_width``, responses (ending in eos unless ``eos=False``)
    right-padded to ``response_width`` or cut there, and ``raw_prompt`` messages when
    ``raw_prompt=True``."""
    from verl import DataProto

    pad = policy_tokenizer.pad_token_id
    eos_id = policy_tokenizer.eos_token_id

    def build(
        prompts: Sequence[str] = PROMPTS,
        completions: Sequence[str] = COMPLETIONS,
        *,
        prompt_width: int = 12,
        response_width: int = 16,
        eos: bool = True,
        raw_prompt: bool = False,
    ):
        prompt_rows, response_rows, masks = [], [], []
        for prompt, completion in zip(prompts, completions):
            prompt_ids = policy_tokenizer(prompt, add_special_tokens=False).input_ids
            response_ids = policy_tokenizer(completion, add_special_tokens=False).input_ids
            response_ids = (response_ids + ([eos_id] if eos else []))[:response_width]
            assert len(prompt_ids) <= prompt_width
            left = prompt_width - len(prompt_ids)
            right = response_width - len(response_ids)
            prompt_rows.append([pad] * left + prompt_ids)
            response_rows.append(response_ids + [pad] * right)
            masks.append([0] * left + [1] * (len(prompt_ids) + len(response_ids)) + [0] * right)
        prompt_tensor = torch.tensor(prompt_rows)
        response_tensor = torch.tensor(response_rows)
        non_tensors = {}
        if raw_prompt:
            messages = np.empty(len(prompts), dtype=object)
            messages[:] = [[{"role": "user", "content": prompt}] for prompt in prompts]
            non_tensors["raw_prompt"] = messages
        return DataProto.from_dict(
            tensors={
                "prompts": prompt_tensor,
                "responses": response_tensor,
                "input_ids": torch.cat([prompt_tensor, response_tensor], dim=1),
                "attention_mask": torch.tensor(masks),
            },
            non_tensors=non_tensors,
        )

    return build
