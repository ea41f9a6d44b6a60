"""Tiny random models around the real tokenizers."""

from __future__ import annotations

import pytest
import torch

from tokenshape.errors import InvalidArgumentError
from tokenshape.models.policy import smollm2_tokenizer
from tokenshape.models.tiny import (
    minilm_tokenizer,
    tiny_bert_reward_model,
    tiny_llama_policy,
    tiny_llama_reward_model,
)


@pytest.fixture(scope="module")
def smollm2():
    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def minilm():
    return minilm_tokenizer()


def _same_weights(first, second) -> bool:
    a, b = first.state_dict(), second.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_minilm_tokenizer(minilm):
    assert len(minilm) == 30522
    assert minilm.pad_token_id == 0
    assert minilm.tokenize("Great FILM") == ["great", "film"]


def test_tiny_policy_shapes(smollm2):
    model = tiny_llama_policy(smollm2, hidden_size=32, layers=3)
    assert not model.training
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 3
    assert model.config.pad_token_id == smollm2.pad_token_id
    batch = smollm2(["The film", "A long and dull film"], padding=True, return_tensors="pt")
    logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], len(smollm2))


def test_tiny_policy_is_seeded_without_touching_the_global_state(smollm2):
    state = torch.get_rng_state()
    first = tiny_llama_policy(smollm2, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert _same_weights(first, tiny_llama_policy(smollm2, seed=3))
    assert not _same_weights(first, tiny_llama_policy(smollm2, seed=4))


def test_tiny_policy_trains_and_generates(smollm2):
    model = tiny_llama_policy(smollm2).train()
    batch = smollm2(["The film was"], return_tensors="pt")
    model(**batch, labels=batch["input_ids"]).loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    out = model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (1, batch["input_ids"].shape[1] + 4)
    assert torch.equal(out[:, : batch["input_ids"].shape[1]], batch["input_ids"])


@pytest.mark.parametrize(
    ("hidden_size", "layers", "name"), [(60, 2, "hidden_size"), (64, 0, "layers")]
)
def test_tiny_policy_rejects_bad_sizes(smollm2, hidden_size, layers, name):
    with pytest.raises(InvalidArgumentError) as caught:
        tiny_llama_policy(smollm2, hidden_size=hidden_size, layers=layers)
    assert caught.value.name == name


def test_tiny_llama_reward_model_scores_the_last_real_token(smollm2):
    model = tiny_llama_reward_model(smollm2, seed=1)
    assert model.config.num_labels == 1
    assert model.config.pad_token_id == smollm2.pad_token_id
    texts = ["A fine film", "Nothing about this film worked for me at all"]
    batch = smollm2(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        together = model(**batch).logits
        alone = model(**smollm2(texts[:1], return_tensors="pt")).logits
    assert together.shape == (2, 1)
    torch.testing.assert_close(together[:1], alone, atol=1e-5, rtol=1e-5)
    assert _same_weights(model, tiny_llama_reward_model(smollm2, seed=1))


def test_tiny_bert_reward_model(minilm):
    model = tiny_bert_reward_model(minilm, seed=2)
    assert model.config.vocab_size == 30522
    assert model.config.id2label == {0: "negative", 1: "positive"}
    texts = ["good", "a long and rather dull film"]
    batch = minilm(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        together = model(**batch).logits
        alone = model(**minilm(texts[:1], return_tensors="pt")).logits
    assert together.shape == (2, 2)
    torch.testing.assert_close(together[:1], alone, atol=1e-5, rtol=1e-5)
    assert not _same_weights(model, tiny_bert_reward_model(minilm, seed=3))


def test_seed_is_checked(minilm):
    with pytest.raises(InvalidArgumentError) as caught:
        tiny_bert_reward_model(minilm, seed=-1)
    assert caught.value.name == "seed"
