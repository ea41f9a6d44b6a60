"""Readable text for each token of a sequence, shared by every view.

Tokenizers mark word boundaries inside their pieces: WordPiece prefixes a word's continuation with
``##``, SentencePiece writes a leading space as ``▁``, byte-level BPE writes it as ``Ġ`` and a line
break as ``Ċ``. Views show the text a reader would see instead, and make a token made only of
whitespace visible with a symbol (``·`` space, ``↵`` line break, ``⇥`` tab) so it never renders as
an empty box.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["TokenCell", "edge_padding", "sequence_cells", "token_texts", "visible_text"]

_WHITESPACE_SYMBOLS = {" ": "·", "\n": "↵", "\t": "⇥", "\r": "␍"}
_EMPTY_SYMBOL = "∅"


def _decoded(input_ids: Sequence[int], tokenizer: Any) -> list[tuple[str, bool]]:
    """``(text, continues)`` per token; ``continues`` marks a WordPiece ``##`` continuation."""
    ids = [int(token_id) for token_id in input_ids]
    if tokenizer is None:
        return [(str(token_id), False) for token_id in ids]
    if hasattr(tokenizer, "convert_ids_to_tokens"):
        pieces = list(tokenizer.convert_ids_to_tokens(ids))
    else:
        pieces = [None] * len(ids)
    decoded = []
    for token_id, piece in zip(ids, pieces):
        if piece is not None and piece.startswith("##") and len(piece) > 2:
            decoded.append((piece[2:], True))
        elif piece is not None and piece.startswith("▁"):
            decoded.append((piece.replace("▁", " "), False))
        else:
            decoded.append(
                (tokenizer.decode([token_id], clean_up_tokenization_spaces=False), False)
            )
    return decoded


def token_texts(input_ids: Sequence[int], tokenizer: Any = None) -> list[str]:
    """The text of each token, as a reader would see it in the decoded sequence.

    Args:
        input_ids: ``L`` token ids of one sequence (a list or a 1-D tensor).
        tokenizer: a Hugging Face tokenizer (``decode`` and, if present,
            ``convert_ids_to_tokens``), or None to show each id as its number.

    Returns:
        ``L`` strings: ``"##ing"`` becomes ``"ing"``, ``"▁the"`` and ``"Ġthe"`` become ``" the"``,
        ``"Ċ"`` becomes ``"\\n"``; special tokens keep their names (``"[CLS]"``).
    """
    return [text for text, _ in _decoded(input_ids, tokenizer)]


def visible_text(text: str) -> str:
    """``text`` with line breaks and tabs shown as symbols, and blank text made visible.

    A token made only of whitespace becomes one symbol per character (``" "`` -> ``"·"``); inside
    other text, line breaks and tabs become symbols and spaces are kept. The empty string becomes
    ``"∅"``.
    """
    if not text:
        return _EMPTY_SYMBOL
    if text.isspace():
        return "".join(_WHITESPACE_SYMBOLS.get(char, "·") for char in text)
    return text.replace("\r", "␍").replace("\n", "↵").replace("\t", "⇥")


def edge_padding(
    input_ids: Sequence[int], response_mask: Sequence[bool], pad_token_id: int | None
) -> tuple[int, int]:
    """The span of a row left once leading and trailing padding is dropped.

    Padding is a run of ``pad_token_id`` at either end of the row outside the response; a pad id
    inside the row, or inside the response, is kept.

    Args:
        input_ids: ``L`` token ids.
        response_mask: ``L`` booleans.
        pad_token_id: the tokenizer's pad id, or None to keep every token.

    Returns:
        ``(start, stop)``: positions ``start <= j < stop`` are shown.
    """
    ids = [int(token_id) for token_id in input_ids]
    mask = [bool(flag) for flag in response_mask]
    start, stop = 0, len(ids)
    if pad_token_id is None:
        return start, stop
    while start < stop and ids[start] == pad_token_id and not mask[start]:
        start += 1
    while stop > start and ids[stop - 1] == pad_token_id and not mask[stop - 1]:
        stop -= 1
    return start, stop


@dataclass(frozen=True)
class TokenCell:
    """One token as a view draws it.

    Attributes:
        position: the token's column in the attribution's ``B x L`` tensors.
        text: the token's text with whitespace made visible.
        in_response: whether the token is a player (scored) or prompt / special (greyed).
        continues: whether the token continues the previous token's word (WordPiece ``##``).
        value: the token's score; NaN stays NaN; meaningless when not ``in_response``.
    """

    position: int
    text: str
    in_response: bool
    continues: bool
    value: float


def sequence_cells(
    input_ids: Sequence[int],
    response_mask: Sequence[bool],
    values: Sequence[float],
    tokenizer: Any = None,
) -> list[TokenCell]:
    """The cells of one row, leading and trailing padding dropped.

    Args:
        input_ids: ``L`` token ids.
        response_mask: ``L`` booleans, True on the response.
        values: ``L`` scores.
        tokenizer: decodes the tokens (None: ids as numbers, nothing dropped).

    Returns:
        One :class:`TokenCell` per shown token, in order.
    """
    ids = [int(token_id) for token_id in input_ids]
    mask = [bool(flag) for flag in response_mask]
    start, stop = edge_padding(ids, mask, getattr(tokenizer, "pad_token_id", None))
    decoded = _decoded(ids[start:stop], tokenizer)
    return [
        TokenCell(
            position=j,
            text=visible_text(text),
            in_response=mask[j],
            continues=continues,
            value=float(values[j]),
        )
        for j, (text, continues) in zip(range(start, stop), decoded)
    ]
