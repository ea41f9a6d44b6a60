"""Players of the game: token, word, sentence and explicit units."""

from __future__ import annotations

import itertools

import pytest
import torch

import tokenshape
from tokenshape.errors import InvalidArgumentError
from tokenshape.units import token_char_spans, unit_index

TEXT = "the film was wonderful but the ending was awful. I left early!"
#: MiniLM's WordPiece tokens of TEXT (uncased), one token per word or punctuation mark.
TOKENS = [
    "the",
    "film",
    "was",
    "wonderful",
    "but",
    "the",
    "ending",
    "was",
    "awful",
    ".",
    "i",
    "left",
    "early",
    "!",
]


def _encode(tokenizer, prompt, response, padding_side="right"):
    """Prompt and response as a pair, padded; the response mask covers the response's tokens."""
    previous, tokenizer.padding_side = tokenizer.padding_side, padding_side
    try:
        encoded = tokenizer(prompt, response, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = previous
    ids, attention = encoded["input_ids"], encoded["attention_mask"]
    response_mask = (
        (encoded["token_type_ids"] == 1) & (ids != tokenizer.sep_token_id) & attention.bool()
    )
    return ids, attention, response_mask


def test_minilm_tokens(minilm_tokenizer):
    ids = minilm_tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert minilm_tokenizer.convert_ids_to_tokens(ids) == TOKENS


def test_token_units():
    response_mask = torch.tensor([[False, True, True, False], [True, True, True, True]])
    index, n_units = unit_index("token", torch.zeros(2, 4, dtype=torch.long), response_mask)
    assert index.tolist() == [[-1, 0, 1, -1], [0, 1, 2, 3]]
    assert n_units.tolist() == [2, 4]


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_word_and_sentence_units(minilm_tokenizer, padding_side):
    ids, _, response_mask = _encode(
        minilm_tokenizer,
        ["review:", "a much longer prompt than the other one"],
        [TEXT, "good."],
        padding_side,
    )
    words, n_words = unit_index("word", ids, response_mask, tokenizer=minilm_tokenizer)
    sentences, n_sentences = unit_index("sentence", ids, response_mask, tokenizer=minilm_tokenizer)
    assert words[0][response_mask[0]].tolist() == list(range(14))
    assert sentences[0][response_mask[0]].tolist() == [0] * 10 + [1] * 4
    assert words[1][response_mask[1]].tolist() == [0, 1]  # "good", "."
    assert sentences[1][response_mask[1]].tolist() == [0, 0]
    assert n_words.tolist() == [14, 2] and n_sentences.tolist() == [2, 1]
    for index in (words, sentences):
        assert bool((index[~response_mask] == -1).all())  # prompt, specials and padding


def test_word_pieces_share_a_word(minilm_tokenizer):
    text = "an unwatchable, overlong mess"
    ids = torch.tensor([minilm_tokenizer(text)["input_ids"]])
    tokens = minilm_tokenizer.convert_ids_to_tokens(ids[0].tolist())
    assert tokens == [
        "[CLS]",
        "an",
        "un",
        "##watch",
        "##able",
        ",",
        "over",
        "##long",
        "mess",
        "[SEP]",
    ]
    response_mask = torch.ones_like(ids, dtype=torch.bool)
    response_mask[0, [0, -1]] = False
    index, n_units = unit_index("word", ids, response_mask, tokenizer=minilm_tokenizer)
    assert index[0].tolist() == [-1, 0, 1, 1, 1, 2, 3, 3, 4, -1]
    assert n_units.tolist() == [5]


def test_token_char_spans_cover_the_text(minilm_tokenizer):
    ids = minilm_tokenizer("an unwatchable, overlong mess. Yes!", add_special_tokens=False)[
        "input_ids"
    ]
    text, spans = token_char_spans(minilm_tokenizer, ids)
    assert text == "an unwatchable, overlong mess. yes!"
    assert len(spans) == len(ids)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))  # contiguous
    assert [text[s:e].strip() for s, e in spans][1:4] == ["un", "watch", "able"]


