"""How a coalition hides the units outside it: replace their tokens, or remove them.

* Replacement keeps the sequence's length and positions; each hidden token becomes one
  replacement token. ``"auto"`` picks the tokenizer's mask token, else its unknown token, else its
  pad token, skipping a candidate that equals the pad token while another exists: a decoder reward
  model reads the last non-pad token, so padding ids inside a row would move its scoring position.
* Removal deletes the hidden tokens and re-packs the row (shorter rows, a different game: its
  Shapley values are those of the text without the words, not of the text with blanks). The
  scoring token is a special or prompt token in the usual layouts and so is never removed. Rows
  keep the padding side of the batch they come from, and the slots the removed tokens leave hold
  the tokenizer's pad token: a decoder classifier finds its scoring position as the last token
  that is not the pad token, so a removed token left in a padding slot would move it.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """

    remove: bool
    token_id: int | None = None
    pad_id: int | None = None

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
            (input_ids, attention_mask), ``R x L`` for replacement, ``R x L'`` (L' <= L, columns
            holding only padding dropped) for removal.
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
        width = int(attended.sum(dim=1).max())
        if left_padded:
            return ids[:, length - width :], mask[:, length - width :]
        return ids[:, :width], mask[:, :width]


def is_left_padded(attention_mask: Tensor) -> bool:
    """Whether a batch is left-padded: some row starts with padding and every row ends attended.

    Args:
        attention_mask: ``B x L``.
    """
    attended = attention_mask.bool()
    return bool((~attended[:, 0]).any()) and bool(attended[:, -1].all())


def _candidate(tokenizer, name: str) -> int | None:
    return getattr(tokenizer, f"{name}_token_id", None) if tokenizer is not None else None


def check_masking(masking: str | int) -> None:
    """Check the form of the user's ``masking`` argument (a known name or a token id >= 0)."""
    if isinstance(masking, bool) or not isinstance(masking, (str, int)):
        raise InvalidArgumentError("masking", masking, f"one of {MASKING_NAMES} or a token id")
    if isinstance(masking, int) and masking < 0:
        raise InvalidArgumentError("masking", masking, "a token id >= 0")
    if isinstance(masking, str) and masking not in MASKING_NAMES:
        raise InvalidArgumentError("masking", masking, f"one of {MASKING_NAMES} or a token id")


def resolve_masking(masking: str | int, tokenizer=None) -> Masking:
    """Turn the user's ``masking`` argument into a :class:`Masking`.

    Args:
        masking: ``"auto"``, ``"mask"``, ``"unk"``, ``"pad"``, ``"remove"`` or a token id.
        tokenizer: where the named tokens come from.
    """
    check_masking(masking)
    if isinstance(masking, int):
        return Masking(remove=False, token_id=masking)
    if masking == "remove":
        pad = _candidate(tokenizer, "pad")
        return Masking(remove=True, pad_id=None if pad is None else int(pad))
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
        return Masking(remove=False, token_id=int(token_id))
    pad = _candidate(tokenizer, "pad")
    found = [_candidate(tokenizer, name) for name in ("mask", "unk", "pad")]
    found = [token for token in found if token is not None]
    preferred = [token for token in found if token != pad] or found
    if not preferred:
        raise InvalidArgumentError(
            "masking", masking, "a token id, or a tokenizer with a mask, unk or pad token"
        )
    return Masking(remove=False, token_id=int(preferred[0]))
