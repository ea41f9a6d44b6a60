"""One trajectory of a verl batch as the texts a reward model reads and the policy's token ids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Trajectory", "read_trajectory"]


@dataclass(frozen=True)
class Trajectory:
    """What the reward manager scores for one trajectory.

    Attributes:
        prompt: the prompt's messages (verl's ``raw_prompt``) or, without them, the decoded
            prompt tokens.
        completion: ``[{"role": "assistant", "content": text}]`` when the prompt is messages,
            else the text; ``text`` is the policy tokenizer's decoding of ``response_ids``
            without special tokens.
        response_ids: the ``n`` valid response tokens, in the order of verl's ``responses``.
    """

    prompt: str | list[dict[str, Any]]
    completion: str | list[dict[str, Any]]
    response_ids: list[int]


def read_trajectory(data: Any, tokenizer: Any) -> Trajectory:
    """Read the last sequence of a verl ``DataProto`` (one trajectory, as ``run_single`` gets it).

    The valid response is the first ``attention_mask[-R:].sum()`` tokens of ``responses``
    (``R`` wide, right-padded), as verl's own reward managers read it; the prompt tokens are the
    attended ones of the left-padded ``prompts``.

    Args:
        data: a ``DataProto`` with ``prompts`` (``N x P``), ``responses`` (``N x R``) and
            ``attention_mask`` (``N x (P + R)``), and optionally ``raw_prompt`` messages.
        tokenizer: the policy's tokenizer.
    """
    item = data[len(data) - 1]
    responses = item.batch["responses"]
    attention_mask = item.batch["attention_mask"]
    width = responses.shape[-1]
    length = int(attention_mask[-width:].sum())
    response_ids = [int(token) for token in responses[:length].tolist()]
    text = tokenizer.decode(response_ids, skip_special_tokens=True)
    raw_prompt = item.non_tensor_batch.get("raw_prompt")
    if raw_prompt is not None:
        return Trajectory(
            [dict(message) for message in raw_prompt],
            [{"role": "assistant", "content": text}],
            response_ids,
        )
    prompts = item.batch["prompts"]
    attended = attention_mask[: prompts.shape[-1]].bool()
    prompt = tokenizer.decode(prompts[attended].tolist(), skip_special_tokens=True)
    return Trajectory(prompt, text, response_ids)