def test_word_units_in_attribution_share_their_score(additive_game, minilm_tokenizer):
    # A word-level game through the real tokenizer: each word's tokens share its score equally.
    ids = torch.tensor([minilm_tokenizer("an unwatchable, overlong mess")["input_ids"]])
    attention = torch.ones_like(ids)
    response_mask = torch.ones_like(ids, dtype=torch.bool)
    response_mask[0, [0, -1]] = False

    def length_reward(input_ids, attention_mask):
        kept = (input_ids != minilm_tokenizer.mask_token_id) & attention_mask.bool()
        return kept.double().sum(1)

    result = tokenshape.attribute(
        length_reward,
        ids,
        attention,
        response_mask,
        method="exact",
        unit="word",
        tokenizer=minilm_tokenizer,
    )
    # Each word is worth its number of tokens (additive), shared back one per token.
    torch.testing.assert_close(
        result.unit_scores[0], torch.tensor([1.0, 3.0, 1.0, 2.0, 1.0], dtype=torch.float64)
    )
    torch.testing.assert_close(result.scores[0], torch.tensor([0.0] + [1.0] * 8 + [0.0]))
    assert int(result.rows[0]) == 2**5


def test_explicit_turn_units(additive_game, games):
    # Two turns of a dialogue response: tokens 5-7 then 8-11; a turn separator (id 12) is no player.
    ids, attention, response_mask = games.make_batch([([2, 3], [5, 6, 7, 12, 8, 9, 10, 11])])
    turns = torch.tensor([[-1, -1, 7, 7, 7, -1, 3, 3, 3, 3]])
    index, n_units = unit_index(turns, ids, response_mask)
    assert index.tolist() == [[-1, -1, 0, 0, 0, -1, 1, 1, 1, 1]]  # renumbered in reading order
    assert n_units.tolist() == [2]
    result = tokenshape.attribute(
        additive_game,
        ids,
        attention,
        response_mask,
        method="exact",
        unit=turns,
        masking=games.MASK_ID,
    )
    value = games.additive_values
    first, second = value[5] + value[6] + value[7], value[8] + value[9] + value[10] + value[11]
    torch.testing.assert_close(
        result.unit_scores[0], torch.tensor([first, second], dtype=torch.float64)
    )
    expected = [0, 0] + [first / 3] * 3 + [0] + [second / 4] * 4
    torch.testing.assert_close(result.scores[0], torch.tensor(expected, dtype=torch.float32))
    # The separator is never hidden: its value 2.0 stays in the base value.
    assert float(result.base_value[0]) == pytest.approx(0.1 + 2 * 0.5 + value[12])
    assert int(result.rows[0]) == 4


def test_explicit_units_may_skip_response_tokens_but_not_touch_the_prompt(games):
    ids, _, response_mask = games.make_batch([([2, 3], [5, 6, 7])])
    with pytest.raises(
        InvalidArgumentError, match=r"unit=.*outside response_mask.*prompt is never a player"
    ):
        unit_index(torch.tensor([[0, -1, 0, 1, 1]]), ids, response_mask)


def test_explicit_units_bad_shape_and_dtype(games):
    ids, _, response_mask = games.make_batch([([2, 3], [5, 6, 7])])
    with pytest.raises(InvalidArgumentError, match=r"unit=.*shape \(1, 4\).*shape \(1, 5\)"):
        unit_index(torch.zeros(1, 4, dtype=torch.long), ids, response_mask)
    with pytest.raises(InvalidArgumentError, match=r"unit=.*torch.float32.*integer"):
        unit_index(torch.zeros(1, 5), ids, response_mask)


def test_explicit_units_with_no_player_in_a_row(games):
    ids, attention, response_mask = games.make_batch([([2, 3], [5, 6, 7])])
    with pytest.raises(InvalidArgumentError, match=r"unit=.*no unit in rows \[0\]"):
        tokenshape.attribute(
            lambda i, a: a.double().sum(1),
            ids,
            attention,
            response_mask,
            unit=torch.full_like(ids, -1),
            masking=games.MASK_ID,
        )


# ----------------------------------------------------------------------------------------------
# Byte-level BPE (the real SmolLM2 tokenizer), multilingual text and emoji
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def byte_tokenizer():
    from tokenshape.models.policy import smollm2_tokenizer

    return smollm2_tokenizer()


