"""How a coalition hides the units outside it: replace their tokens, or remove them.

* Replacement keeps the sequence's length and positions; each hidden token becomes one
  replacement token. ``"auto"`` picks the first of the tokenizer's mask, unknown, end-of-sequence
  and beginning-of-sequence tokens, then its other special tokens, that is neither the tokenizer's
  pad token nor a token the model reads as padding: a decoder classifier reads the last token
  that is not its pad token, so a pad id written over trailing response tokens would move the
  position it reads (BERT: ``[MASK]``; Llama-2, SmolLM2: unk; Llama-3, Qwen2-Instruct, no unk:
  eos or another special token that is not the pad token). When none is left (GPT-2 with
  pad = unk = eos = bos) it raises, naming the choices: ``"remove"`` or a token id.
* Removal deletes the hidden tokens and re-packs the row (a different game: its Shapley values
  are those of the text without the words, not of the text with blanks). The scoring token is a
  special or prompt token in the usual layouts and so is never removed. Rows keep the padding
  side of the batch they come from, and the slots the removed tokens leave hold the tokenizer's
  pad token: a decoder classifier finds its scoring position as the last token that is not the
  pad token, so a removed token left in a padding slot would move it. Right-padded rows are
  trimmed to the widest row of their chunk (positions start at 0 either way); left-padded rows
  keep the batch's width, so every token keeps the position it has in the batch whatever chunk
  the row lands in (models with absolute positions, GPT-2, read them), and v(all) is the
  model's reward of the row in the batch.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from numbers import Integral

import torch
from torch import Tensor

from tokenshape.errors import InvalidArgumentError

__all__ = [
    "MASKING_NAMES",
    "Masking",
    "check_masking",
    "is_left_padded",
    "resolve_masking",
]

MASKING_NAMES = ("auto", "mask", "unk", "pad", "remove")


@dataclass(frozen=True)
class Masking:
    """A resolved masking strategy.

    Attributes:
        remove: delete hidden tokens and re-pack, instead of replacing them.
        token_id: the replacement token (None when ``remove``).
        pad_id: with ``remove``, the token written into the padding slots that removed tokens
            leave (None: those slots keep the removed tokens' ids, unattended).
        token_name: which token ``token_id`` is (``"mask"``, ``"unk"``, ``"eos"``, ...,
            ``"special"`` for another special token, ``"id"`` for a given id); not compared.
    """

    remove: bool
    token_id: int | None = None
    pad_id: int | None = None
    token_name: str | None = field(default=None, compare=False)

    def apply(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        keep_mask: Tensor,
        *,
        left_padded: bool | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Hide the tokens where ``keep_mask`` is False.

        Args:
            input_ids: ``R x L``.
            attention_mask: ``R x L``.
            keep_mask: ``R x L`` bool; False on the tokens of hidden units.
            left_padded: with ``remove``, pack kept tokens to the right (True) or the left
                (False); None decides from these rows (see :func:`is_left_padded`).

        Returns:
            (input_ids, attention_mask), ``R x L`` for replacement and left-padded removal,
            ``R x L'`` (L' <= L, trailing columns holding only padding dropped) for right-padded
            removal.
        """
        if not self.remove:
            return torch.where(keep_mask, input_ids, self.token_id), attention_mask
        attended = attention_mask.bool() & keep_mask
        length = input_ids.shape[1]
        columns = torch.arange(length, device=input_ids.device).expand_as(input_ids)
        if left_padded is None:
            left_padded = is_left_padded(attention_mask)
        # Sort kept tokens to the front (right padding) or the back (left padding), order kept.
        if left_padded:
            key = torch.where(attended, columns + length, columns)
        else:
            key = torch.where(attended, columns, columns + length)
        order = key.argsort(dim=1, stable=True)
        ids = input_ids.gather(1, order)
        mask = attended.gather(1, order).to(attention_mask.dtype)
        if self.pad_id is not None:
            ids = torch.where(mask.bool(), ids, self.pad_id)
        if left_padded:
            return ids, mask
        width = int(attended.sum(dim=1).max())
        return ids[:, :width], mask[:, :width]


def is_left_padded(attention_mask: Tensor) -> bool:
    """Whether a batch is left-padded: some row starts with padding and every row ends attended.

    Args:
        attention_mask: ``B x L``.
    """
    attended = attention_mask.bool()
    return bool((~attended[:, 0]).any()) and bool(attended[:, -1].all())


def _candidate(tokenizer, name: str) -> int | None:
    token = getattr(tokenizer, f"{name}_token_id", None) if tokenizer is not None else None
    return None if token is None else int(token)


def check_masking(masking: str | int) -> None:
    """Check the form of the user's ``masking`` argument (a known name or a token id >= 0)."""
    if isinstance(masking, bool) or not isinstance(masking, (str, Integral)):
        raise InvalidArgumentError("masking", masking, f"one of {MASKING_NAMES} or a token id")
    if isinstance(masking, Integral) and masking < 0:
        raise InvalidArgumentError("masking", masking, "a token id >= 0")
    if isinstance(masking, str) and masking not in MASKING_NAMES:
        raise InvalidArgumentError("masking", masking, f"one of {MASKING_NAMES} or a token id")


_AUTO_ORDER = ("mask", "unk", "eos", "bos")


def resolve_masking(
    masking: str | int, tokenizer=None, *, padding_ids: Collection[int] = ()
) -> Masking:
    """Turn the user's ``masking`` argument into a :class:`Masking`.

    Args:
        masking: ``"auto"``, ``"mask"``, ``"unk"``, ``"pad"``, ``"remove"`` or a token id.
        tokenizer: where the named tokens come from.
        padding_ids: token ids the model reads as padding (a decoder classifier's pad token);
            no replacement may be one of them.

    Raises:
        InvalidArgumentError: an unknown name, a token the tokenizer lacks, a replacement the
            model reads as padding, or ``"auto"`` finding no safe token.
    """
    check_masking(masking)
    padding = {int(token) for token in padding_ids}
    if isinstance(masking, Integral):
        return _replacement(int(masking), "id", padding)
    if masking == "remove":
        pad = _candidate(tokenizer, "pad")
        return Masking(remove=True, pad_id=pad)
    if tokenizer is None:
        raise InvalidArgumentError(
            "tokenizer",
            None,
            f"a tokenizer to look up the replacement token of masking={masking!r}",
        )
    if masking != "auto":
        token_id = _candidate(tokenizer, masking)
        if token_id is None:
            raise InvalidArgumentError(
                "masking", masking, f"a token the tokenizer has (it has no {masking} token)"
            )
        return _replacement(token_id, masking, padding)
    unsafe = padding | {_candidate(tokenizer, "pad")}
    named = [(name, _candidate(tokenizer, name)) for name in _AUTO_ORDER]
    others = [("special", int(token)) for token in getattr(tokenizer, "all_special_ids", [])]
    for name, token in named + others:
        if token is not None and token not in unsafe:
            return Masking(remove=False, token_id=token, token_name=name)
    shown = ", ".join(f"{name}={token}" for name, token in named)
    raise InvalidArgumentError(
        "masking",
        masking,
        f"a token to hide units with that the model does not read as padding, but the "
        f"tokenizer has none ({shown}, pad={_candidate(tokenizer, 'pad')}, model padding "
        f"{sorted(padding)}): pass masking='remove' (delete hidden units, a different game) or "
        "the id of a token the model reads as text",
    )


def _replacement(token_id: int, name: str, padding: set[int]) -> Masking:
    if token_id in padding:
        raise InvalidArgumentError(
            "masking",
            f"{name} token {token_id}",
            "a token the model does not read as padding: it scores the last token that is not "
            "its pad token, so hidden trailing tokens would move where it reads the row; use "
            "masking='auto', 'remove' or another token id",
        )
    return Masking(remove=False, token_id=token_id, token_name=name)
