"""Players of the reward game: which units of the response a coalition switches on and off.

A unit index is a ``LongTensor[B, L]`` holding, for each token, the number of the unit it belongs
to (``0 .. M_b - 1`` in reading order) or ``-1`` for tokens that are not players (the prompt,
special tokens, padding). The prompt is never a player, so it is never masked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor

from tokenshape.errors import InvalidArgumentError, TokenShapeError

__all__ = ["UNITS", "token_char_spans", "unit_index"]

#: Unit names :func:`unit_index` derives by itself; a ``LongTensor[B, L]`` gives any other grouping
#: (chat turns, spans).
UNITS = ("token", "word", "sentence")

#: A word is a run of letters and digits, one Chinese or Japanese character, or one other visible
#: character (punctuation, an emoji with its modifiers).
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(
    rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s](?:[\ufe0f\U0001f3fb-\U0001f3ff]|\u200d[^\w\s])*"
)
#: Where a sentence ends: a run of newlines, a CJK terminator, or ``.!?`` (closing quotes and
#: brackets included) followed by whitespace or the end of the text.
_SENTENCE_END = re.compile(r"\n+|[。！？]+[」』”’)]*|[.!?…]+[\"'”’)\]]*(?=\s|$)")
#: A single letter before a period ("e.g.", "U.S.A.", and "e. g." as WordPiece decodes it): an
#: abbreviation, where no sentence ends (but at the end of the text or a line).
_ABBREVIATION = re.compile(r"(?:^|[\s(.])\w$")


def token_char_spans(
    tokenizer, token_ids: Sequence[int], *, skip_special_tokens: bool = False
) -> tuple[str, list[tuple[int, int]]]:
    """Decode tokens and locate each one in the decoded text, in time linear in their number.

    Tokens are decoded incrementally: each new token is decoded together with the tokens of the
    piece before it, and the new characters are what that adds (the context lets WordPiece
    ``##`` pieces and SentencePiece spaces decode as they do in the whole text). A token that only
    completes a character together with the next ones (a byte of a multi-byte character in
    byte-level BPE) gets an empty span where the character starts; the token that completes the
    character gets it. Works with any tokenizer that decodes, so it needs no offsets mapping.

    Args:
        tokenizer: a Hugging Face tokenizer.
        token_ids: the ``T`` token ids, in order.
        skip_special_tokens: decode with ``skip_special_tokens=True``: the tokens the tokenizer
            skips (special and added special tokens) get an empty span where they stand.

    Returns:
        (text, spans): the decoded text (``tokenizer.decode`` of the tokens, without clean-up of
        spaces) and, for each token, its ``(start, end)`` characters in it.

    Raises:
        TokenShapeError: the pieces do not add up to the decoding of the whole sequence.
    """
    ids = [int(token) for token in token_ids]

    def decode(tokens: list[int]) -> str:
        if not tokens:
            return ""
        return tokenizer.decode(
            tokens, skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False
        )

    spans = [(0, 0)] * len(ids)
    pieces: list[str] = []
    length = 0
    context, read = 0, 0  # ids[context:read] is the piece before; ids[read:] is pending
    for position in range(len(ids)):
        before = decode(ids[context:read])
        after = decode(ids[context : position + 1])
        last = position == len(ids) - 1
        if not last and (after.endswith("\ufffd") or not after.startswith(before)):
            continue  # a character still incomplete: the next token completes it
        piece = after[len(before) :]
        for pending in range(read, position):
            spans[pending] = (length, length)
        spans[position] = (length, length + len(piece))
        pieces.append(piece)
        length += len(piece)
        context, read = read, position + 1
    text = "".join(pieces)
    if text != decode(ids):
        raise TokenShapeError(
            f"{type(tokenizer).__name__} decodes tokens one piece at a time to {text[:60]!r} "
            f"but the whole sequence to {decode(ids)[:60]!r}: token spans need a tokenizer "
            "whose decoding of a sequence is the concatenation of its pieces"
        )
    return text, spans


def _sentence_bounds(text: str) -> list[tuple[int, int]]:
    """The ``(start, end)`` characters of each sentence of ``text``."""
    bounds, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        ends_text = match.end() == len(text) or text[match.end()] == "\n"
        if (
            match.group()[0] == "."
            and not ends_text
            and _ABBREVIATION.search(text[max(0, match.start() - 2) : match.start()])
        ):
            continue
        bounds.append((start, match.end()))
        start = match.end()
    if start < len(text):
        bounds.append((start, len(text)))
    return [(s, e) for s, e in bounds if text[s:e].strip()]


def _group_tokens(
    text: str, spans: list[tuple[int, int]], bounds: list[tuple[int, int]]
) -> list[int]:
    """The group of each token span, groups being ``bounds`` (``(start, end)`` in ``text``).

    A token belongs to the group holding its first visible character. A token with no visible
    character joins the group before it (trailing whitespace stays with its word or sentence;
    at the start, the first group), except a token with an empty span, a piece of a character
    that a later token completes, which joins that token's group.
    """
    group_of = [0] * len(text)
    for number, (start, end) in enumerate(bounds):
        group_of[start:end] = [number] * (end - start)
    visible = [None if c.isspace() else i for i, c in enumerate(text)]
    groups: list[int | None] = []
    for start, end in spans:
        first = next((i for i in visible[start:end] if i is not None), None)
        groups.append(None if first is None else group_of[first])
    # Empty spans take the next group with characters; whitespace the previous group.
    following: int | None = None
    for i in range(len(spans) - 1, -1, -1):
        if groups[i] is not None:
            following = groups[i]
        elif spans[i][0] == spans[i][1] and following is not None:
            groups[i] = following
    previous = next((g for g in groups if g is not None), 0)
    out = []
    for group in groups:
        previous = group if group is not None else previous
        out.append(previous)
    return out


def _unit_bounds(unit: str, text: str) -> list[tuple[int, int]]:
    if unit == "word":
        return [(m.start(), m.end()) for m in _WORD.finditer(text)]
    return _sentence_bounds(text)


def _renumber(index: Tensor) -> tuple[Tensor, Tensor]:
    """Make each row's unit numbers 0..M_b-1 in order of first appearance."""
    rows, counts = [], []
    for row in index.tolist():
        mapping: dict[int, int] = {}
        rows.append([mapping.setdefault(unit, len(mapping)) if unit >= 0 else -1 for unit in row])
        counts.append(len(mapping))
    out = torch.tensor(rows, dtype=torch.long).reshape(index.shape).to(index.device)
    return out, torch.tensor(counts, dtype=torch.long)


def unit_index(
    unit: str | Tensor,
    input_ids: Tensor,
    response_mask: Tensor,
    *,
    tokenizer=None,
) -> tuple[Tensor, Tensor]:
    """Number the players of each row.

    Args:
        unit: ``"token"``, ``"word"``, ``"sentence"``, or a ``LongTensor[B, L]`` of unit numbers
            (``-1`` = not a player) for any other grouping, such as chat turns.
        input_ids: ``B x L``.
        response_mask: ``B x L`` bool, True on response tokens.
        tokenizer: needed for ``"word"`` and ``"sentence"``.

    Returns:
        (index ``B x L`` long, n_units ``B`` long on the CPU): unit numbers ``0..M_b-1``
        (``-1`` off the players) and the number of units per row.
    """
    if isinstance(unit, Tensor):
        unit = unit.to(response_mask.device)
        if unit.shape != input_ids.shape:
            raise InvalidArgumentError(
                "unit", f"tensor of shape {tuple(unit.shape)}", f"shape {tuple(input_ids.shape)}"
            )
        if unit.is_floating_point():
            raise InvalidArgumentError("unit", f"tensor of dtype {unit.dtype}", "an integer tensor")
        outside = (unit >= 0) & ~response_mask
        if bool(outside.any()):
            raise InvalidArgumentError(
                "unit",
                f"units on {int(outside.sum())} tokens outside response_mask",
                "units only on response tokens (the prompt is never a player)",
            )
        return _renumber(torch.where(response_mask, unit.long(), -1))
    if unit not in UNITS:
        raise InvalidArgumentError("unit", unit, f"one of {UNITS} or a LongTensor[B, L]")
    if unit == "token":
        index = torch.cumsum(response_mask.long(), dim=1) - 1
        index = torch.where(response_mask, index, -1)
        return index, response_mask.long().sum(dim=1).cpu()
    if tokenizer is None:
        raise InvalidArgumentError(
            "tokenizer", None, f"a tokenizer to find {unit} boundaries (unit={unit!r})"
        )
    index = torch.full_like(input_ids, -1)
    for b in range(input_ids.shape[0]):
        positions = response_mask[b].nonzero().flatten()
        if positions.numel() == 0:
            continue
        text, spans = token_char_spans(tokenizer, input_ids[b, positions].tolist())
        groups = _group_tokens(text, spans, _unit_bounds(unit, text))
        index[b, positions] = torch.tensor(groups, dtype=torch.long, device=input_ids.device)
    return _renumber(index)
