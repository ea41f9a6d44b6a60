"""Reward functions: output checking and the two adapters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tokenshape
from tokenshape.errors import InvalidArgumentError, RewardFunctionError
from tokenshape.reward import (
    RewardFn,
    SequenceClassifierReward,
    StringScorerReward,
    check_reward_output,
)


def test_check_reward_output_accepts_floats():
    out = check_reward_output(torch.tensor([1.0, -2.5], dtype=torch.float16), 2)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, torch.tensor([1.0, -2.5], dtype=torch.float64))


@pytest.mark.parametrize(
    "values,pattern",
    [
        ([1.0, 2.0], r"returned list: expected a torch.Tensor of shape \(2,\)"),
        (np.zeros(2), r"returned ndarray"),
        (1.0, r"returned float"),
        (torch.zeros(2, 1), r"returned shape \(2, 1\): expected \(2,\)"),
        (torch.zeros(3), r"returned shape \(3,\)"),
        (torch.zeros(()), r"returned shape \(\)"),
        (torch.zeros(2, dtype=torch.long), r"returned dtype torch.int64: expected a float dtype"),
        (torch.tensor([1.0, math.nan]), r"returned non-finite values \[nan\] at rows \[1\]"),
        (torch.tensor([math.inf, 0.0]), r"returned non-finite values \[inf\] at rows \[0\]"),
    ],
)
def test_check_reward_output_rejects(values, pattern):
    with pytest.raises(RewardFunctionError, match="^rm " + pattern):
        check_reward_output(values, 2, name="rm")


def test_reward_fn_protocol(bert_reward, games):
    assert isinstance(bert_reward, RewardFn)
    assert isinstance(games.AnalyticGame(games.linear_values()), RewardFn)


def _bert_batch(tokenizer):
    encoded = tokenizer(
        ["great film", "a dull and far too long film"], padding=True, return_tensors="pt"
    )
    return encoded["input_ids"], encoded["attention_mask"]


def test_sequence_classifier_reward_reads_the_logits(tiny_bert, minilm_tokenizer):
    ids, attention = _bert_batch(minilm_tokenizer)
    with torch.no_grad():
        logits = tiny_bert(input_ids=ids, attention_mask=attention).logits
    difference = SequenceClassifierReward(tiny_bert, minilm_tokenizer, label=1, minus_label=0)
    single = SequenceClassifierReward(tiny_bert, minilm_tokenizer, label=0)
    torch.testing.assert_close(difference(ids, attention), logits[:, 1] - logits[:, 0])
    torch.testing.assert_close(single(ids, attention), logits[:, 0])
    assert difference(ids, attention).shape == (2,)
    assert difference.tokenizer is minilm_tokenizer
    assert difference.device == torch.device("cpu")
    assert difference.__name__ == "BertForSequenceClassification"


def test_sequence_classifier_reward_scoring_position(tiny_bert, minilm_tokenizer):
    assert SequenceClassifierReward(tiny_bert).scoring_position == "first"  # no score head

    class Decoderish(torch.nn.Module):
        config = type("Config", (), {"num_labels": 1})()
        score = torch.nn.Linear(2, 1)

    assert SequenceClassifierReward(Decoderish()).scoring_position == "last"


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"label": 2}, "label"),
        ({"label": -1}, "label"),
        ({"label": 1.0}, "label"),
        ({"minus_label": 5}, "minus_label"),
        ({"scoring_position": "middle"}, "scoring_position"),
    ],
)
def test_sequence_classifier_reward_bad_arguments(tiny_bert, kwargs, name):
    with pytest.raises(InvalidArgumentError, match=rf"{name}="):
        SequenceClassifierReward(tiny_bert, **kwargs)


def test_scoring_attention_rows_are_distributions(bert_reward, minilm_tokenizer):
    ids, attention = _bert_batch(minilm_tokenizer)
    reward, weights = bert_reward.scoring_attention(ids, attention)
    torch.testing.assert_close(reward, bert_reward(ids, attention), atol=1e-5, rtol=1e-5)
    assert weights.shape == ids.shape
    torch.testing.assert_close(weights.sum(1), torch.ones(2), atol=1e-5, rtol=1e-5)
    assert float(weights[~attention.bool()].abs().max()) < 1e-6
    assert bool((weights >= 0).all())


def test_sequence_classifier_reward_attribution_is_efficient(bert_reward, minilm_tokenizer):
    ids, attention = _bert_batch(minilm_tokenizer)
    response_mask = (
        attention.bool()
        & (ids != minilm_tokenizer.cls_token_id)
        & (ids != minilm_tokenizer.sep_token_id)
    )
    result = tokenshape.attribute(
        bert_reward, ids, attention, response_mask, method="exact", max_rows=64
    )
    assert bool((result.efficiency_error < 1e-5).all())
    torch.testing.assert_close(
        result.full_value.float(), bert_reward(ids, attention), atol=1e-5, rtol=1e-5
    )
    masked = torch.where(response_mask, minilm_tokenizer.mask_token_id, ids)
    torch.testing.assert_close(
        result.base_value.float(), bert_reward(masked, attention), atol=1e-5, rtol=1e-5
    )


def test_sequence_classifier_attribution_batched_equals_per_example(bert_reward, minilm_tokenizer):
    ids, attention = _bert_batch(minilm_tokenizer)
    response_mask = (
        attention.bool()
        & (ids != minilm_tokenizer.cls_token_id)
        & (ids != minilm_tokenizer.sep_token_id)
    )
    batched = tokenshape.attribute(
        bert_reward, ids, attention, response_mask, budget=32, max_rows=5
    )
    for b in range(2):
        keep = attention[b].bool()
        single = tokenshape.attribute(
            bert_reward,
            ids[b : b + 1, keep],
            attention[b : b + 1, keep],
            response_mask[b : b + 1, keep],
            budget=32,
        )
        torch.testing.assert_close(
            batched.unit_scores[b], single.unit_scores[0], atol=1e-5, rtol=1e-4
        )


# ----------------------------------------------------------------------------------------------
# StringScorerReward
# ----------------------------------------------------------------------------------------------


def test_string_scorer_decodes_attended_tokens_without_specials(minilm_tokenizer):
    texts = []

    def length(text):
        texts.append(text)
        return float(len(text))

    reward = StringScorerReward(length, minilm_tokenizer)
    ids = torch.tensor([minilm_tokenizer("the film was wonderful")["input_ids"] + [0, 0]])
    ids = torch.cat([ids, ids])
    ids[1, 2] = minilm_tokenizer.mask_token_id  # "film" hidden
    attention = (ids != 0).long()
    values = reward(ids, attention)
    assert texts == ["the film was wonderful", "the was wonderful"]
    torch.testing.assert_close(values, torch.tensor([22.0, 17.0], dtype=torch.float64))
    assert reward.__name__ == "length"
    assert reward.device == torch.device("cpu")


def test_string_scorer_batched(minilm_tokenizer):
    calls = []

    def batched(texts):
        calls.append(list(texts))
        return [t.count(" ") for t in texts]

    reward = StringScorerReward(batched, minilm_tokenizer, batched=True, name="spaces")
    ids = torch.tensor(
        [minilm_tokenizer("a b c")["input_ids"], minilm_tokenizer("a b d")["input_ids"]]
    )
    values = reward(ids, torch.ones_like(ids))
    assert len(calls) == 1 and calls[0] == ["a b c", "a b d"]
    torch.testing.assert_close(values, torch.tensor([2.0, 2.0], dtype=torch.float64))
    assert reward.__name__ == "spaces"


def test_string_scorer_errors(minilm_tokenizer):
    ids = torch.tensor([minilm_tokenizer("a b")["input_ids"]] * 2)
    with pytest.raises(RewardFunctionError, match="returned 1 scores for 2 texts"):
        StringScorerReward(lambda texts: [1.0], minilm_tokenizer, batched=True)(
            ids, torch.ones_like(ids)
        )
    with pytest.raises(RewardFunctionError, match="expected numbers"):
        StringScorerReward(lambda text: "good", minilm_tokenizer)(ids, torch.ones_like(ids))
    with pytest.raises(InvalidArgumentError, match="scorer="):
        StringScorerReward("vader", minilm_tokenizer)
    with pytest.raises(InvalidArgumentError, match="tokenizer=None"):
        StringScorerReward(len, None)


def test_string_scorer_nan_is_an_error(minilm_tokenizer):
    ids = torch.tensor([minilm_tokenizer("a b")["input_ids"]])
    response_mask = torch.tensor([[False, True, True, False]])
    reward = StringScorerReward(lambda text: math.nan if text == "" else 1.0, minilm_tokenizer)
    with pytest.raises(RewardFunctionError, match="non-finite"):
        tokenshape.attribute(reward, ids, torch.ones_like(ids), response_mask, method="exact")


def test_values_with_an_autograd_graph_are_detached(games):
    weight = torch.tensor(2.0, requires_grad=True)

    def differentiable(input_ids, attention_mask):
        return weight * ((input_ids != 77) & attention_mask.bool()).double().sum(1)

    ids, attention, response_mask = games.make_batch([([2], [5, 6, 7])])
    assert check_reward_output(differentiable(ids, attention), 1).requires_grad is False
    result = tokenshape.attribute(
        differentiable, ids, attention, response_mask, budget=8, masking=77
    )
    assert not result.scores.requires_grad and not result.full_value.requires_grad
    torch.testing.assert_close(result.unit_scores[0], torch.full((3,), 2.0, dtype=torch.float64))


class _FixedLogits(torch.nn.Module):
    """A classifier whose logits are fixed, in a given dtype."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.config = type("Config", (), {"num_labels": logits.shape[1], "pad_token_id": None})()
        self.logits = logits
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask):
        return type("Output", (), {"logits": self.logits})()


