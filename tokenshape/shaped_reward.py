"""``ShapedReward``: an explained reward model as a TRL reward function that keeps dense rewards.

It is a plain callable ``(prompts, completions, completion_ids, **kwargs) -> list[float]``, so it
works unchanged as a ``reward_funcs`` entry of TRL's ``GRPOTrainer``, ``RLOOTrainer`` and
``OnlineDPOTrainer``. Each call

1. writes every prompt + completion as the reward model reads it (see :func:`render_for_reward`),
   tokenises it with the reward model's tokenizer and marks the completion's tokens through
   character offsets;
2. scores each row and explains the scores with one batched :func:`tokenshape.attribute` call per
   signal the shaping weights use (a signal weighted 0 is not computed);
3. returns the scores, and keeps in :attr:`ShapedReward.last` the shaped token rewards aligned to
   the policy's ``completion_ids`` (``B x T``, each row summing to its score, zero on padding).

Rows whose completion has no text (empty, or cut off by ``max_length``) score 0 and get zero token
rewards.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tokenshape.alignment import align_scores
from tokenshape.amortized import AmortizedExplainer
from tokenshape.attribution import METHODS, Attributor, attribute
from tokenshape.errors import InvalidArgumentError, TokenShapeError
from tokenshape.reward import RewardFn, SequenceClassifierReward, check_reward_output
from tokenshape.shaping import SPARSE, ShapingParams, shape_rewards
from tokenshape.shaping.params import AMORTIZED
from tokenshape.types import TokenAttribution

__all__ = ["SHAPED_UNITS", "ShapedBatch", "ShapedReward", "render_for_reward"]

#: Players of the attribution game: the units of :func:`tokenshape.attribute`, and ``"turn"``,
#: each assistant message of a conversational completion (a plain completion is one turn).
SHAPED_UNITS = ("token", "word", "sentence", "turn")

_SENTINEL = "\ue000{}\ue001"
_SENTINEL_PATTERN = re.compile("\ue000(\\d+)\ue001")


@dataclass
class ShapedBatch:
    """What a :class:`ShapedReward` computed on one call of ``B`` completions.

    Attributes:
        scores: ``B`` float64, the returned sequence rewards.
        attributions: signal -> :class:`TokenAttribution` of the explained rows, in the reward
            model's tokens.
        explained: ``B`` bool, the rows that had completion text (the others score 0).
        token_rewards: ``B x T`` float64 shaped rewards on the policy's ``completion_ids``
            (``T`` the longest completion), each row summing to its score; None when the call
            had no ``completion_ids`` or the reward has no ``policy_tokenizer``.
        shares: signal -> ``B x T`` float64 shares of each weighted signal but ``"sparse"``,
            each row summing to 1 over its completion tokens.
        completion_mask: ``B x T`` bool, True on the completion's tokens (not padding).
        turn_index: ``B x T`` long, the turn each policy token belongs to: the last assistant
            message that started before it ends (0 before the first).
    """

    scores: Tensor
    attributions: dict[str, TokenAttribution]
    explained: Tensor
    token_rewards: Tensor | None = None
    shares: dict[str, Tensor] = field(default_factory=dict)
    completion_mask: Tensor | None = None
    turn_index: Tensor | None = None


@dataclass(frozen=True)
class _Rendered:
    """One prompt + completion as text, with the completion's turns located in it."""

    text: str
    turns: list[tuple[int, int]]
    contents: list[str]


def _message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(
        block.get("text", "")
        for block in content
        if isinstance(block, Mapping) and block.get("type") == "text"
    )


def _is_turn(message: Mapping[str, Any]) -> bool:
    return message.get("role", "assistant") == "assistant"


def render_for_reward(
    prompt: str | Sequence[Mapping[str, Any]],
    completion: str | Sequence[Mapping[str, Any]],
    tokenizer,
    *,
    chat_template: bool = True,
) -> tuple[str, list[tuple[int, int]]]:
    """The text a reward model reads for one prompt + completion, and where the completion's turns lie.

    A plain completion follows its prompt directly (``prompt + completion``, as TRL scores
    text) and is one turn. A conversational one (a list of messages, as TRL passes when the
    dataset is conversational) is rendered with ``tokenizer``'s chat template when it has one and
    ``chat_template`` is True, as TRL does for reward models; otherwise the message contents are
    joined with newlines. Its turns are the contents of its assistant messages: tool messages and
    the template's markup are context, never players.

    Args:
        prompt: a string, or the prompt's messages.
        completion: a string, or the completion's messages.
        tokenizer: the reward model's tokenizer (for its chat template).
        chat_template: use the tokenizer's chat template when it has one.

    Returns:
        (text, turns): the text and the ``(start, end)`` characters of each turn's content.
    """
    rendered = _render(prompt, completion, tokenizer, chat_template=chat_template)
    return rendered.text, rendered.turns


