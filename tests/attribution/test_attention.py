"""Attention credit from a real (tiny, random) BERT classifier."""

from __future__ import annotations

import pytest
import torch

import tokenshape
from tokenshape.errors import InvalidArgumentError

TEXTS = [("review:", "the film was wonderful"), ("a", "but the ending was awful, sadly")]


def _batch(tokenizer):
    encoded = tokenizer(
        [p for p, _ in TEXTS], [r for _, r in TEXTS], padding=True, return_tensors="pt"
    )
    ids, attention = encoded["input_ids"], encoded["attention_mask"]
    response_mask = (
        (encoded["token_type_ids"] == 1) & (ids != tokenizer.sep_token_id) & attention.bool()
    )
    return ids, attention, response_mask


def test_attention_scores_distribute_the_full_reward(bert_reward, minilm_tokenizer):
    ids, attention, response_mask = _batch(minilm_tokenizer)
    result = tokenshape.attribute(bert_reward, ids, attention, response_mask, method="attention")
    full = bert_reward(ids, attention).double()
    torch.testing.assert_close(result.full_value, full, atol=1e-6, rtol=1e-5)
    assert torch.equal(result.base_value, torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(result.scores.sum(1).double(), full, atol=1e-5, rtol=1e-5)
    for b in range(2):
        shares = result.unit_scores[b] / result.full_value[b]
        assert bool((shares >= 0).all())
        assert float(shares.sum()) == pytest.approx(1.0)
        assert int(shares.gt(0).sum()) == int(response_mask[b].sum())  # softmax: all positive
    assert result.rows.tolist() == [1, 1]
    assert result.scores[~response_mask].abs().max() == 0


def test_attention_shares_follow_the_scoring_position_attention(bert_reward, minilm_tokenizer):
    ids, attention, response_mask = _batch(minilm_tokenizer)
    _, weights = bert_reward.scoring_attention(ids, attention)
    result = tokenshape.attribute(bert_reward, ids, attention, response_mask, method="attention")
    for b in range(2):
        on = weights[b][response_mask[b]].double()
        expected = result.full_value[b] * on / on.sum()
        torch.testing.assert_close(result.unit_scores[b], expected, atol=1e-6, rtol=1e-5)


def test_attention_restores_the_attention_implementation(bert_reward, tiny_bert, minilm_tokenizer):
    ids, attention, response_mask = _batch(minilm_tokenizer)
    assert tiny_bert.config._attn_implementation == "sdpa"
    tokenshape.attribute(bert_reward, ids, attention, response_mask, method="attention")
    assert tiny_bert.config._attn_implementation == "sdpa"


def test_attention_restores_the_implementation_after_an_error(
    bert_reward, tiny_bert, minilm_tokenizer
):
    ids, attention, _ = _batch(minilm_tokenizer)
    with pytest.raises((RuntimeError, ValueError, IndexError)):
        bert_reward.scoring_attention(ids[:, :3], attention)  # mismatched shapes fail inside
    assert tiny_bert.config._attn_implementation == "sdpa"


def test_attention_with_word_units(bert_reward, minilm_tokenizer):
    encoded = minilm_tokenizer(["q"], ["unwatchable film"], return_tensors="pt")
    ids, attention = encoded["input_ids"], encoded["attention_mask"]
    response_mask = (encoded["token_type_ids"] == 1) & (ids != minilm_tokenizer.sep_token_id)
    n_tokens = int(response_mask.sum())
    assert n_tokens > 2  # "unwatchable" is split into pieces
    result = tokenshape.attribute(
        bert_reward, ids, attention, response_mask, method="attention", unit="word"
    )
    assert result.unit_scores[0].shape == (2,)
    torch.testing.assert_close(
        result.unit_scores[0].sum(), result.full_value[0], atol=1e-6, rtol=1e-5
    )
    pieces = result.scores[0][response_mask[0]][: n_tokens - 1]
    assert torch.allclose(pieces, pieces[0].expand_as(pieces))


def test_attention_needs_a_reward_with_scoring_attention(games):
    def plain(input_ids, attention_mask):
        return attention_mask.double().sum(1)

    ids, attention, response_mask = games.make_batch([([2], [5, 6])])
    with pytest.raises(InvalidArgumentError, match="reward_fn.*scoring_attention"):
        tokenshape.attribute(plain, ids, attention, response_mask, method="attention", masking=1)


def test_last_position_attention_on_left_padding(tiny_bert, minilm_tokenizer):
    from tokenshape.reward import SequenceClassifierReward

    reward = SequenceClassifierReward(tiny_bert, minilm_tokenizer, scoring_position="last")
    ids = torch.tensor([[0, 0, 101, 2023, 102], [101, 2023, 2143, 2001, 102]])
    attention = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    _, weights = reward.scoring_attention(ids, attention)
    _, full = reward.scoring_attention(ids[1:], attention[1:])
    # Rows are distributions over the attended positions; padding gets none.
    torch.testing.assert_close(weights.sum(1), torch.ones(2))
    assert float(weights[0, :2].abs().max()) == 0.0
    torch.testing.assert_close(weights[1], full[0])


def test_attention_needs_no_tokenizer_but_checks_masking(tiny_bert, minilm_tokenizer):
    from tokenshape.reward import SequenceClassifierReward

    ids, attention, response_mask = _batch(minilm_tokenizer)
    reward = SequenceClassifierReward(tiny_bert)  # no tokenizer: no replacement token known
    result = tokenshape.attribute(reward, ids, attention, response_mask, method="attention")
    torch.testing.assert_close(
        result.scores.sum(1).double(), result.full_value, atol=1e-5, rtol=1e-5
    )
    with pytest.raises(InvalidArgumentError, match=r"masking='blank'"):
        tokenshape.attribute(
            reward, ids, attention, response_mask, method="attention", masking="blank"
        )
    # A method that hides units does need the replacement token.
    with pytest.raises(InvalidArgumentError, match=r"tokenizer=None.*masking='auto'"):
        tokenshape.attribute(reward, ids, attention, response_mask, method="occlusion")