def test_half_precision_logits_are_converted_before_the_difference():
    # bf16 3.0 - 0.92578125 = 2.07421875 exactly in float32, but 2.078125 rounded in bf16.
    logits = torch.tensor([[0.92578125, 3.0]], dtype=torch.bfloat16)
    reward = SequenceClassifierReward(_FixedLogits(logits), label=1, minus_label=0)
    value = reward(torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.long))
    assert value.dtype == torch.float32
    assert float(value[0]) == 2.07421875
    assert float(logits[0, 1] - logits[0, 0]) == 2.078125  # what subtracting first would give


def test_scoring_positions_follow_the_decoder_rule():
    from tokenshape.reward import scoring_positions

    pad = 2
    ids = torch.tensor(
        [
            [5, 6, 7, pad],  # right padded, or ending with eos when pad = eos: read at 2
            [pad, pad, 5, 6],  # left padded: read at the last column
            [5, pad, 6, pad],  # a pad id inside the row counts as padding too
            [pad, pad, pad, pad],
        ]
    )
    assert scoring_positions(ids, position="last", pad_token_id=pad).tolist() == [2, 3, 2, 0]
    assert scoring_positions(ids, position="last").tolist() == [3, 3, 3, 3]
    assert scoring_positions(ids, position="first", pad_token_id=pad).tolist() == [0, 0, 0, 0]


def test_padding_token_ids_are_the_decoder_models_pad(tiny_bert):
    assert SequenceClassifierReward(tiny_bert).padding_token_ids == frozenset()  # reads [CLS]

    class Decoderish(torch.nn.Module):
        config = type("Config", (), {"num_labels": 1, "pad_token_id": 7})()
        score = torch.nn.Linear(2, 1)

    reward = SequenceClassifierReward(Decoderish())
    assert reward.pad_token_id == 7 and reward.padding_token_ids == frozenset({7})
