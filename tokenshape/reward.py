"""Reward functions: the value a reward game asks for, one float per token sequence.

A reward function is any callable ``(input_ids: LongTensor[B, L], attention_mask: LongTensor[B, L])
-> Tensor[B]``. Two adapters cover the usual cases:

* :class:`SequenceClassifierReward` wraps a Hugging Face sequence classifier (one logit, or the
  difference of two logits such as positive minus negative). It also exposes the classifier's
  attention from the scoring position, which the ``attention`` method reads.
* :class:`StringScorerReward` wraps a scorer of strings (VADER, any Python function): rows are
  decoded with a tokenizer, special tokens dropped, and scored as text.

Adapters carry the tokenizer they were built with (``.tokenizer``) so that word and sentence units,
replacement tokens and alignment can be derived without further arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from tokenshape.errors import InvalidArgumentError, RewardFunctionError

__all__ = [
    "RewardFn",
    "ScoringStates",
    "SequenceClassifierReward",
    "StringScorerReward",
    "check_reward_output",
    "scoring_positions",
]


@runtime_checkable
class RewardFn(Protocol):
    """``(input_ids: LongTensor[B, L], attention_mask: LongTensor[B, L]) -> Tensor[B]``."""

    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor: ...


def check_reward_output(values: object, n_rows: int, *, name: str = "reward_fn") -> Tensor:
    """Validate what a reward function returned for ``n_rows`` rows.

    Args:
        values: the returned object; must be a floating tensor of shape ``(n_rows,)``.
        n_rows: the number of rows that were scored.
        name: how the reward function is called in the error message.

    Returns:
        Tensor[n_rows]: the values as float64 on their own device, detached from any autograd
        graph (attributions are not differentiated through).

    Raises:
        RewardFunctionError: wrong type, wrong shape, or a NaN / infinite value. NaN is never
            turned into zero.
    """
    if not isinstance(values, Tensor):
        raise RewardFunctionError(
            f"{name} returned {type(values).__name__}: expected a torch.Tensor of shape ({n_rows},)"
        )
    if values.shape != (n_rows,):
        raise RewardFunctionError(
            f"{name} returned shape {tuple(values.shape)}: expected ({n_rows},), one value per row"
        )
    if not values.is_floating_point():
        raise RewardFunctionError(f"{name} returned dtype {values.dtype}: expected a float dtype")
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        rows = bad.nonzero().flatten()[:5].tolist()
        raise RewardFunctionError(
            f"{name} returned non-finite values {values[bad][:5].tolist()} at rows {rows}: "
            "expected finite floats"
        )
    return values.detach().to(torch.float64)


def scoring_positions(
    input_ids: Tensor, *, position: str, pad_token_id: int | None = None
) -> Tensor:
    """Where a sequence classifier reads each row: the one rule every path uses.

    ``"first"`` is position 0 (BERT-style ``[CLS]``). ``"last"`` is the rule of transformers'
    decoder classifiers (Llama, Qwen2, GPT-2, ...): the last token that is not ``pad_token_id``,
    whatever the attention mask says (so with pad = eos, a row ending with eos is read at the
    token before it), or the last column when the model has no pad token.

    Args:
        input_ids: ``B x L``.
        position: ``"first"`` or ``"last"``.
        pad_token_id: the model's pad token (``config.pad_token_id``).

    Returns:
        ``B`` long, on ``input_ids``' device.
    """
    rows, length = input_ids.shape
    if position == "first":
        return torch.zeros(rows, dtype=torch.long, device=input_ids.device)
    if pad_token_id is None:
        return torch.full((rows,), length - 1, dtype=torch.long, device=input_ids.device)
    columns = torch.arange(length, device=input_ids.device)
    return (columns * (input_ids != pad_token_id)).argmax(dim=1)


@dataclass
class ScoringStates:
    """What one forward of a sequence classifier shows besides its reward.

    Attributes:
        reward: ``B`` float32, the reward of each row.
        hidden: ``B x L x H`` float32, the last layer's hidden state at every position.
        scoring_hidden: ``B x H`` float32, the hidden state at the scoring position.
        head_scores: ``B x L`` float32, the reward read through the classification head at every
            position (equal to ``reward`` at the scoring position). For a decoder classifier
            position ``p`` holds the reward of the prefix ending at ``p``.
    """

    reward: Tensor
    hidden: Tensor
    scoring_hidden: Tensor
    head_scores: Tensor


#: How far the head read at the scoring position may differ from the model's own reward.
_HEAD_TOLERANCE = 1e-3


def _model_device(model: torch.nn.Module) -> torch.device:
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


class SequenceClassifierReward:
    """A Hugging Face sequence classifier as a reward function.

    The reward is ``logits[:, label]``, or ``logits[:, label] - logits[:, minus_label]`` when
    ``minus_label`` is given (e.g. positive minus negative sentiment).

    Args:
        model: an ``AutoModelForSequenceClassification``-style module returning ``.logits`` of shape
            ``B x num_labels``.
        tokenizer: the model's tokenizer (used for units, replacement tokens and alignment).
        label: index of the scored logit.
        minus_label: index of a logit subtracted from it, or None.
        scoring_position: where the classifier reads the sequence: ``"first"`` (BERT-style [CLS]),
            ``"last"`` (the last attended token, decoder classifiers) or ``"auto"`` (``"last"`` when
            the model has a ``score`` head, as decoder classifiers in transformers do, else
            ``"first"``); see :func:`scoring_positions`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer=None,
        *,
        label: int = 0,
        minus_label: int | None = None,
        scoring_position: str = "auto",
    ) -> None:
        num_labels = int(getattr(getattr(model, "config", None), "num_labels", 1))
        for arg, value in (("label", label), ("minus_label", minus_label)):
            if value is not None and not (isinstance(value, int) and 0 <= value < num_labels):
                raise InvalidArgumentError(arg, value, f"a logit index in [0, {num_labels})")
        if scoring_position not in ("auto", "first", "last"):
            raise InvalidArgumentError(
                "scoring_position", scoring_position, "'auto', 'first' or 'last'"
            )
        if scoring_position == "auto":
            scoring_position = "last" if hasattr(model, "score") else "first"
        self.model = model
        self.tokenizer = tokenizer
        self.label = label
        self.minus_label = minus_label
        self.scoring_position = scoring_position
        self.__name__ = type(model).__name__

    @property
    def device(self) -> torch.device:
        """The device of the wrapped model's parameters."""
        return _model_device(self.model)

    @property
    def pad_token_id(self) -> int | None:
        """The model's pad token (``config.pad_token_id``), or None."""
        config = getattr(self.model, "config", None)
        if config is not None and hasattr(config, "get_text_config"):
            config = config.get_text_config()
        return getattr(config, "pad_token_id", None)

    @property
    def padding_token_ids(self) -> frozenset[int]:
        """Token ids whose presence moves where the model reads a row: its pad token when it
        scores the last non-pad token (decoder classifiers), none when it reads position 0."""
        pad = self.pad_token_id
        if self.scoring_position == "first" or pad is None:
            return frozenset()
        return frozenset({int(pad)})

    def scoring_positions(self, input_ids: Tensor) -> Tensor:
        """Where the model reads each row: ``B x L`` -> ``B`` long (see :func:`scoring_positions`)."""
        return scoring_positions(
            input_ids, position=self.scoring_position, pad_token_id=self.pad_token_id
        )

    def _reward_from_logits(self, logits: Tensor) -> Tensor:
        logits = logits.float()  # before the difference: half precision would round it
        reward = logits[:, self.label]
        if self.minus_label is not None:
            reward = reward - logits[:, self.minus_label]
        return reward

    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Score rows. ``input_ids, attention_mask: B x L`` -> ``B``."""
        device = self.device
        with torch.inference_mode():
            logits = self.model(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)
            ).logits
        return self._reward_from_logits(logits)

    def scoring_attention(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """The reward and the last layer's attention from the scoring position, heads averaged.

        Args:
            input_ids: ``B x L``.
            attention_mask: ``B x L``.

        Returns:
            (reward ``B``, attention ``B x L``): each attention row is a distribution over the
            attended positions of that row.
        """
        device = self.device
        ids, mask = input_ids.to(device), attention_mask.to(device)
        previous = getattr(self.model.config, "_attn_implementation", None)
        switch = previous not in (None, "eager") and hasattr(self.model, "set_attn_implementation")
        if switch:
            self.model.set_attn_implementation("eager")
        try:
            with torch.inference_mode():
                out = self.model(input_ids=ids, attention_mask=mask, output_attentions=True)
        finally:
            if switch:
                self.model.set_attn_implementation(previous)
        if not out.attentions:
            raise RewardFunctionError(
                f"{self.__name__} returned no attentions: expected a transformers model that "
                "supports output_attentions=True"
            )
        last_layer = out.attentions[-1].float().mean(dim=1)  # B x L x L
        position = self.scoring_positions(ids)
        rows = torch.arange(ids.shape[0], device=device)
        return self._reward_from_logits(out.logits), last_layer[rows, position]

    def _head_at_every_position(self, hidden: Tensor) -> Tensor:
        """Logits ``B x L x num_labels`` of the classification head applied at every position.

        A decoder classifier's ``score`` layer is applied to each state; an encoder's head (its
        base model's pooler, when it has one, then ``classifier``) reads the first position, so
        every state is given to it as a sequence of one.
        """
        score = getattr(self.model, "score", None)
        if isinstance(score, torch.nn.Module):
            return score(hidden)
        classifier = getattr(self.model, "classifier", None)
        if not isinstance(classifier, torch.nn.Module):
            raise RewardFunctionError(
                f"{self.__name__} has neither a score nor a classifier head: expected a "
                "transformers sequence classifier"
            )
        batch, length, width = hidden.shape
        states = hidden.reshape(batch * length, 1, width)
        pooler = getattr(getattr(self.model, "base_model", None), "pooler", None)
        if isinstance(pooler, torch.nn.Module):
            states = pooler(states)
        return classifier(states).reshape(batch, length, -1)

    def scoring_states(self, input_ids: Tensor, attention_mask: Tensor) -> ScoringStates:
        """The reward, the last layer's hidden states and the head read at every position.

        One forward (with ``output_hidden_states=True``) under ``torch.no_grad``, so the returned
        tensors can feed a model that is trained on them.

        Args:
            input_ids: ``B x L``.
            attention_mask: ``B x L``.

        Raises:
            RewardFunctionError: the model returns no hidden states, or its head read at the
                scoring position does not give its own reward (a head this adapter cannot
                apply position by position, or a scoring position other than ``scoring_position``).
        """
        device = self.device
        ids, mask = input_ids.to(device), attention_mask.to(device)
        with torch.no_grad():
            out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            if not out.hidden_states:
                raise RewardFunctionError(
                    f"{self.__name__} returned no hidden states: expected a transformers model "
                    "that supports output_hidden_states=True"
                )
            hidden = out.hidden_states[-1]
            reward = self._reward_from_logits(out.logits)
            batch = ids.shape[0]
            head_scores = self._reward_from_logits(
                self._head_at_every_position(hidden).reshape(batch * ids.shape[1], -1)
            ).reshape(batch, -1)
        rows = torch.arange(batch, device=device)
        position = self.scoring_positions(ids)
        read = head_scores[rows, position]
        if not torch.allclose(read, reward, atol=_HEAD_TOLERANCE, rtol=_HEAD_TOLERANCE):
            raise RewardFunctionError(
                f"{self.__name__}: the head read at the {self.scoring_position} position gives "
                f"{read[:3].tolist()} where the model scores {reward[:3].tolist()}: expected a "
                "head that scores each position on its own and a matching scoring_position"
            )
        return ScoringStates(
            reward=reward,
            hidden=hidden.float(),
            scoring_hidden=hidden[rows, position].float(),
            head_scores=head_scores,
        )

    def gradient_times_input(
        self, input_ids: Tensor, attention_mask: Tensor, *, baseline_id: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """The reward and, per token, its gradient times the token's input embedding.

        One forward and one backward through the model. The token embeddings are made a leaf of
        the graph by a hook on the input embedding layer, so the model still reads ``input_ids``
        (a decoder classifier finds its scoring position from them).

        Args:
            input_ids: ``B x L``.
            attention_mask: ``B x L``.
            baseline_id: when given, the input is measured from this token's embedding:
                ``(e_t - e_baseline) . d reward / d e_t``; else ``e_t . d reward / d e_t``.

        Returns:
            (reward ``B`` float32, scores ``B x L`` float32), each row's reward differentiated
            with respect to its own embeddings only.
        """
        device = self.device
        ids, mask = input_ids.to(device), attention_mask.to(device)
        embedding = self.model.get_input_embeddings()
        leaves: list[Tensor] = []

        def make_leaf(module, inputs, output):
            leaves.append(output.detach().requires_grad_(True))
            return leaves[-1]

        handle = embedding.register_forward_hook(make_leaf)
        try:
            with torch.enable_grad():
                reward = self._reward_from_logits(
                    self.model(input_ids=ids, attention_mask=mask).logits
                )
                (gradient,) = torch.autograd.grad(reward.sum(), leaves[0])
        finally:
            handle.remove()
        inputs = leaves[0].detach()
        if baseline_id is not None:
            inputs = inputs - embedding.weight[baseline_id].detach()
        return reward.detach(), (gradient * inputs).sum(dim=-1).float()


class StringScorerReward:
    """A scorer of strings as a reward function.

    Each row is decoded with ``tokenizer`` (attended tokens only, special tokens skipped, so a
    masked position holding the mask or pad token simply disappears from the text) and scored.

    Args:
        scorer: ``str -> float``, or ``list[str] -> list[float]`` with ``batched=True``.
        tokenizer: the tokenizer whose ids the game works on.
        batched: whether ``scorer`` takes the whole list of texts at once.
        name: the reward's name in messages and metrics (default: the scorer's ``__name__``).
    """

    def __init__(
        self,
        scorer: Callable[[str], float] | Callable[[Sequence[str]], Sequence[float]],
        tokenizer,
        *,
        batched: bool = False,
        name: str | None = None,
    ) -> None:
        if not callable(scorer):
            raise InvalidArgumentError("scorer", scorer, "a callable scoring strings")
        if tokenizer is None or not hasattr(tokenizer, "decode"):
            raise InvalidArgumentError("tokenizer", tokenizer, "a tokenizer with .decode")
        self.scorer = scorer
        self.tokenizer = tokenizer
        self.batched = batched
        self.__name__ = name or getattr(scorer, "__name__", type(scorer).__name__)
        self.device = torch.device("cpu")

    def decode(self, input_ids: Tensor, attention_mask: Tensor) -> list[str]:
        """The text of each row. ``B x L`` -> ``B`` strings."""
        ids = input_ids.cpu()
        keep = attention_mask.cpu().bool()
        return [
            self.tokenizer.decode(row[row_keep].tolist(), skip_special_tokens=True)
            for row, row_keep in zip(ids, keep)
        ]

    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Score rows. ``input_ids, attention_mask: B x L`` -> ``B`` (float64)."""
        texts = self.decode(input_ids, attention_mask)
        if self.batched:
            scores = list(self.scorer(texts))
        else:
            scores = [self.scorer(text) for text in texts]
        if len(scores) != len(texts):
            raise RewardFunctionError(
                f"{self.__name__} returned {len(scores)} scores for {len(texts)} texts: "
                "expected one per text"
            )
        try:
            return torch.tensor([float(score) for score in scores], dtype=torch.float64)
        except (TypeError, ValueError) as error:
            raise RewardFunctionError(
                f"{self.__name__} returned {scores[:5]!r}...: expected numbers"
            ) from error
