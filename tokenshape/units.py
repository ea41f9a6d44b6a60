"""Players of the reward game: which units of the response a coalition switches on and off.

A unit index is a ``LongTensor[B, L]`` holding, for each token, the number of the unit it belongs
to (``0 .. M_b - 1`` in reading order) or ``-1`` for tokens that are not players (the prompt,
special tokens, padding). The prompt is never a player, so it is never masked.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from tokenshape.errors import InvalidArgumentError

__all__ = ["UNITS", "token_char_spans", "unit_index"]

#: Unit names :func:`unit_index` derives by itself; a ``LongTensor[B, L]`` gives any other grouping
#: (chat turns, spans).
UNITS = ("token", "word", "sentence")

_WORD = re.compile(r"\w+|[^\w\s]")
_SENTENCE = re.compile(r"[^.!?\n]*(?:[.!?]+|\n+|$)")


def token_char_spans(tokenizer, token_ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """Decode tokens and locate each one in the decoded text.

    Works with any tokenizer that decodes (WordPiece, byte-level BPE, SentencePiece) by decoding
    growing prefixes, so it needs no offsets mapping.

    Args:
        tokenizer: a Hugging Face tokenizer.
        token_ids: the ``T`` token ids, in order.

    Returns:
        (text, spans): the decoded text and, for each token, its ``(start, end)`` characters.
    """
    spans: list[tuple[int, int]] = []
    previous = 0
    text = ""
    for end in range(1, len(token_ids) + 1):
        text = tokenizer.decode(token_ids[:end], clean_up_tokenization_spaces=False)
        start = min(previous, len(text))
        spans.append((start, len(text)))
        previous = len(text)
    return text, spans


def _group_by_pattern(text: str, spans: list[tuple[int, int]], pattern: re.Pattern) -> list[int]:
    """The group number of each token span, groups being the pattern's matches in ``text``."""
    bounds = [(m.start(), m.end()) for m in pattern.finditer(text) if m.group().strip()]
    groups = []
    for start, end in spans:
        first_char = start
        while first_char < end and text[first_char].isspace():
            first_char += 1
        group = next(
            (i for i, (g_start, g_end) in enumerate(bounds) if g_start <= first_char < g_end),
            None,
        )
        if group is None:  # whitespace-only or undecodable token: joins the group before it
            group = groups[-1] if groups else 0
        groups.append(group)
    # Renumber so groups are 0..K-1 in reading order with no gaps.
    renumbered, seen = [], {}
    for group in groups:
        renumbered.append(seen.setdefault(group, len(seen)))
    return renumbered


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
    pattern = _WORD if unit == "word" else _SENTENCE
    index = torch.full_like(input_ids, -1)
    for b in range(input_ids.shape[0]):
        positions = response_mask[b].nonzero().flatten()
        if positions.numel() == 0:
            continue
        text, spans = token_char_spans(tokenizer, input_ids[b, positions].tolist())
        groups = _group_by_pattern(text, spans, pattern)
        index[b, positions] = torch.tensor(groups, dtype=torch.long, device=input_ids.device)
    return _renumber(index)
