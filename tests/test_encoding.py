"""Prompt + response texts as the reward model reads them: which tokens are the response's."""

from __future__ import annotations

import pytest
import torch

from tokenshape.encoding import encode_pairs, tokens_ending_in
from tokenshape.integrations.trl import ShapedReward
from tokenshape.reward import StringScorerReward
from tokenshape.shaping import ShapingParams

PROMPTS = ["Review: ", "Critique:", "评论：", "Film "]
RESPONSES = ["Great film overall.", " 我喜欢这部电影！", "非常好看 😀", "\tdull, e.g. too long"]


@pytest.fixture(scope="module")
def byte_tokenizer():
    from tokenshape.models.policy import smollm2_tokenizer

    return smollm2_tokenizer()


def test_a_token_belongs_where_its_last_character_lies():
    offsets = torch.tensor([[0, 6], [6, 7], [7, 13], [13, 13], [13, 18]])
    assert tokens_ending_in(offsets, 8).tolist() == [False, False, True, False, True]
    assert tokens_ending_in(offsets, 0, 7).tolist() == [True, True, False, False, False]


def test_the_first_response_word_after_a_trailing_space_is_a_player(byte_tokenizer):
    # "Review: " + "Great": the byte-level token "ĠGreat" starts in the prompt's space.
    batch = encode_pairs(byte_tokenizer, ["Review: "], ["Great film overall."])
    tokens = byte_tokenizer.convert_ids_to_tokens(batch.input_ids[0][batch.response_mask[0]])
    assert tokens == ["ĠGreat", "Ġfilm", "Ġoverall", "."]


@pytest.mark.parametrize("tokenizer_name", ["byte", "wordpiece"])
def test_response_tokens_decode_to_the_response(byte_tokenizer, minilm_tokenizer, tokenizer_name):
    tokenizer = byte_tokenizer if tokenizer_name == "byte" else minilm_tokenizer
    batch = encode_pairs(tokenizer, PROMPTS, RESPONSES)
    for row, response in enumerate(RESPONSES):
        ids = batch.input_ids[row][batch.response_mask[row]].tolist()
        decoded = tokenizer.decode(ids).replace(" ", "")
        expected = tokenizer.decode(tokenizer(response, add_special_tokens=False)["input_ids"])
        assert decoded == expected.replace(" ", "")
        # Every character of the response is covered by a response token.
        spans = batch.offsets[row][batch.response_mask[row]].tolist()
        covered = set().union(*(range(s, e) for s, e in spans))
        start = batch.response_starts[row]
        visible = {start + i for i, c in enumerate(response) if not c.isspace()}
        assert visible <= covered


def test_shaped_reward_marks_the_same_response_tokens(byte_tokenizer):
    # One rule for both paths: ShapedReward's completion tokens are encode_pairs' response.
    scorer = StringScorerReward(
        lambda text: float(text.count("好") + text.count("Great")), byte_tokenizer
    )
    shaped = ShapedReward(scorer, ShapingParams({"occlusion": 1.0}), tokenizer=byte_tokenizer)
    shaped(PROMPTS, RESPONSES)
    batch = encode_pairs(byte_tokenizer, PROMPTS, RESPONSES)
    attribution = shaped.last.attributions["occlusion"]
    assert torch.equal(attribution.response_mask, batch.response_mask)
