"""Tokenise prompt and response texts for a reward model, marking the response tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tokenshape.errors import InvalidArgumentError

__all__ = ["EncodedPairs", "encode_pairs", "tokens_ending_in"]


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


def tokens_ending_in(offsets: Tensor, start: int | Tensor, end: int | None = None) -> Tensor:
    """Which tokens belong to the text between characters ``start`` and ``end``.

    A token belongs to the part of a text where its last character lies. A byte-level BPE token
    that starts in the prompt's trailing space (``"Review: "`` + ``"Great"`` gives ``"ĠGreat"``)
    thus belongs to the response, whose first word it carries; hiding it hides that space too.

    Args:
        offsets: ``... x 2`` character spans of tokens (``end > start`` for tokens with text).
        start: the first character of the part (or a ``B x 1`` tensor of them for ``B x L``
            offsets).
        end: one past its last character (None: the end of the text).

    Returns:
        ``...`` bool, True on the tokens with text whose last character is in ``[start, end)``.
    """
    last = offsets[..., 1] - 1
    inside = (offsets[..., 1] > offsets[..., 0]) & (last >= start)
    return inside if end is None else inside & (last < end)


def encode_pairs(
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    max_length: int | None = None,
    separator: str = "",
) -> EncodedPairs:
    """Tokenise ``prompt + separator + response`` and mark the response's tokens.

    A token belongs to the response when its last character is in it
    (:func:`tokens_ending_in`); special tokens never do. Truncation (``max_length``) cuts the end of the text.

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
    response_mask = is_text & tokens_ending_in(offsets, start_of)
    return EncodedPairs(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        response_mask=response_mask,
        offsets=offsets,
        texts=texts,
        response_starts=starts,
    )
