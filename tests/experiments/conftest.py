"""A user's own models and prompt files, built from configs and saved the way a user would save
them: a tiny Llama policy with the SmolLM2 tokenizer, a tiny BERT reward model with the MiniLM
tokenizer (another tokenizer than the policy's), a tiny Llama reward model (a decoder classifier),
JSONL prompt files (plain and chat) and a module of Python rewards."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

TRAIN_PROMPTS = [
    "The movie was",
    "I think that",
    "This film is",
    "Honestly the",
    "The actors were",
    "My favourite scene",
    "The ending felt",
    "Overall the story",
]
EVAL_PROMPTS = ["The plot of", "What I liked", "The music was", "In the end"]

#: A module a user might write; its functions map a list of strings to a list of floats.
REWARDS_MODULE = """
def letter_e_share(texts):
    return [text.count("e") / max(len(text), 1) for text in texts]

def wrong_count(texts):
    return [0.0]

def not_numbers(texts):
    return ["good" for _ in texts]

def raises(texts):
    raise RuntimeError("no scorer here")

not_a_function = 3
"""


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="session")
def user_files(tmp_path_factory):
    """Paths of the user's folders and files (built once per session)."""
    from tokenshape.models.policy import smollm2_tokenizer
    from tokenshape.models.tiny import (
        minilm_tokenizer,
        tiny_bert_reward_model,
        tiny_llama_policy,
        tiny_llama_reward_model,
    )

    root = tmp_path_factory.mktemp("user")
    policy_tokenizer = smollm2_tokenizer()
    reward_tokenizer = minilm_tokenizer()
    saved = {
        "policy": (tiny_llama_policy(policy_tokenizer, seed=3), policy_tokenizer),
        "bert_reward": (tiny_bert_reward_model(reward_tokenizer, seed=4), reward_tokenizer),
        "llama_reward": (tiny_llama_reward_model(policy_tokenizer, seed=5), policy_tokenizer),
    }
    for name, (model, tokenizer) in saved.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    chat = [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"{p}..."}]
        for p in TRAIN_PROMPTS
    ]
    (root / "rewards").mkdir()
    (root / "rewards" / "user_rewards.py").write_text(REWARDS_MODULE)
    return SimpleNamespace(
        root=root,
        policy=root / "policy",
        bert_reward=root / "bert_reward",
        llama_reward=root / "llama_reward",
        train=write_jsonl(root / "train.jsonl", [{"prompt": p} for p in TRAIN_PROMPTS]),
        eval=write_jsonl(
            root / "eval.jsonl", [{"prompt": p, "id": i} for i, p in enumerate(EVAL_PROMPTS)]
        ),
        chat=write_jsonl(root / "chat.jsonl", [{"prompt": messages} for messages in chat]),
        rewards_folder=root / "rewards",
        train_prompts=list(TRAIN_PROMPTS),
        eval_prompts=list(EVAL_PROMPTS),
    )


@pytest.fixture
def in_rewards_folder(user_files, monkeypatch):
    """Run in the folder holding ``user_rewards.py``, as a user beside their config would."""
    monkeypatch.chdir(user_files.rewards_folder)
    yield
    import sys

    sys.modules.pop("user_rewards", None)


@pytest.fixture
def minimal_config(user_files):
    """``() -> dict``: the minimal config of the README, with the user's paths."""

    def build() -> dict:
        return {
            "name": "my_task",
            "policy": {"model": str(user_files.policy)},
            "reward": {"model": str(user_files.bert_reward), "label": 1, "minus_label": 0},
            "data": {"train": str(user_files.train), "eval": str(user_files.eval)},
            "training": {
                "steps": 2,
                "batch_size": 4,
                "num_generations": 2,
                "max_completion_length": 8,
                "weights": {"kernel_shap": 0.5, "sparse": 0.5},
            },
            "attribution": {"budget": 16},
        }

    return build


@pytest.fixture(name="write_jsonl")
def write_jsonl_fixture():
    """``(path, rows) -> path``: write rows as JSON lines."""
    return write_jsonl
