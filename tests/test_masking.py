"""How hidden units are hidden: replacement tokens and removal with re-packing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import tokenshape
from tokenshape.errors import InvalidArgumentError
from tokenshape.masking import Masking, is_left_padded, resolve_masking

CLS, SEP, PAD = 101, 102, 0


def _tokenizer(special=(), **ids):
    names = {f"{name}_token_id": None for name in ("mask", "unk", "pad", "eos", "bos")}
    names.update({f"{name}_token_id": value for name, value in ids.items()})
    return SimpleNamespace(all_special_ids=list(special), **names)


def test_resolve_with_the_minilm_tokenizer(minilm_tokenizer):
    assert resolve_masking("auto", minilm_tokenizer) == Masking(remove=False, token_id=103)
    assert resolve_masking("mask", minilm_tokenizer).token_id == 103
    assert resolve_masking("unk", minilm_tokenizer).token_id == 100
    assert resolve_masking("pad", minilm_tokenizer).token_id == 0
    assert resolve_masking("remove", minilm_tokenizer) == Masking(remove=True, pad_id=0)
    assert resolve_masking(7, minilm_tokenizer) == Masking(remove=False, token_id=7)


@pytest.mark.parametrize(
    "ids,expected",
    [
        ({"mask": 4, "unk": 3, "pad": 0}, ("mask", 4)),
        ({"unk": 3, "pad": 0}, ("unk", 3)),
        ({"mask": 0, "unk": 9, "pad": 0}, ("unk", 9)),  # the mask token is the pad token
        ({"unk": 2, "eos": 2, "pad": 2, "bos": 1}, ("bos", 1)),  # Llama-3 style, pad = eos
        ({"eos": 7, "pad": 6, "special": [6, 7, 8]}, ("eos", 7)),  # Qwen2-Instruct style
        ({"eos": 6, "pad": 6, "special": [6, 7, 8]}, ("special", 7)),  # Qwen2 base style
    ],
)
def test_auto_picks_a_token_other_than_pad(ids, expected):
    masking = resolve_masking("auto", _tokenizer(**ids))
    assert (masking.token_name, masking.token_id) == expected


def test_auto_never_picks_a_token_the_model_reads_as_padding():
    # The model's own pad token (config.pad_token_id) counts, not only the tokenizer's.
    tokenizer = _tokenizer(unk=3, eos=5, pad=None)
    assert resolve_masking("auto", tokenizer).token_id == 3
    assert resolve_masking("auto", tokenizer, padding_ids={3}).token_id == 5
    with pytest.raises(InvalidArgumentError, match=r"unk token 3.*not read as padding"):
        resolve_masking("unk", tokenizer, padding_ids={3})
    with pytest.raises(InvalidArgumentError, match=r"id token 5.*not read as padding"):
        resolve_masking(5, tokenizer, padding_ids={5})


def test_auto_raises_naming_the_choices_when_every_token_is_padding():
    # GPT-2 style: pad = unk = eos = bos.
    gpt2 = _tokenizer(unk=9, eos=9, bos=9, pad=9, special=[9])
    with pytest.raises(InvalidArgumentError, match=r"masking='remove'.*token id|remove.*id of a"):
        resolve_masking("auto", gpt2)
    assert resolve_masking("remove", gpt2) == Masking(remove=True, pad_id=9)


def test_numpy_integer_masking_is_a_token_id():
    np = pytest.importorskip("numpy")
    assert resolve_masking(np.int64(7), None) == Masking(remove=False, token_id=7)
    with pytest.raises(InvalidArgumentError, match="masking"):
        resolve_masking(np.int64(-1), None)


def test_resolve_errors():
    with pytest.raises(InvalidArgumentError, match=r"masking='auto'.*does not read as padding"):
        resolve_masking("auto", _tokenizer())
    with pytest.raises(InvalidArgumentError, match=r"masking='mask'.*no mask token"):
        resolve_masking("mask", _tokenizer(pad=0))
    with pytest.raises(InvalidArgumentError, match=r"tokenizer=None.*masking='unk'"):
        resolve_masking("unk", None)
    with pytest.raises(InvalidArgumentError, match=r"masking=-3.*>= 0"):
        resolve_masking(-3, None)
    with pytest.raises(InvalidArgumentError, match=r"masking='delete'"):
        resolve_masking("delete", None)
    assert resolve_masking("remove", None) == Masking(remove=True, pad_id=None)


def test_replacement_keeps_positions():
    ids = torch.tensor([[CLS, 5, 6, 7, SEP], [CLS, 8, 9, SEP, PAD]])
    attention = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    keep = torch.tensor([[True, False, True, False, True], [True, True, False, True, True]])
    out_ids, out_attention = Masking(remove=False, token_id=103).apply(ids, attention, keep)
    assert out_ids.tolist() == [[CLS, 103, 6, 103, SEP], [CLS, 8, 103, SEP, PAD]]
    assert torch.equal(out_attention, attention)


def _right_padded():
    ids = torch.tensor([[CLS, 2, 3, 10, 11, 12, 13, SEP], [CLS, 2, 20, 21, SEP, PAD, PAD, PAD]])
    attention = (ids != PAD).long()
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[0, [4, 6]] = False  # hide 11 and 13
    keep[1, 2] = False  # hide 20
    return ids, attention, keep


def test_removal_right_padding_exact_ids():
    ids, attention, keep = _right_padded()
    out_ids, out_attention = Masking(remove=True, pad_id=PAD).apply(ids, attention, keep)
    assert out_ids.tolist() == [[CLS, 2, 3, 10, 12, SEP], [CLS, 2, 21, SEP, PAD, PAD]]
    assert out_attention.tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]
    assert out_attention.dtype == attention.dtype


def test_removal_left_padding_exact_ids():
    # Left-padded rows keep the batch's width: each kept token keeps its distance to the end.
    ids = torch.tensor([[CLS, 2, 3, 10, 11, 12, 13, SEP], [PAD, PAD, PAD, CLS, 2, 20, 21, SEP]])
    attention = (ids != PAD).long()
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[0, [4, 6]] = False
    keep[1, 5] = False
    assert is_left_padded(attention)
    out_ids, out_attention = Masking(remove=True, pad_id=PAD).apply(ids, attention, keep)
    assert out_ids.tolist() == [
        [PAD, PAD, CLS, 2, 3, 10, 12, SEP],
        [PAD, PAD, PAD, PAD, CLS, 2, 21, SEP],
    ]
    assert out_attention.tolist() == [[0, 0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1]]


def test_removal_writes_the_pad_token_into_vacated_slots():
    # A removed token must not stay in a padding slot: decoder classifiers locate their scoring
    # position as the last token that is not the pad token.
    ids, attention, keep = _right_padded()
    out_ids, out_attention = Masking(remove=True, pad_id=PAD).apply(ids, attention, keep)
    assert not bool(((out_ids != PAD) & ~out_attention.bool()).any())
    unfilled, _ = Masking(remove=True).apply(ids, attention, keep)
    assert unfilled[1].tolist() == [CLS, 2, 21, SEP, 20, PAD]  # the documented None behaviour


def test_removal_follows_the_given_padding_side():
    # Rows without padding carry no side of their own: the batch's side is passed in.
    ids = torch.tensor([[CLS, 10, 11, 12, SEP], [CLS, 13, 14, 15, SEP]])
    attention = torch.ones_like(ids)
    keep = torch.tensor([[True, False, False, True, True], [True, True, True, True, True]])
    left, left_attention = Masking(remove=True, pad_id=PAD).apply(
        ids, attention, keep, left_padded=True
    )
    assert left.tolist() == [[PAD, PAD, CLS, 12, SEP], [CLS, 13, 14, 15, SEP]]  # full width
    assert left_attention.tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]
    right, _ = Masking(remove=True, pad_id=PAD).apply(ids, attention, keep, left_padded=False)
    assert right.tolist() == [[CLS, 12, SEP, PAD, PAD], [CLS, 13, 14, 15, SEP]]


def test_removal_drops_columns_only_padding_fills():
    ids = torch.tensor([[CLS, 10, 11, SEP], [CLS, 12, 13, SEP]])
    keep = torch.tensor([[True, False, True, True], [True, True, False, True]])
    out_ids, out_attention = Masking(remove=True, pad_id=PAD).apply(ids, torch.ones_like(ids), keep)
    assert out_ids.tolist() == [[CLS, 11, SEP], [CLS, 12, SEP]]
    assert out_attention.shape == (2, 3)


class _Recorder:
    """A reward that records each row it is given (attended ids, in order)."""

    def __init__(self):
        self.rows: list[tuple[list[int], list[int]]] = []

    def __call__(self, input_ids, attention_mask):
        for row, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            self.rows.append((row, mask))
        return attention_mask.double().sum(1)


@pytest.mark.parametrize("padding", ["right", "left"])
@pytest.mark.parametrize("max_rows", [1, 3, 64])
def test_removal_in_the_game_keeps_the_prompt(games, padding, max_rows):
    prompts, responses = [[2, 3, 4], [2]], [[5, 6, 7], [8, 9]]
    ids, attention, response_mask = games.make_batch(
        list(zip(prompts, responses)), padding=padding, suffix=[SEP]
    )
    recorder = _Recorder()
    tokenshape.attribute(
        recorder,
        ids,
        attention,
        response_mask,
        method="exact",
        masking="remove",
        tokenizer=_tokenizer(pad=PAD),
        max_rows=max_rows,
    )
    assert len(recorder.rows) == 8 + 4
    seen = {0: set(), 1: set()}
    for row, mask in recorder.rows:
        kept = [token for token, on in zip(row, mask) if on]
        sequence = 0 if kept[:3] == prompts[0] else 1
        prompt = prompts[sequence]
        assert kept[: len(prompt)] == prompt and kept[-1] == SEP  # prompt and scoring token kept
        middle = kept[len(prompt) : -1]
        assert set(middle) <= set(responses[sequence])
        assert middle == sorted(middle)  # order kept
        seen[sequence].add(tuple(middle))
        # Padding stays on the batch's side and holds the pad token.
        attended = torch.tensor(mask).bool()
        if padding == "left":
            assert bool(attended[-1]) and attended.tolist() == sorted(attended.tolist())
        else:
            assert bool(attended[0]) and attended.tolist() == sorted(
                attended.tolist(), reverse=True
            )
        assert all(token == PAD for token, on in zip(row, mask) if not on)
    assert len(seen[0]) == 8 and len(seen[1]) == 4  # every coalition once


def test_replacement_in_the_game_hides_only_response_units(games):
    ids, attention, response_mask = games.make_batch([([2, 3], [5, 6, 7])], suffix=[SEP])
    recorder = _Recorder()
    tokenshape.attribute(recorder, ids, attention, response_mask, method="exact", masking=77)
    for row, mask in recorder.rows:
        assert row[:2] == [2, 3] and row[-1] == SEP
        assert all(token in (original, 77) for token, original in zip(row[2:5], [5, 6, 7]))
        assert mask == [1] * 6
    assert {tuple(row[2:5]) for row, _ in recorder.rows} == {
        (a, b, c) for a in (5, 77) for b in (6, 77) for c in (7, 77)
    }
