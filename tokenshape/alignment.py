"""Token scores moved from the reward model's tokenizer to the policy's, through characters.

When the reward model reads text with a tokenizer other than the policy's, attribute on the reward
model's tokens and map the scores onto the policy's tokens through character offsets in the
response text. Each reward token's score is split over the policy tokens whose characters overlap
its own, in proportion to the number of shared characters; a reward token that shares no character
with any policy token gives its whole score to the nearest one. Every score is handed out in full,
so each sequence's sum is preserved (up to float64 rounding), and with it the shaping invariant
that a sequence's token rewards sum to its reward.

Character offsets come from fast tokenizers (``return_offsets_mapping=True``). Slow tokenizers
have none (transformers 5 silently ignores the request), so they are refused with an error saying
what to do instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tokenshape.attribution.api import _spread_to_tokens
from tokenshape.errors import InvalidArgumentError
from tokenshape.types import TokenAttribution
from tokenshape.units import token_char_spans

__all__ = ["align_scores", "align_to_policy", "token_spans"]

Span = tuple[int, int]


def _check_spans(name: str, spans: Sequence[Sequence[int]]) -> list[Span]:
    checked = []
    for i, span in enumerate(spans):
        if len(span) != 2 or not 0 <= int(span[0]) <= int(span[1]):
            raise InvalidArgumentError(
                f"{name}[{i}]", span, "a (start, end) pair with 0 <= start <= end"
            )
        checked.append((int(span[0]), int(span[1])))
    return checked


def align_scores(
    scores: Tensor,
    rm_spans: Sequence[Sequence[int]],
    policy_spans: Sequence[Sequence[int]],
) -> Tensor:
    """Move one sequence's token scores onto another tokenization of the same text.

    Reward token i gives policy token j the share
    ``overlap(i, j) / sum_k overlap(i, k)`` of its score, where ``overlap`` counts the characters
    two spans share. A reward token that overlaps no policy token (an empty span, or characters no
    policy token covers) gives its score to the policy token nearest in characters (the first one
    on a tie). When both span lists are equal the scores are returned unchanged, even where spans
    overlap each other (the byte pieces of one character).

    Args:
        scores: ``T_rm`` scores of the reward model's tokens.
        rm_spans: ``T_rm`` ``(start, end)`` character spans of the reward model's tokens.
        policy_spans: ``T_policy`` ``(start, end)`` character spans of the policy's tokens, in the
            same text.

    Returns:
        ``T_policy`` float64 on ``scores``' device; its sum equals ``scores.sum()`` up to float64
        rounding.
    """
    if not isinstance(scores, Tensor) or scores.ndim != 1:
        shown = f"tensor of shape {tuple(scores.shape)}" if isinstance(scores, Tensor) else scores
        raise InvalidArgumentError(
            "scores", shown, "a 1-d tensor, one score per reward-model token"
        )
    rm = _check_spans("rm_spans", rm_spans)
    policy = _check_spans("policy_spans", policy_spans)
    if len(rm) != scores.shape[0]:
        raise InvalidArgumentError(
            "rm_spans", f"{len(rm)} spans", f"{scores.shape[0]}, one per score"
        )
    values = scores.to(torch.float64)
    if rm == policy:
        return values.clone()
    if not rm:
        return values.new_zeros(len(policy))
    if not policy:
        raise InvalidArgumentError(
            "policy_spans", policy_spans, "at least one policy token to receive the scores"
        )
    device = scores.device
    rm_start, rm_end = torch.tensor(rm, dtype=torch.float64, device=device).T[:, :, None]
    pol_start, pol_end = torch.tensor(policy, dtype=torch.float64, device=device).T[:, None, :]
    overlap = (torch.minimum(rm_end, pol_end) - torch.maximum(rm_start, pol_start)).clamp(min=0)
    total = overlap.sum(dim=1, keepdim=True)  # T_rm x 1
    # Overlaps count whole characters, so a positive total is at least 1.
    share = overlap / total.clamp(min=1)  # T_rm x T_policy
    lonely = (total[:, 0] == 0).nonzero().flatten()
    if lonely.numel():
        gap = torch.maximum(pol_start - rm_end[lonely], rm_start[lonely] - pol_end).clamp(min=0)
        share[lonely, gap.argmin(dim=1)] = 1.0
    return values @ share


def _require_fast(name: str, tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise InvalidArgumentError(
            name,
            type(tokenizer).__name__,
            "a fast tokenizer (tokenizer.is_fast is True), the only kind with character offsets: "
            "load it with transformers.AutoTokenizer.from_pretrained (use_fast=True before "
            "transformers 5); or, when the reward model reads the policy's own tokens, attribute "
            "on those tokens directly (unit='token', 'word' or a unit index over them) and skip "
            "alignment",
        )


def token_spans(tokenizer, text: str, *, name: str = "tokenizer") -> tuple[list[int], list[Span]]:
    """Tokenize ``text`` without special tokens and locate each token in it.

    Args:
        tokenizer: a fast Hugging Face tokenizer.
        text: the text to tokenize.
        name: how the tokenizer is called in an error message.

    Returns:
        (ids, spans): the ``T`` token ids and each token's ``(start, end)`` characters in ``text``.

    Raises:
        InvalidArgumentError: ``tokenizer`` is not a fast tokenizer.
    """
    _require_fast(name, tokenizer)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    return list(encoding["input_ids"]), [(int(s), int(e)) for s, e in encoding["offset_mapping"]]


def _ids(values) -> list[int]:
    return values.tolist() if isinstance(values, Tensor) else [int(v) for v in values]


def _rm_spans(rm_tokenizer, text: str, rm_ids: list[int], row: int) -> list[Span]:
    """Spans of the reward model's response tokens in ``text``.

    The tokens are matched in order with the tokenization of ``text``, unknown tokens (an emoji
    read as ``[UNK]``) included; a special token that the text does not hold (an end-of-sequence
    token in the response mask) gets an empty span where it stands, so its score goes to the
    nearest policy token.
    """
    special = set(rm_tokenizer.all_special_ids)
    encoded, spans = token_spans(rm_tokenizer, text, name="rm_tokenizer")
    out, position, used = [], 0, 0
    for token in rm_ids:
        if used < len(encoded) and encoded[used] == token:
            out.append(spans[used])
            position = spans[used][1]
            used += 1
        elif token in special:
            out.append((position, position))
        else:
            raise InvalidArgumentError(
                f"texts[{row}]",
                text,
                f"the response text the reward model read: its rm_tokenizer tokens must be the "
                f"attribution's response tokens of row {row} (or start with them, when the "
                "reward model truncated the text)",
            )
    return out


def _policy_spans(policy_tokenizer, text: str, policy_ids: list[int], row: int) -> list[Span]:
    """Spans of the policy's non-special tokens in ``text``.

    Offsets come from the fast tokenizer when re-tokenizing ``text`` gives these tokens. A sampled
    policy can produce a tokenization the tokenizer would not (e.g. "mov" + "ie" for "movie"); those
    tokens are located by decoding growing prefixes instead.
    """
    special = set(policy_tokenizer.all_special_ids)
    content = [token for token in policy_ids if token not in special]
    encoded, spans = token_spans(policy_tokenizer, text, name="policy_tokenizer")
    if encoded == content:
        return spans
    decoded, spans = token_char_spans(policy_tokenizer, content, skip_special_tokens=True)
    if decoded != text:
        raise InvalidArgumentError(
            f"texts[{row}]",
            text,
            f"the text of policy_token_ids[{row}] (its decoding with skip_special_tokens=True)",
        )
    return spans


def align_to_policy(
    attribution: TokenAttribution,
    texts: Sequence[str],
    policy_token_ids: Sequence[Sequence[int] | Tensor] | Tensor,
    *,
    rm_tokenizer,
    policy_tokenizer,
) -> list[Tensor]:
    """Scores of an attribution on the reward model's tokens, moved onto the policy's tokens.

    Both tokenizations are located in the same response text with the tokenizers' character
    offsets, and each row's scores are moved by :func:`align_scores`. The policy's special tokens
    (end of sequence, padding) get 0, so a padded ``B x T`` tensor of completion ids can be passed
    as it is.

    Args:
        attribution: scores on the reward model's tokens; its response tokens must be the reward
            tokenizer's tokens of ``texts`` (a prefix of them when the reward model truncated).
            A unit spanning several tokens shares its score equally among them.
        texts: ``B`` response texts.
        policy_token_ids: ``B`` sequences of policy token ids, e.g. a ``B x T`` tensor of
            completion ids; row b's non-special tokens must decode to ``texts[b]``.
        rm_tokenizer: the reward model's tokenizer (fast).
        policy_tokenizer: the policy's tokenizer (fast).

    Returns:
        ``B`` float64 tensors, row b of length ``len(policy_token_ids[b])``, whose sums are the
        attribution's row sums (up to float64 rounding). On the attribution's device.

    Raises:
        InvalidArgumentError: a tokenizer is slow (the message says what to use instead), the batch
            sizes differ, or a text is not the one both token sequences were made from.
    """
    batch = attribution.input_ids.shape[0]
    for name, given in (("texts", texts), ("policy_token_ids", policy_token_ids)):
        if len(given) != batch:
            raise InvalidArgumentError(
                name, f"{len(given)} rows", f"{batch}, one per attribution row"
            )
    _require_fast("rm_tokenizer", rm_tokenizer)
    _require_fast("policy_tokenizer", policy_tokenizer)
    token_scores = _spread_to_tokens(attribution.unit_scores, attribution.unit_index)
    special = set(policy_tokenizer.all_special_ids)
    out = []
    for row in range(batch):
        response = attribution.response_mask[row].bool()
        rm_ids = attribution.input_ids[row][response].tolist()
        rm_spans = _rm_spans(rm_tokenizer, texts[row], rm_ids, row)
        policy_ids = _ids(policy_token_ids[row])
        policy_spans = _policy_spans(policy_tokenizer, texts[row], policy_ids, row)
        content = torch.tensor([token not in special for token in policy_ids], dtype=torch.bool)
        aligned = torch.zeros(len(policy_ids), dtype=torch.float64, device=token_scores.device)
        aligned[content.to(token_scores.device)] = align_scores(
            token_scores[row][response], rm_spans, policy_spans
        )
        out.append(aligned)
    return out