def _units(tokenizer, text: str, unit: str) -> list[str]:
    """The text of each unit of ``text`` as a whole response."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    index, _ = unit_index(
        unit, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.bool), tokenizer=tokenizer
    )
    groups: dict[int, list[int]] = {}
    for token, number in zip(ids, index[0].tolist()):
        groups.setdefault(number, []).append(token)
    return [tokenizer.decode(groups[n]) for n in sorted(groups)]


def _prefix_spans(tokenizer, ids: list[int]) -> list[tuple[int, int]]:
    """The reference: decode every prefix; a token that leaves its character incomplete
    (the prefix ends in U+FFFD) gets an empty span where the character starts."""
    spans, previous = [], 0
    for end in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:end], clean_up_tokenization_spaces=False)
        if text.endswith("\ufffd"):
            spans.append((previous, previous))
            continue
        spans.append((previous, len(text)))
        previous = len(text)
    return spans


MULTILINGUAL = [
    "我喜欢这部电影，非常好看。演员也很棒！",
    " Great 😀 movie, loved it! 👍🏽 Ça m'a plu.",
    "Tab\there,  two  spaces\n\nand newlines.",
    "素晴らしい映画でした。또 보고 싶어요!",
]


@pytest.mark.parametrize("text", MULTILINGUAL)
def test_token_char_spans_match_prefix_decoding(byte_tokenizer, minilm_tokenizer, text):
    for tokenizer in (byte_tokenizer, minilm_tokenizer):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        decoded, spans = token_char_spans(tokenizer, ids)
        assert decoded == tokenizer.decode(ids, clean_up_tokenization_spaces=False)
        assert spans == _prefix_spans(tokenizer, ids)


def test_token_char_spans_decode_a_bounded_window_per_token(byte_tokenizer):
    # Linear: each token is decoded with the piece before it, never with the whole prefix.
    ids = byte_tokenizer(" ".join(MULTILINGUAL * 8), add_special_tokens=False)["input_ids"]
    decoded_tokens = []

    class Counting:
        all_special_ids = byte_tokenizer.all_special_ids

        def decode(self, tokens, **options):
            decoded_tokens.append(len(tokens))
            return byte_tokenizer.decode(tokens, **options)

    text, _ = token_char_spans(Counting(), ids)
    assert text == byte_tokenizer.decode(ids)
    assert max(decoded_tokens[:-1]) <= 12  # the last call checks the whole text once
    assert sum(decoded_tokens) <= 12 * len(ids) + len(ids)


def test_token_char_spans_skip_special_tokens(byte_tokenizer):
    ids = byte_tokenizer(" great movie", add_special_tokens=False)["input_ids"]
    eos = byte_tokenizer.eos_token_id
    text, spans = token_char_spans(byte_tokenizer, [*ids, eos, eos], skip_special_tokens=True)
    assert text == " great movie"
    assert spans[-2:] == [(len(text), len(text))] * 2
    # An added special token outside all_special_ids is skipped as decode skips it.
    added = byte_tokenizer.convert_tokens_to_ids("<jupyter_start>")
    assert added not in byte_tokenizer.all_special_ids
    text, spans = token_char_spans(
        byte_tokenizer, [ids[0], added, *ids[1:]], skip_special_tokens=True
    )
    assert text == " great movie" and spans[1] == (spans[0][1], spans[0][1])


def test_token_char_spans_refuse_pieces_that_do_not_add_up():
    class Rewriting:  # a decoder that rewrites long texts as a whole
        all_special_ids = ()

        def decode(self, tokens, **options):
            return "-".join(str(t) for t in tokens) if len(tokens) < 3 else "rewritten"

    with pytest.raises(tokenshape.TokenShapeError, match="concatenation of its pieces"):
        token_char_spans(Rewriting(), [1, 2, 3])


@pytest.mark.parametrize(
    "text,unit,expected",
    [
        ("我喜欢这部电影，好看。", "word", list("我喜欢这部电影，好看。")),
        (
            "我喜欢这部电影，非常好看。演员也很棒！",
            "sentence",
            ["我喜欢这部电影，非常好看。", "演员也很棒！"],
        ),
        (" Great 😀 movie 👍🏽!", "word", [" Great", " 😀", " movie", " 👍🏽", "!"]),
        ("tab\there", "word", ["tab\t", "here"]),
        ("First one.\n\n\nSecond one.", "sentence", ["First one.\n\n\n", "Second one."]),
        ("See e.g. U.S.A. here. Next!", "sentence", ["See e.g. U.S.A. here.", " Next!"]),
        ("Plan it... Then go?! Yes", "sentence", ["Plan it...", " Then go?!", " Yes"]),
    ],
)
def test_units_of_byte_level_text(byte_tokenizer, text, unit, expected):
    assert _units(byte_tokenizer, text, unit) == expected


def test_units_of_wordpiece_text_with_unknown_characters(minilm_tokenizer):
    # MiniLM reads the emoji as [UNK], which is a word of its own; "e. g." stays one sentence.
    text = "great 😀 movie, e.g. the end. bad!"
    assert _units(minilm_tokenizer, text, "word") == [
        "great", "[UNK]", "movie", ",", "e", ".", "g", ".", "the", "end", ".", "bad", "!"
    ]  # fmt: skip
    assert _units(minilm_tokenizer, text, "sentence") == [
        "great [UNK] movie, e. g. the end.",
        "bad!",
    ]
