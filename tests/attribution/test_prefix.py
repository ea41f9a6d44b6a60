"""Prefix differences: one forward on a decoder reward model, coalitions elsewhere."""

from __future__ import annotations

import pytest
import torch

import tokenshape
from tokenshape.errors import InvalidArgumentError

TEXTS = ["The movie was great fun", "I hated every minute of it", "Fine, I guess"]
PROMPT_TOKENS = 2


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from tokenshape.models.policy import smollm2_tokenizer

    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def llama_reward(smollm2_tokenizer):
    from tokenshape.models.tiny import tiny_llama_reward_model
    from tokenshape.reward import SequenceClassifierReward

    return SequenceClassifierReward(tiny_llama_reward_model(smollm2_tokenizer), smollm2_tokenizer)


def _decoder_batch(tokenizer, texts=TEXTS):
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    ids, attention = encoded["input_ids"], encoded["attention_mask"]
    response = attention.bool().clone()
    response[:, :PROMPT_TOKENS] = False
    return ids, attention, response


def _score_prefix(reward, ids, attention, end, pad_id):
    """The reward of row ``ids[:end + 1]`` scored on its own (the rest padded away)."""
    row, mask = ids.clone(), attention.clone()
    row[end + 1 :] = pad_id
    mask[end + 1 :] = 0
    return float(reward(row[None], mask[None])[0])


@pytest.mark.parametrize("unit", ["token", "word"])
def test_decoder_prefix_equals_scoring_each_prefix(llama_reward, smollm2_tokenizer, unit):
    ids, attention, response = _decoder_batch(smollm2_tokenizer)
    result = tokenshape.attribute(
        llama_reward, ids, attention, response, method="prefix", unit=unit
    )
    assert result.rows.tolist() == [1, 1, 1]
    pad = smollm2_tokenizer.pad_token_id
    for b in range(ids.shape[0]):
        units = result.unit_index[b]
        ends = [int((units == u).nonzero().max()) for u in range(int(units.max()) + 1)]
        values = [_score_prefix(llama_reward, ids[b], attention[b], PROMPT_TOKENS - 1, pad)]
        values += [_score_prefix(llama_reward, ids[b], attention[b], end, pad) for end in ends]
        expected = torch.tensor(values, dtype=torch.float64).diff()
        torch.testing.assert_close(result.unit_scores[b], expected, atol=1e-5, rtol=1e-4)
        assert float(result.base_value[b]) == pytest.approx(values[0], abs=1e-5)
    torch.testing.assert_close(
        result.full_value, llama_reward(ids, attention).double(), atol=1e-5, rtol=1e-5
    )
    assert float(result.efficiency_error.max()) < 1e-5


def test_decoder_prefix_batched_equals_per_example(llama_reward, smollm2_tokenizer):
    ids, attention, response = _decoder_batch(smollm2_tokenizer)
    batched = tokenshape.attribute(llama_reward, ids, attention, response, method="prefix")
    for b, text in enumerate(TEXTS):
        single = tokenshape.attribute(
            llama_reward, *_decoder_batch(smollm2_tokenizer, [text]), method="prefix"
        )
        torch.testing.assert_close(
            batched.unit_scores[b], single.unit_scores[0], atol=1e-5, rtol=1e-4
        )


def test_decoder_prefix_needs_a_prompt(llama_reward, smollm2_tokenizer):
    ids, attention, response = _decoder_batch(smollm2_tokenizer)
    response[1, 0] = True
    with pytest.raises(InvalidArgumentError, match="response_mask=.*row 1 starts its response"):
        tokenshape.attribute(llama_reward, ids, attention, response, method="prefix")


def test_prefix_of_an_additive_game_is_its_shapley_value(games, additive_game):
    ids, attention, response = games.make_batch(
        [((2, 3), (5, 6, 7, 8)), ((4,), (9, 10, 11))], padding="left"
    )
    result = tokenshape.attribute(
        additive_game, ids, attention, response, method="prefix", masking=games.MASK_ID
    )
    values = games.additive_values
    for b, response_ids in enumerate([(5, 6, 7, 8), (9, 10, 11)]):
        expected = torch.tensor([values[t] for t in response_ids], dtype=torch.float64)
        torch.testing.assert_close(result.unit_scores[b], expected)
    assert result.rows.tolist() == [5, 4]  # M + 1 coalitions: the empty prefix to the full one
    assert result.efficiency_error.max() < 1e-9


def test_prefix_gives_an_interaction_to_the_later_token(games, pair_game):
    # (5, 8) carry a bonus of 6 and (8, 11) one of 1: each goes to whichever comes later.
    ids, attention, response = games.make_batch([((2,), (8, 6, 5, 11))])
    result = tokenshape.attribute(
        pair_game, ids, attention, response, method="prefix", masking=games.MASK_ID
    )
    values = games.additive_values
    expected = torch.tensor(
        [values[8], values[6], values[5] + 6.0, values[11] + 1.0], dtype=torch.float64
    )
    torch.testing.assert_close(result.unit_scores[0], expected)
    assert float(result.base_value[0]) == pytest.approx(games.prompt_value)


def test_encoder_prefix_batched_equals_per_example(bert_reward, minilm_tokenizer):
    pairs = [("a", "the film was wonderful"), ("review:", "awful")]
    encoded = minilm_tokenizer(
        [p for p, _ in pairs], [r for _, r in pairs], padding=True, return_tensors="pt"
    )
    ids, attention = encoded["input_ids"], encoded["attention_mask"]
    response = (encoded["token_type_ids"] == 1) & (ids != minilm_tokenizer.sep_token_id)
    response &= attention.bool()
    batched = tokenshape.attribute(bert_reward, ids, attention, response, method="prefix")
    assert batched.rows.tolist() == [int(response[b].sum()) + 1 for b in range(2)]
    for b in range(2):
        keep = attention[b].bool()
        single = tokenshape.attribute(
            bert_reward,
            ids[b, keep][None],
            attention[b, keep][None],
            response[b, keep][None],
            method="prefix",
        )
        torch.testing.assert_close(
            batched.unit_scores[b], single.unit_scores[0], atol=1e-5, rtol=1e-4
        )