def _render(prompt, completion, tokenizer, *, chat_template: bool) -> _Rendered:
    if isinstance(completion, str):
        if not isinstance(prompt, str):
            raise InvalidArgumentError(
                "prompts", type(prompt).__name__, "strings when the completions are strings"
            )
        return _Rendered(
            prompt + completion, [(len(prompt), len(prompt) + len(completion))], [completion]
        )
    messages = (
        list(prompt) if not isinstance(prompt, str) else [{"role": "user", "content": prompt}]
    )
    turn_positions = [i for i, message in enumerate(completion) if _is_turn(message)]
    contents = [_message_text(completion[i]) for i in turn_positions]
    if chat_template and getattr(tokenizer, "chat_template", None):
        marked = messages + [
            {**message, "content": _SENTINEL.format(turn_positions.index(i))}
            if i in turn_positions
            else dict(message)
            for i, message in enumerate(completion)
        ]
        template_text = tokenizer.apply_chat_template(marked, tokenize=False)
        found = [int(match.group(1)) for match in _SENTINEL_PATTERN.finditer(template_text)]
        if found != list(range(len(contents))):
            raise TokenShapeError(
                "the reward tokenizer's chat template does not write each assistant message's "
                "content once and in order; pass chat_template=False to join the contents instead"
            )
        pieces, turns, position = [], [], 0
        for match, content in zip(_SENTINEL_PATTERN.finditer(template_text), contents):
            pieces.append(template_text[position : match.start()])
            start = sum(len(piece) for piece in pieces)
            pieces.append(content)
            turns.append((start, start + len(content)))
            position = match.end()
        pieces.append(template_text[position:])
        return _Rendered("".join(pieces), turns, contents)
    texts = [_message_text(message) for message in messages + list(completion)]
    starts, position = [], 0
    for text in texts:
        starts.append(position)
        position += len(text) + 1
    offset = len(messages)
    turns = [
        (starts[offset + i], starts[offset + i] + len(texts[offset + i])) for i in turn_positions
    ]
    return _Rendered("\n".join(texts), turns, contents)


