"""Gradient x input on the input embeddings, checked against finite differences."""

from __future__ import annotations

import pytest
import torch

import tokenshape
from tokenshape.errors import InvalidArgumentError

PAIRS = [("a", "the film was wonderful"), ("review:", "but the ending was awful, sadly")]


@pytest.fixture(scope="module")
def double_bert_reward(minilm_tokenizer):
    """A tiny random BERT in float64, so finite differences are accurate."""
    from tokenshape.models.tiny import tiny_bert_reward_model
    from tokenshape.reward import SequenceClassifierReward

    model = tiny_bert_reward_model(minilm_tokenizer, seed=3).double()
    return SequenceClassifierReward(model, minilm_tokenizer, label=1, minus_label=0)


def _batch(tokenizer, pairs=PAIRS):
    encoded = tokenizer(
        [p for p, _ in pairs], [r for _, r in pairs], padding=True, return_tensors="pt"
    )
    ids, attention = encoded["input_ids"], encoded["attention_mask"]
    response = (encoded["token_type_ids"] == 1) & (ids != tokenizer.sep_token_id)
    return ids, attention, response & attention.bool()


def _reward_of_embeddings(reward, embeddings, attention):
    logits = reward.model(inputs_embeds=embeddings, attention_mask=attention).logits
    return logits[:, 1] - logits[:, 0]


def test_gradient_equals_finite_differences(double_bert_reward, minilm_tokenizer):
    ids, attention, response = _batch(minilm_tokenizer)
    result = tokenshape.attribute(double_bert_reward, ids, attention, response, method="gradient")
    table = double_bert_reward.model.get_input_embeddings().weight.detach()
    baseline = table[minilm_tokenizer.mask_token_id]
    step = 1e-4
    with torch.no_grad():
        for b in range(ids.shape[0]):
            embeddings = table[ids[b]][None]
            for t in response[b].nonzero().flatten().tolist():
                direction = torch.zeros_like(embeddings)
                direction[0, t] = embeddings[0, t] - baseline
                up = _reward_of_embeddings(
                    double_bert_reward, embeddings + step * direction, attention[b : b + 1]
                )
                down = _reward_of_embeddings(
                    double_bert_reward, embeddings - step * direction, attention[b : b + 1]
                )
                expected = float((up - down) / (2 * step))
                assert float(result.scores[b, t]) == pytest.approx(expected, rel=1e-3, abs=1e-6)
    assert result.rows.tolist() == [3, 3]
    assert result.base_value.tolist() == [0.0, 0.0]
    torch.testing.assert_close(
        result.full_value, double_bert_reward(ids, attention).double(), atol=1e-6, rtol=1e-6
    )


def test_gradient_without_a_replacement_token_is_plain_gradient_times_input(
    double_bert_reward, minilm_tokenizer
):
    ids, attention, response = _batch(minilm_tokenizer)
    result = tokenshape.attribute(
        double_bert_reward, ids, attention, response, method="gradient", masking="remove"
    )
    table = double_bert_reward.model.get_input_embeddings().weight.detach()
    embeddings = table[ids].clone().requires_grad_(True)
    reward = _reward_of_embeddings(double_bert_reward, embeddings, attention)
    (gradient,) = torch.autograd.grad(reward.sum(), embeddings)
    expected = (gradient * embeddings.detach()).sum(-1)
    torch.testing.assert_close(
        result.scores.double(), torch.where(response, expected, 0.0), atol=1e-5, rtol=1e-4
    )


def test_gradient_sums_tokens_per_unit(double_bert_reward, minilm_tokenizer):
    ids, attention, response = _batch(minilm_tokenizer, [("q", "unwatchable film")])
    tokens = tokenshape.attribute(double_bert_reward, ids, attention, response, method="gradient")
    words = tokenshape.attribute(
        double_bert_reward, ids, attention, response, method="gradient", unit="word"
    )
    assert words.unit_scores[0].shape == (2,)
    index = words.unit_index[0]
    for unit in range(2):
        expected = tokens.scores[0, index == unit].double().sum()
        torch.testing.assert_close(words.unit_scores[0][unit], expected, atol=1e-6, rtol=1e-5)


def test_gradient_batched_equals_per_example(double_bert_reward, minilm_tokenizer):
    ids, attention, response = _batch(minilm_tokenizer)
    batched = tokenshape.attribute(double_bert_reward, ids, attention, response, method="gradient")
    for b, pair in enumerate(PAIRS):
        single = tokenshape.attribute(
            double_bert_reward, *_batch(minilm_tokenizer, [pair]), method="gradient"
        )
        torch.testing.assert_close(
            batched.unit_scores[b], single.unit_scores[0], atol=1e-6, rtol=1e-5
        )


def test_gradient_on_a_decoder_reads_the_reward_from_input_ids():
    from tokenshape.models.policy import smollm2_tokenizer
    from tokenshape.models.tiny import tiny_llama_reward_model
    from tokenshape.reward import SequenceClassifierReward

    tokenizer = smollm2_tokenizer()
    reward = SequenceClassifierReward(tiny_llama_reward_model(tokenizer), tokenizer)
    encoded = tokenizer(["The movie was great", "Bad"], padding=True, return_tensors="pt")
    value, scores = reward.gradient_times_input(
        encoded["input_ids"], encoded["attention_mask"], baseline_id=None
    )
    torch.testing.assert_close(value, reward(encoded["input_ids"], encoded["attention_mask"]))
    assert scores.shape == encoded["input_ids"].shape
    padding = encoded["attention_mask"][1] == 0
    assert bool(padding.any())
    assert scores[1, padding].abs().max() == 0  # padding gets no gradient
    assert scores[0].abs().min() > 0


def test_gradient_needs_a_differentiable_reward(games, additive_game):
    ids, attention, response = games.make_batch([((2,), (5, 6))])
    with pytest.raises(InvalidArgumentError, match="reward_fn=.*gradient_times_input"):
        tokenshape.attribute(
            additive_game, ids, attention, response, method="gradient", masking=games.MASK_ID
        )
