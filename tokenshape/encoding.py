"""Tokenise prompt and response texts for a reward model, marking the response tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tokenshape.errors import InvalidArgumentError

__all__ = ["EncodedPairs", "encode_pairs"]


@dataclass
class EncodedPairs:
    """A batch of prompt + response texts as the reward model reads them.

    Attributes:
        input_ids: ``B x L``.
        attention_mask: ``B x L``.
        response_mask: ``B x L`` bool, True on tokens whose characters lie in the response.
        offsets: ``B x L x 2`` long, character span of each token in ``texts`` (0, 0 for special
            tokens and padding).
        texts: the ``B`` full texts (prompt followed by response).
        response_starts: ``B`` character index where each response begins in its text.
    """

    input_ids: Tensor
    attention_mask: Tensor
    response_mask: Tensor
    offsets: Tensor
    texts: list[str]
    response_starts: list[int]


def encode_pairs(
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    max_length: int | None = None,
    separator: str = "",
) -> EncodedPairs:
    """Tokenise ``prompt + separator + response`` and mark the response's tokens.

    A token belongs to the response when its first character is at or after the response's
    start; special tokens never do. Truncation (``max_length``) cuts the end of the text.

    Args:
        tokenizer: a fast Hugging Face tokenizer (it must return offsets).
        prompts: ``B`` prompt strings.
        responses: ``B`` response strings.
        max_length: truncate longer sequences to this many tokens.
        separator: text put between prompt and response.

    Returns:
        :class:`EncodedPairs`.
    """
    if len(prompts) != len(responses):
        raise InvalidArgumentError(
            "responses", f"{len(responses)} texts", f"{len(prompts)}, one per prompt"
        )
    if not getattr(tokenizer, "is_fast", False):
        raise InvalidArgumentError(
            "tokenizer",
            type(tokenizer).__name__,
            "a fast tokenizer that returns character offsets: load it with "
            "AutoTokenizer.from_pretrained(..., use_fast=True)",
        )
    texts = [prompt + separator + response for prompt, response in zip(prompts, responses)]
    starts = [len(prompt) + len(separator) for prompt in prompts]
    batch = tokenizer(
        texts,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        padding=True,
        truncation=max_length is not None,
        max_length=max_length,
        return_tensors="pt",
    )
    offsets = batch["offset_mapping"].long()
    start_of = torch.tensor(starts, dtype=torch.long)[:, None]
    is_text = (batch["special_tokens_mask"] == 0) & (batch["attention_mask"] == 1)
    is_text &= offsets[..., 1] > offsets[..., 0]
    response_mask = is_text & (offsets[..., 0] >= start_of)
    return EncodedPairs(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        response_mask=response_mask,
        offsets=offsets,
        texts=texts,
        response_starts=starts,
    )