def _policy_token_spans(tokenizer, token_ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """The policy's decoding of ``token_ids`` (special tokens skipped, as TRL decodes completions)
    and the ``(start, end)`` characters of each token in it.

    Decodes every prefix in one batched call (quadratic in the length, which stays small next to
    the attribution's reward-model rows). A token that only completes a character together
    with the next ones (part of a multi-byte character) gets an empty span; the token that
    completes the character gets it.
    """
    special = set(tokenizer.all_special_ids)
    kept = [token for token in token_ids if token not in special]
    prefixes = tokenizer.batch_decode(
        [kept[: i + 1] for i in range(len(kept))], skip_special_tokens=True
    )
    text = prefixes[-1] if prefixes else ""
    ends, end = iter(prefixes), 0
    spans = []
    for token in token_ids:
        if token in special:
            spans.append((end, end))
            continue
        start = end
        end = max(end, len(os.path.commonprefix([next(ends), text])))
        spans.append((start, end))
    return text, spans


def _locate(contents: Sequence[str], text: str, row: int) -> list[tuple[int, int]]:
    """The characters of each content in ``text``, searched in order."""
    spans, position = [], 0
    for turn, content in enumerate(contents):
        start = text.find(content, position)
        if start < 0:
            raise TokenShapeError(
                f"completion {row}: the text of turn {turn} ({content[:40]!r}) is not in the "
                f"policy tokenizer's decoding of completion_ids ({text[:60]!r}); pass the "
                "policy's own tokenizer as policy_tokenizer"
            )
        spans.append((start, start + len(content)))
        position = start + len(content)
    return spans


def _check_tokenizer(tokenizer) -> None:
    if tokenizer is None or not callable(tokenizer):
        raise InvalidArgumentError(
            "tokenizer", tokenizer, "the reward model's tokenizer (or a reward with .tokenizer)"
        )
    if not getattr(tokenizer, "is_fast", False):
        raise InvalidArgumentError(
            "tokenizer",
            type(tokenizer).__name__,
            "a fast tokenizer: ShapedReward finds the completion's tokens and aligns them to the "
            "policy's through character offsets, which slow tokenizers don't return; load it "
            "with AutoTokenizer.from_pretrained(..., use_fast=True), or convert it with "
            "transformers.PreTrainedTokenizerFast(tokenizer_object=transformers."
            "convert_slow_tokenizer.convert_slow_tokenizer(slow))",
        )


class ShapedReward:
    """An explained reward model as a TRL reward function with dense token rewards on the side.

    Args:
        reward: a tokenshape reward function (:class:`~tokenshape.reward.SequenceClassifierReward`,
            :class:`~tokenshape.reward.StringScorerReward` or any ``(input_ids, attention_mask) ->
            B`` callable), or a Hugging Face sequence classifier, read at logit 0. A model it
            holds (``.model``) is moved to ``accelerate.PartialState().device``.
        params: the shaping weights over signals. A signal is an attribution method's name
            (``"kernel_shap"``, ``"attention"``, ...; see :data:`tokenshape.METHODS`), a name
            given in ``methods``, ``"amortized"`` (an :class:`~tokenshape.AmortizedExplainer` of
            ``reward`` with ``budget`` as its teacher's budget, unless ``methods`` gives one), or
            ``"sparse"``.
        tokenizer: the reward model's tokenizer, a fast one (default: ``reward.tokenizer``).
        methods: extra signal name -> method name or configured
            :class:`~tokenshape.attribution.Attributor`.
        policy_tokenizer: the policy's tokenizer, needed to align token rewards to
            ``completion_ids`` (``ShapedGRPOTrainer`` sets it to its own when None).
        budget: forward rows per sequence for each sampling method (None: its default).
        seed: the attribution seed; every call uses it.
        unit: one of :data:`SHAPED_UNITS`.
        masking: how hidden units are hidden; see :func:`tokenshape.attribute`.
        max_rows: rows per reward-model forward at most (None: the device's default).
        max_length: reward-model tokens per row at most; longer rows are cut at the end (None:
            the tokenizer's ``model_max_length`` when it is below 100,000, else no limit).
        chat_template: render conversational rows with the reward tokenizer's chat template
            when it has one (else the contents are joined with newlines).
        name: the function's ``__name__``, which names TRL's ``rewards/<name>/...`` metrics
            (default ``"shaped_" + reward.__name__``).

    Example:
        >>> params = ShapingParams({"kernel_shap": 0.5, "sparse": 0.5})
        >>> reward = ShapedReward(SequenceClassifierReward(rm, rm_tokenizer), params)  # doctest: +SKIP
        >>> trainer = GRPOTrainer(policy, reward_funcs=[reward], args=config)  # doctest: +SKIP
    """

    def __init__(
        self,
        reward: RewardFn | torch.nn.Module,
        params: ShapingParams,
        *,
        tokenizer=None,
        methods: Mapping[str, str | Attributor] | None = None,
        policy_tokenizer=None,
        budget: int | None = None,
        seed: int = 0,
        unit: str = "token",
        masking: str | int = "auto",
        max_rows: int | None = None,
        max_length: int | None = None,
        chat_template: bool = True,
        name: str | None = None,
    ) -> None:
        if isinstance(reward, torch.nn.Module):
            reward = SequenceClassifierReward(reward, tokenizer)
        if not callable(reward):
            raise InvalidArgumentError(
                "reward", reward, "a reward function or a sequence classifier"
            )
        if not isinstance(params, ShapingParams):
            raise InvalidArgumentError("params", params, "a ShapingParams")
        tokenizer = tokenizer if tokenizer is not None else getattr(reward, "tokenizer", None)
        _check_tokenizer(tokenizer)
        if unit not in SHAPED_UNITS:
            raise InvalidArgumentError("unit", unit, f"one of {SHAPED_UNITS}")
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2
        ):
            raise InvalidArgumentError("max_length", max_length, "None or an int >= 2")
        self.reward = reward
        self.params = params
        self.tokenizer = tokenizer
        self.signals = self._resolve_signals(params, dict(methods or {}))
        if self.signals.get(AMORTIZED) == AMORTIZED:
            self.signals[AMORTIZED] = (
                AmortizedExplainer(reward, seed=seed)
                if budget is None
                else AmortizedExplainer(reward, teacher_budget=budget, seed=seed)
            )
        self.policy_tokenizer = policy_tokenizer
        self.budget = budget
        self.seed = seed
        self.unit = unit
        self.masking = masking
        self.max_rows = max_rows
        model_max = getattr(tokenizer, "model_max_length", None)
        self.max_length = (
            max_length
            if max_length is not None
            else (model_max if isinstance(model_max, int) and model_max < 100_000 else None)
        )
        self.chat_template = chat_template
        self.__name__ = name or f"shaped_{getattr(reward, '__name__', type(reward).__name__)}"
        self.last: ShapedBatch | None = None
        self._place_model()

    @staticmethod
    def _resolve_signals(
        params: ShapingParams, methods: dict[str, str | Attributor]
    ) -> dict[str, str | Attributor]:
        for signal, method in methods.items():
            if signal == SPARSE or not isinstance(signal, str):
                raise InvalidArgumentError("methods", signal, f"signal names other than {SPARSE!r}")
            if not isinstance(method, (str, Attributor)):
                raise InvalidArgumentError(
                    f"methods[{signal!r}]", method, "a method name or an Attributor"
                )
        available = sorted(set(METHODS) | set(methods) | {AMORTIZED})
        signals = {}
        for signal in params.active_signals:
            if signal == SPARSE:
                continue
            if signal not in methods and signal not in METHODS and signal != AMORTIZED:
                raise InvalidArgumentError(
                    f"params.weights[{signal!r}]",
                    params.weights[signal],
                    f"a weight on a signal some method provides: one of {available} or "
                    f"{SPARSE!r} (map other names to methods with methods=...)",
                )
            signals[signal] = methods.get(signal, signal)
        return signals

    def _place_model(self) -> None:
        model = getattr(self.reward, "model", None)
        if isinstance(model, torch.nn.Module):
            from accelerate import PartialState

            model.to(PartialState().device)

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        """Score and explain a batch; see the module docstring.

        Args:
            prompts: ``B`` prompts (strings or message lists).
            completions: ``B`` completions (strings or message lists).
            completion_ids: ``B`` lists of the policy's completion token ids (padded or not).
            **kwargs: TRL's extra columns; ``log_metric(name, value)``, when given, receives
                ``tokenshape/<signal>/seconds`` (wall time of the attribution),
                ``tokenshape/<signal>/rows_per_sequence`` (reward-model forward rows) and
                ``tokenshape/<signal>/efficiency_error`` (mean ``|sum phi - (v(all) - v(empty))|``,
                0 for the Shapley methods), and for an amortised signal
                ``tokenshape/<signal>/pearson`` (the explainer's running fidelity, once measured).

        Returns:
            ``B`` floats, the reward model's scores.
        """
        if len(prompts) != len(completions):
            raise InvalidArgumentError(
                "completions", f"{len(completions)} completions", f"{len(prompts)}, one per prompt"
            )
        rendered = [
            _render(p, c, self.tokenizer, chat_template=self.chat_template)
            for p, c in zip(prompts, completions)
        ]
        encoded = self._encode(rendered)
        input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"]
        turn = encoded["turn"]
        response_mask = turn >= 0
        explained = response_mask.any(dim=1)
        rows = explained.nonzero().flatten()
        scores = torch.zeros(len(rendered), dtype=torch.float64)
        attributions: dict[str, TokenAttribution] = {}
        if rows.numel():
            ids, mask, response = input_ids[rows], attention_mask[rows], response_mask[rows]
            unit = turn[rows] if self.unit == "turn" else self.unit
            for signal, method in self.signals.items():
                started = time.perf_counter()
                attributions[signal] = attribute(
                    self.reward,
                    ids,
                    mask,
                    response,
                    method=method,
                    budget=self.budget,
                    seed=self.seed,
                    unit=unit,
                    masking=self.masking,
                    tokenizer=self.tokenizer,
                    max_rows=self.max_rows,
                )
                self._log(
                    kwargs.get("log_metric"),
                    signal,
                    attributions[signal],
                    time.perf_counter() - started,
                )
                log_metric = kwargs.get("log_metric")
                amortized = isinstance(method, AmortizedExplainer) and log_metric is not None
                if amortized and not math.isnan(method.fidelity.pearson):
                    log_metric(f"tokenshape/{signal}/pearson", method.fidelity.pearson)
            if attributions:
                full = next(iter(attributions.values())).full_value
            else:
                with torch.inference_mode():
                    full = self.reward(ids, mask)
            scores[rows] = check_reward_output(full, len(rows), name=self.__name__).cpu()
        batch = ShapedBatch(scores=scores, attributions=attributions, explained=explained)
        if completion_ids is not None and self.policy_tokenizer is not None:
            self._align(batch, rendered, encoded["offsets"], turn, rows, completion_ids)
        self.last = batch
        return scores.tolist()

    def _encode(self, rendered: list[_Rendered]) -> dict[str, Tensor]:
        """Tokenise the texts; ``turn`` (``B x L``) numbers the turn of each completion token, -1
        elsewhere (prompt, markup, special tokens, padding)."""
        batch = self.tokenizer(
            [r.text for r in rendered],
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            padding=True,
            truncation=self.max_length is not None,
            max_length=self.max_length,
            return_tensors="pt",
        )
        offsets = batch["offset_mapping"].long()
        last_char = offsets[..., 1] - 1
        is_text = (batch["special_tokens_mask"] == 0) & batch["attention_mask"].bool()
        is_text &= offsets[..., 1] > offsets[..., 0]
        turn = torch.full(last_char.shape, -1, dtype=torch.long)
        for row, r in enumerate(rendered):
            for number, (start, end) in enumerate(r.turns):
                inside = is_text[row] & (last_char[row] >= start) & (last_char[row] < end)
                turn[row, inside] = number
        return {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "offsets": offsets,
            "turn": turn,
        }

    @staticmethod
    def _log(
        log_metric: Callable[[str, float], None] | None,
        signal: str,
        result: TokenAttribution,
        seconds: float,
    ) -> None:
        if log_metric is None:
            return
        log_metric(f"tokenshape/{signal}/seconds", seconds)
        log_metric(f"tokenshape/{signal}/rows_per_sequence", float(result.rows.double().mean()))
        log_metric(f"tokenshape/{signal}/efficiency_error", float(result.efficiency_error.mean()))

    def _align(
        self,
        batch: ShapedBatch,
        rendered: list[_Rendered],
        offsets: Tensor,
        turn: Tensor,
        rows: Tensor,
        completion_ids: Sequence[Sequence[int]],
    ) -> None:
        """Fill ``batch``'s policy-token fields from the reward-model attributions."""
        ids = [[int(token) for token in row] for row in completion_ids]
        if len(ids) != len(rendered):
            raise InvalidArgumentError(
                "completion_ids", f"{len(ids)} rows", f"{len(rendered)}, one per completion"
            )
        width = max((len(row) for row in ids), default=0)
        completion_mask = torch.zeros(len(ids), width, dtype=torch.bool)
        turn_index = torch.zeros(len(ids), width, dtype=torch.long)
        aligned = {
            signal: torch.zeros(len(ids), width, dtype=torch.float64) for signal in self.signals
        }
        position_of = {int(row): i for i, row in enumerate(rows)}
        for row, (r, token_ids) in enumerate(zip(rendered, ids)):
            length = len(token_ids)
            completion_mask[row, :length] = True
            text, spans = _policy_token_spans(self.policy_tokenizer, token_ids)
            policy_turns = _locate(r.contents, text, row)
            ends = torch.tensor([end for _, end in spans], dtype=torch.long).reshape(-1, 1)
            starts = torch.tensor([start for start, _ in policy_turns], dtype=torch.long)
            turn_index[row, :length] = ((starts < ends).sum(dim=1) - 1).clamp(min=0)
            if row not in position_of:
                continue
            source = _spans_in_policy_text(offsets[row], turn[row], r.turns, policy_turns)
            on = turn[row] >= 0
            for signal, result in batch.attributions.items():
                scores = result.scores[position_of[row]].detach().cpu().double()[on]
                aligned[signal][row, :length] = align_scores(scores, source, spans)
        batch.completion_mask = completion_mask
        batch.turn_index = turn_index
        batch.token_rewards = shape_rewards(batch.scores, aligned, self.params, completion_mask)
        ones = torch.ones(len(ids), dtype=torch.float64)
        batch.shares = {
            signal: shape_rewards(
                ones,
                {signal: aligned[signal]},
                ShapingParams(
                    {signal: 1.0},
                    normalization=self.params.normalization,
                    cancellation_tolerance=self.params.cancellation_tolerance,
                ),
                completion_mask,
            )
            for signal in self.signals
        }


def _spans_in_policy_text(
    offsets: Tensor,
    turn: Tensor,
    rm_turns: Sequence[tuple[int, int]],
    policy_turns: Sequence[tuple[int, int]],
) -> list[tuple[int, int]]:
    """The characters of one row's completion tokens (``turn >= 0``), moved from the reward
    model's text into the policy's decoding: each token is clipped to its turn's content and
    shifted by where that content lies in each text.

    Args:
        offsets: ``L x 2`` character spans in the reward model's text.
        turn: ``L`` turn of each token, -1 off the completion.
        rm_turns: each turn's content span in the reward model's text.
        policy_turns: the same contents' spans in the policy's decoding.
    """
    spans = []
    for (start, end), number in zip(offsets.tolist(), turn.tolist()):
        if number < 0:
            continue
        (rm_start, rm_end), (policy_start, _) = rm_turns[number], policy_turns[number]
        shift = policy_start - rm_start
        spans.append((max(start, rm_start) + shift, min(end, rm_end) + shift))
    return spans
