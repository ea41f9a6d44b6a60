"""Score, explain and shape a batch of (prompt, completion) texts: the core of every trainer
integration.

A :class:`CompletionShaper` holds a reward model, its tokenizer and the
:class:`CompletionShaping` settings. :meth:`CompletionShaper.shape` takes ``B`` prompts and
completions as a trainer has them (strings, or message lists) and

1. writes every prompt + completion as the reward model reads it (see :func:`render_for_reward`),
   tokenises it with the reward model's tokenizer and marks the completion's tokens through
   character offsets;
2. scores each row and explains the scores with one batched :func:`tokenshape.attribute` call per
   signal the shaping weights use (a signal weighted 0 is not computed);
3. given the policy's completion token ids and tokenizer, moves the attributions onto the policy's
   tokens and shapes them into ``B x T`` token rewards, each row summing to its score, zero on
   padding and on tool results.

It returns all of it as a :class:`ShapedBatch`, with the cost of each signal in
:attr:`ShapedBatch.metrics`. The integrations only translate: TRL's reward function
(:class:`tokenshape.integrations.trl.ShapedReward`) and verl's reward manager
(``tokenshape.integrations.verl``) both call :meth:`CompletionShaper.shape`.

A row whose completion has no players (empty or whitespace-only, or cut off by ``max_length``) is
scored by the reward model like any other (on the prompt and the markup around the empty answer);
its score goes to its last generated token.

The tokens of each assistant turn are found from the completion's structure, never by searching
the text: a completion of one assistant message is that message's tokens; a completion from a
tool loop gives one run of generated tokens (``tool_mask`` 1) per assistant message, with the tool
results (``tool_mask`` 0) between them. Inside a turn the content follows the message's reasoning;
a turn whose content cannot be placed raises :class:`~tokenshape.errors.TokenShapeError`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tokenshape.alignment import align_scores
from tokenshape.amortized import AmortizedExplainer
from tokenshape.attribution import METHODS, Attributor, attribute
from tokenshape.encoding import tokens_ending_in
from tokenshape.errors import InvalidArgumentError, TokenShapeError
from tokenshape.masking import check_masking
from tokenshape.reward import RewardFn, SequenceClassifierReward, check_reward_output
from tokenshape.shaping import SPARSE, ShapingParams, shape_rewards
from tokenshape.shaping.params import AMORTIZED
from tokenshape.types import TokenAttribution
from tokenshape.units import token_char_spans

__all__ = [
    "SHAPED_UNITS",
    "CompletionShaper",
    "CompletionShaping",
    "ShapedBatch",
    "render_for_reward",
    "resolve_signals",
]

#: Players of the attribution game: the units of :func:`tokenshape.attribute`, and ``"turn"``,
#: each assistant message of a conversational completion (a plain completion is one turn).
SHAPED_UNITS = ("token", "word", "sentence", "turn")


@dataclass
class ShapedBatch:
    """What :meth:`CompletionShaper.shape` computed for ``B`` completions.

    Attributes:
        scores: ``B`` float64, the reward model's sequence scores.
        attributions: signal -> :class:`TokenAttribution` of the explained rows, in the reward
            model's tokens.
        explained: ``B`` bool, the rows whose completion has players (content the reward model
            reads as tokens); the others are scored without attribution.
        metrics: the cost of each signal on this batch, ``"<signal>/seconds"`` (wall time of its
            attribution), ``"<signal>/rows_per_sequence"`` (mean reward-model forward rows),
            ``"<signal>/efficiency_error"`` (mean ``|sum phi - (v(all) - v(empty))|``, 0 for the
            Shapley methods), and for an amortised signal ``"<signal>/pearson"`` (the
            explainer's running fidelity, once measured); empty when no row was explained.
        token_rewards: ``B x T`` float64 shaped rewards on the policy's completion ids (``T``
            the longest completion), each row summing to its score; a row without players has
            its score on its last generated token. None without completion ids or a policy
            tokenizer.
        policy_attributions: signal -> ``B x T`` float64 attributions moved onto the policy's
            tokens (each row keeps its sum), for every weighted signal but ``"sparse"``; zero
            off the generated tokens and on rows without players.
        completion_mask: ``B x T`` bool, True on the tokens the policy generated: not padding,
            not tool results inside the completion.
        turn_index: ``B x T`` long, the turn each policy token belongs to: the last assistant
            turn whose tokens started at or before it (0 before the first).
    """

    scores: Tensor
    attributions: dict[str, TokenAttribution]
    explained: Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    token_rewards: Tensor | None = None
    policy_attributions: dict[str, Tensor] = field(default_factory=dict)
    completion_mask: Tensor | None = None
    turn_index: Tensor | None = None


def resolve_signals(
    params: ShapingParams, methods: Mapping[str, str | Attributor]
) -> dict[str, str | Attributor]:
    """The method of each signal ``params`` weights above 0, ``"sparse"`` left out.

    A signal is a method's name (:data:`tokenshape.METHODS`), a name ``methods`` maps to a method,
    or ``"amortized"`` (returned as the name: :class:`CompletionShaper` builds its explainer).

    Args:
        params: the shaping weights.
        methods: extra signal name -> method name or configured
            :class:`~tokenshape.attribution.Attributor`.

    Returns:
        signal -> method name or attributor, in the order of ``params.active_signals``.

    Raises:
        InvalidArgumentError: ``methods`` maps ``"sparse"`` or a non-string name, or to an
            unknown method name or something else than an attributor; a weighted signal no method
            provides (named ``params.weights[...]``).
    """
    if not isinstance(methods, Mapping):
        raise InvalidArgumentError(
            "methods", methods, "a dict of signal name -> method name or Attributor"
        )
    for signal, method in methods.items():
        if signal == SPARSE or not isinstance(signal, str):
            raise InvalidArgumentError("methods", signal, f"signal names other than {SPARSE!r}")
        if isinstance(method, str) and method not in METHODS and method != AMORTIZED:
            raise InvalidArgumentError(
                f"methods[{signal!r}]",
                method,
                f"a method name, one of {sorted(METHODS)} or {AMORTIZED!r}, or an Attributor",
            )
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


def _check_optional_int(name: str, value: Any, minimum: int, what: str = "") -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or value < minimum
    ):
        raise InvalidArgumentError(name, value, f"None or an int >= {minimum}{what}")


@dataclass(frozen=True, kw_only=True)
class CompletionShaping:
    """How :class:`CompletionShaper` explains and shapes completions; checked when built.

    Args:
        params: the shaping weights over signals. A signal is an attribution method's name
            (``"kernel_shap"``, ``"attention"``, ...; see :data:`tokenshape.METHODS`), a name
            given in ``methods``, ``"amortized"`` (an :class:`~tokenshape.AmortizedExplainer` of
            the reward with ``budget`` as its teacher's budget, unless ``methods`` gives one), or
            ``"sparse"``.
        methods: extra signal name -> method name or configured
            :class:`~tokenshape.attribution.Attributor`.
        budget: forward rows per sequence for each sampling method (None: its default).
        seed: the attribution seed; every batch uses it.
        unit: the players, one of :data:`SHAPED_UNITS`.
        masking: how hidden units are hidden; see :func:`tokenshape.attribute`.
        max_rows: rows per reward-model forward at most (None: the device's default).
        max_length: reward-model tokens per row at most; longer rows are cut at the end (None:
            the tokenizer's ``model_max_length`` when it is below 100,000, else no limit).
        chat_template: render conversational rows with the reward tokenizer's chat template
            when it has one (else the contents are joined with newlines).

    Attributes:
        signals: signal -> method of every weighted signal but ``"sparse"``
            (:func:`resolve_signals`).

    Raises:
        InvalidArgumentError: a bad value, named by its field (a weighted signal without a
            method as ``params.weights[...]``).
    """

    params: ShapingParams
    methods: Mapping[str, str | Attributor] = field(default_factory=dict)
    budget: int | None = None
    seed: int = 0
    unit: str = "token"
    masking: str | int = "auto"
    max_rows: int | None = None
    max_length: int | None = None
    chat_template: bool = True
    signals: Mapping[str, str | Attributor] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.params, ShapingParams):
            raise InvalidArgumentError("params", self.params, "a ShapingParams")
        object.__setattr__(self, "signals", resolve_signals(self.params, self.methods))
        _check_optional_int("budget", self.budget, 2, " (forward rows per sequence)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InvalidArgumentError("seed", self.seed, "an int >= 0")
        if self.unit not in SHAPED_UNITS:
            raise InvalidArgumentError("unit", self.unit, f"one of {SHAPED_UNITS}")
        check_masking(self.masking)
        _check_optional_int("max_rows", self.max_rows, 1)
        _check_optional_int("max_length", self.max_length, 2)
        if not isinstance(self.chat_template, bool):
            raise InvalidArgumentError("chat_template", self.chat_template, "True or False")


_SENTINEL = "\ue000{}\ue001"
_SENTINEL_PATTERN = re.compile("\ue000(\\d+)\ue001")


@dataclass(frozen=True)
class _Rendered:
    """One prompt + completion as the reward model reads it, with the completion's turns in it.

    Attributes:
        text: the text.
        turns: the ``(start, end)`` characters of each turn's content in ``text``.
        offsets: where each turn's text in ``text`` starts inside its message's content (a
            template that trims whitespace writes the content from a later character).
        templated: written by a chat template, which adds its own special tokens.
    """

    text: str
    turns: list[tuple[int, int]]
    offsets: list[int]
    templated: bool = False


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
    dataset is conversational) is rendered by ``tokenizer``'s chat template when it has one and
    ``chat_template`` is True, exactly as TRL renders it for a reward model (the template's filters
    apply; the text is then tokenised without adding special tokens); otherwise the message
    contents are joined with newlines. Its turns are the contents of its assistant messages as the
    text holds them: tool messages, tool calls, reasoning and the template's markup are context,
    never players.

    Args:
        prompt: a string, or the prompt's messages.
        completion: a string, or the completion's messages.
        tokenizer: the reward model's tokenizer (for its chat template).
        chat_template: use the tokenizer's chat template when it has one.

    Returns:
        (text, turns): the text and the ``(start, end)`` characters of each turn's content.

    Raises:
        TokenShapeError: the template writes an assistant message's content other than as the
            content itself, up to whitespace trimmed at its ends.
    """
    rendered = _render(prompt, completion, tokenizer, chat_template=chat_template)
    return rendered.text, rendered.turns


def _render(prompt, completion, tokenizer, *, chat_template: bool) -> _Rendered:
    if isinstance(completion, str):
        if not isinstance(prompt, str):
            raise InvalidArgumentError(
                "prompts", type(prompt).__name__, "strings when the completions are strings"
            )
        return _Rendered(prompt + completion, [(len(prompt), len(prompt) + len(completion))], [0])
    messages = (
        list(prompt) if not isinstance(prompt, str) else [{"role": "user", "content": prompt}]
    )
    turn_positions = [i for i, message in enumerate(completion) if _is_turn(message)]
    contents = [_message_text(completion[i]) for i in turn_positions]
    if chat_template and getattr(tokenizer, "chat_template", None):
        return _render_with_template(
            messages, list(completion), turn_positions, contents, tokenizer
        )
    texts = [_message_text(message) for message in messages + list(completion)]
    starts, position = [], 0
    for text in texts:
        starts.append(position)
        position += len(text) + 1
    offset = len(messages)
    turns = [
        (starts[offset + i], starts[offset + i] + len(texts[offset + i])) for i in turn_positions
    ]
    return _Rendered("\n".join(texts), turns, [0] * len(turns))


def _render_with_template(
    messages: list, completion: list, turn_positions: list[int], contents: list[str], tokenizer
) -> _Rendered:
    """Render with the chat template, and find each assistant content in the text through the
    markup the template writes around numbered placeholders of the non-empty contents."""
    text = tokenizer.apply_chat_template(messages + completion, tokenize=False)
    placed = [number for number, content in enumerate(contents) if content]
    marked = messages + [
        {**message, "content": _SENTINEL.format(turn_positions.index(i))}
        if i in turn_positions and contents[turn_positions.index(i)]
        else dict(message)
        for i, message in enumerate(completion)
    ]
    marked_text = tokenizer.apply_chat_template(marked, tokenize=False)
    matches = list(_SENTINEL_PATTERN.finditer(marked_text))
    if [int(match.group(1)) for match in matches] != placed:
        raise TokenShapeError(
            "the reward tokenizer's chat template does not write each assistant message's "
            "content once and in order; pass chat_template=False to join the contents instead"
        )
    pattern, position = [], 0
    for match, number in zip(matches, placed):
        pattern.append(re.escape(marked_text[position : match.start()]))
        pattern.append(f"(\\s*{re.escape(contents[number].strip())}\\s*?)")
        position = match.end()
    pattern.append(re.escape(marked_text[position:]))
    found = re.fullmatch("".join(pattern), text, flags=re.DOTALL)
    pieces = [found.group(g + 1) for g in range(len(placed))] if found else []
    if not found or any(piece not in contents[n] for piece, n in zip(pieces, placed)):
        raise TokenShapeError(
            "the reward tokenizer's chat template writes an assistant message's content other "
            "than as the content itself (up to whitespace trimmed at its ends), so its "
            "characters cannot be found in the text; pass chat_template=False to join the "
            "contents instead"
        )
    turns, offsets = [(0, 0)] * len(contents), [0] * len(contents)
    for g, number in enumerate(placed):
        turns[number] = found.span(g + 1)
        offsets[number] = contents[number].find(pieces[g])
    return _Rendered(text, turns, offsets, templated=True)


def _policy_token_spans(tokenizer, token_ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """The policy's decoding of ``token_ids`` (special tokens skipped, as TRL decodes completions)
    and the ``(start, end)`` characters of each token in it; see
    :func:`tokenshape.units.token_char_spans`."""
    return token_char_spans(tokenizer, token_ids, skip_special_tokens=True)


#: Message fields that hold reasoning, which chat templates write before the content.
_REASONING_FIELDS = ("reasoning_content", "reasoning", "thinking")


def _turn_tokens(
    completion: str | Sequence[Mapping[str, Any]],
    length: int,
    tool_mask: Sequence[int] | None,
    row: int,
) -> list[tuple[int, int]]:
    """The ``(start, end)`` token range of each assistant turn of one completion.

    The turns are the runs of the policy's own tokens (``tool_mask`` 1; TRL's tool loop marks
    tool results 0), in order, one per assistant message; a completion of one assistant message
    is one run over all its tokens.
    """
    if isinstance(completion, str):
        return [(0, length)]
    turns = sum(1 for message in completion if _is_turn(message))
    if tool_mask is None:
        if len(completion) == 1 and turns == 1:
            return [(0, length)]
        raise TokenShapeError(
            f"completion {row} has {turns} assistant messages among {len(completion)} messages; "
            "their tokens are found through TRL's tool_mask (1 on generated tokens, 0 on tool "
            "results), which this call did not receive: ShapedGRPOTrainer passes it, a direct "
            "call passes tool_mask=..."
        )
    mask = [int(value) for value in tool_mask]
    if len(mask) != length:
        raise InvalidArgumentError(
            f"tool_mask[{row}]", f"{len(mask)} values", f"{length}, one per completion token"
        )
    runs, start = [], None
    for position, value in enumerate([*mask, 0]):
        if value and start is None:
            start = position
        elif not value and start is not None:
            runs.append((start, position))
            start = None
    if length == 0:
        return [(0, 0)] * turns
    if len(runs) != turns:
        raise TokenShapeError(
            f"completion {row} has {turns} assistant messages but {len(runs)} runs of generated "
            "tokens in tool_mask; each assistant message must be one run"
        )
    return runs


def _content_start(message: str | Mapping[str, Any], text: str, row: int, turn: int) -> int:
    """Where an assistant message's content starts in the policy's decoding of its own tokens.

    The content follows the message's reasoning (templates write reasoning first) and ends the
    decoding, up to trailing whitespace; with tool calls, which templates write after it, it is
    the first occurrence after the reasoning.
    """
    content = message if isinstance(message, str) else _message_text(message)
    after = 0
    if not isinstance(message, str):
        reasoning = next(
            (message[f] for f in _REASONING_FIELDS if isinstance(message.get(f), str)), ""
        )
        if reasoning:
            found = text.find(reasoning)
            after = found + len(reasoning) if found >= 0 else len(text) + 1
    if not isinstance(message, str) and message.get("tool_calls"):
        start = text.find(content, after)
    else:
        end, core = len(text.rstrip()), content.rstrip()
        start = end - len(core) if text[:end].endswith(core) else -1
    if start < after:
        raise TokenShapeError(
            f"completion {row}: the content of turn {turn} ({content[:40]!r}) is not where its "
            f"message puts it in the policy tokenizer's decoding of its tokens ({text[:60]!r}); "
            "pass the policy's own tokenizer as policy_tokenizer"
        )
    return start


def _check_tokenizer(tokenizer) -> None:
    if tokenizer is None or not callable(tokenizer):
        raise InvalidArgumentError(
            "tokenizer", tokenizer, "the reward model's tokenizer (or a reward with .tokenizer)"
        )
    if not getattr(tokenizer, "is_fast", False):
        raise InvalidArgumentError(
            "tokenizer",
            type(tokenizer).__name__,
            "a fast tokenizer: tokenshape finds the completion's tokens and aligns them to the "
            "policy's through character offsets, which slow tokenizers don't return; load it "
            "with AutoTokenizer.from_pretrained(..., use_fast=True), or convert it with "
            "transformers.PreTrainedTokenizerFast(tokenizer_object=transformers."
            "convert_slow_tokenizer.convert_slow_tokenizer(slow))",
        )


class CompletionShaper:
    """A reward model that scores, explains and shapes batches of completions.

    Args:
        reward: a tokenshape reward function (:class:`~tokenshape.reward.SequenceClassifierReward`,
            :class:`~tokenshape.reward.StringScorerReward` or any ``(input_ids B x L,
            attention_mask B x L) -> B`` callable), or a Hugging Face sequence classifier, read at
            logit 0. It runs where it is: placing the model is the caller's.
        shaping: the settings.
        tokenizer: the reward model's tokenizer, a fast one (default: ``reward.tokenizer``).

    Attributes:
        signals: signal -> method of every weighted signal but ``"sparse"``, with an
            :class:`~tokenshape.AmortizedExplainer` of ``reward`` built for a signal whose method
            is ``"amortized"`` (it learns across batches).
        max_length: reward-model tokens per row at most, ``shaping.max_length`` or the
            tokenizer's limit.
    """

    def __init__(
        self, reward: RewardFn | torch.nn.Module, shaping: CompletionShaping, *, tokenizer=None
    ) -> None:
        if isinstance(reward, torch.nn.Module):
            reward = SequenceClassifierReward(reward, tokenizer)
        if not callable(reward):
            raise InvalidArgumentError(
                "reward", reward, "a reward function or a sequence classifier"
            )
        if not isinstance(shaping, CompletionShaping):
            raise InvalidArgumentError("shaping", shaping, "a CompletionShaping")
        tokenizer = tokenizer if tokenizer is not None else getattr(reward, "tokenizer", None)
        _check_tokenizer(tokenizer)
        self.reward = reward
        self.shaping = shaping
        self.tokenizer = tokenizer
        self.signals = {
            signal: self._amortized_explainer()
            if isinstance(method, str) and method == AMORTIZED
            else method
            for signal, method in shaping.signals.items()
        }
        model_max = getattr(tokenizer, "model_max_length", None)
        self.max_length = (
            shaping.max_length
            if shaping.max_length is not None
            else (model_max if isinstance(model_max, int) and model_max < 100_000 else None)
        )

    def _amortized_explainer(self) -> AmortizedExplainer:
        budget, seed = self.shaping.budget, self.shaping.seed
        if budget is None:
            return AmortizedExplainer(self.reward, seed=seed)
        return AmortizedExplainer(self.reward, teacher_budget=budget, seed=seed)

    def shape(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None = None,
        *,
        policy_tokenizer=None,
        tool_mask: Sequence[Sequence[int]] | None = None,
    ) -> ShapedBatch:
        """Score, explain and shape a batch; see the module docstring.

        Args:
            prompts: ``B`` prompts (strings or message lists).
            completions: ``B`` completions (strings, or message lists when the prompts are).
            completion_ids: ``B`` lists of the policy's completion token ids (padded or not);
                with ``policy_tokenizer``, the token rewards are laid over them.
            policy_tokenizer: the policy's tokenizer, which decodes ``completion_ids``.
            tool_mask: ``B`` lists, one value per completion token: 1 on the tokens the policy
                generated, 0 on tool results inside the completion. Needed to place the turns of
                a completion with tool calls; None when every completion is one assistant
                message or a string.

        Returns:
            The :class:`ShapedBatch`; its policy-token fields are filled when both
            ``completion_ids`` and ``policy_tokenizer`` are given.
        """
        if len(prompts) != len(completions):
            raise InvalidArgumentError(
                "completions", f"{len(completions)} completions", f"{len(prompts)}, one per prompt"
            )
        if tool_mask is not None and len(tool_mask) != len(completions):
            raise InvalidArgumentError(
                "tool_mask", f"{len(tool_mask)} rows", f"{len(completions)}, one per completion"
            )
        shaping = self.shaping
        rendered = [
            _render(p, c, self.tokenizer, chat_template=shaping.chat_template)
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
        metrics: dict[str, float] = {}
        if rows.numel():
            ids, mask, response = input_ids[rows], attention_mask[rows], response_mask[rows]
            unit = turn[rows] if shaping.unit == "turn" else shaping.unit
            for signal, method in self.signals.items():
                started = time.perf_counter()
                result = attribute(
                    self.reward,
                    ids,
                    mask,
                    response,
                    method=method,
                    budget=shaping.budget,
                    seed=shaping.seed,
                    unit=unit,
                    masking=shaping.masking,
                    tokenizer=self.tokenizer,
                    max_rows=shaping.max_rows,
                )
                attributions[signal] = result
                metrics[f"{signal}/seconds"] = time.perf_counter() - started
                metrics[f"{signal}/rows_per_sequence"] = float(result.rows.double().mean())
                metrics[f"{signal}/efficiency_error"] = float(result.efficiency_error.mean())
                if isinstance(method, AmortizedExplainer) and not math.isnan(
                    method.fidelity.pearson
                ):
                    metrics[f"{signal}/pearson"] = method.fidelity.pearson
        name = getattr(self.reward, "__name__", type(self.reward).__name__)
        scored = explained if attributions else torch.zeros_like(explained)
        if attributions:
            full = next(iter(attributions.values())).full_value
            scores[rows] = check_reward_output(full, len(rows), name=name).cpu()
        if not bool(scored.all()):  # rows without players (or no signal): the model's own score
            others = (~scored).nonzero().flatten()
            with torch.inference_mode():
                values = self.reward(input_ids[others], attention_mask[others])
            scores[others] = check_reward_output(values, len(others), name=name).cpu()
        batch = ShapedBatch(
            scores=scores, attributions=attributions, explained=explained, metrics=metrics
        )
        if completion_ids is not None and policy_tokenizer is not None:
            self._align(
                batch,
                completions,
                rendered,
                encoded,
                rows,
                completion_ids,
                tool_mask,
                policy_tokenizer,
            )
        return batch

    def _encode(self, rendered: list[_Rendered]) -> dict[str, Tensor]:
        """Tokenise the texts; ``turn`` (``B x L``) numbers the turn of each completion token, -1
        elsewhere (prompt, markup, special tokens, padding). Text a chat template wrote already
        holds its special tokens, so the tokenizer adds none to it (as TRL tokenises it)."""
        templated = {r.templated for r in rendered}
        if len(templated) > 1:
            raise InvalidArgumentError(
                "completions",
                "a mix of conversations and plain text",
                "one kind per batch (the chat template adds special tokens, plain text does not)",
            )
        batch = self.tokenizer(
            [r.text for r in rendered],
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            padding=True,
            truncation=self.max_length is not None,
            max_length=self.max_length,
            add_special_tokens=not templated.pop() if templated else True,
            return_tensors="pt",
        )
        offsets = batch["offset_mapping"].long()
        is_text = (batch["special_tokens_mask"] == 0) & batch["attention_mask"].bool()
        turn = torch.full(is_text.shape, -1, dtype=torch.long)
        for row, r in enumerate(rendered):
            for number, (start, end) in enumerate(r.turns):
                inside = is_text[row] & tokens_ending_in(offsets[row], start, end)
                turn[row, inside] = number
        return {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "offsets": offsets,
            "turn": turn,
        }

    def _align(
        self,
        batch: ShapedBatch,
        completions: Sequence[Any],
        rendered: list[_Rendered],
        encoded: dict[str, Tensor],
        rows: Tensor,
        completion_ids: Sequence[Sequence[int]],
        tool_mask: Sequence[Sequence[int]] | None,
        policy_tokenizer,
    ) -> None:
        """Fill ``batch``'s policy-token fields from the reward-model attributions.

        Each turn's tokens come from the completion's structure (:func:`_turn_tokens`), each
        turn's content from its place in its message (:func:`_content_start`); scores move only
        onto the policy's own tokens.
        """
        ids = [[int(token) for token in row] for row in completion_ids]
        if len(ids) != len(rendered):
            raise InvalidArgumentError(
                "completion_ids", f"{len(ids)} rows", f"{len(rendered)}, one per completion"
            )
        width = max((len(row) for row in ids), default=0)
        generated = torch.zeros(len(ids), width, dtype=torch.bool)
        turn_index = torch.zeros(len(ids), width, dtype=torch.long)
        aligned = {
            signal: torch.zeros(len(ids), width, dtype=torch.float64) for signal in self.signals
        }
        position_of = {int(row): i for i, row in enumerate(rows)}
        for row, (r, token_ids) in enumerate(zip(rendered, ids)):
            completion = completions[row]
            runs = _turn_tokens(
                completion, len(token_ids), None if tool_mask is None else tool_mask[row], row
            )
            messages = (
                [completion]
                if isinstance(completion, str)
                else [m for m in completion if _is_turn(m)]
            )
            spans: list[tuple[int, int]] = []
            columns: list[int] = []
            policy_turns = []
            offset = 0
            for number, ((first, stop), message) in enumerate(zip(runs, messages)):
                text, run_spans = _policy_token_spans(policy_tokenizer, token_ids[first:stop])
                start = offset + _content_start(message, text, row, number) + r.offsets[number]
                policy_turns.append((start, start + r.turns[number][1] - r.turns[number][0]))
                spans.extend((offset + a, offset + b) for a, b in run_spans)
                columns.extend(range(first, stop))
                turn_index[row, first:] = number
                offset += len(text)
            generated[row, columns] = True
            if row not in position_of:
                continue
            source = _spans_in_policy_text(
                encoded["offsets"][row], encoded["turn"][row], r.turns, policy_turns
            )
            on = encoded["turn"][row] >= 0
            for signal, result in batch.attributions.items():
                scores = result.scores[position_of[row]].detach().cpu().double()[on]
                aligned[signal][row, columns] = align_scores(scores, source, spans)
        batch.completion_mask = generated
        batch.turn_index = turn_index
        batch.policy_attributions = aligned
        batch.token_rewards = shape_rewards(
            batch.scores,
            aligned,
            self.shaping.params,
            _last_token_when(~batch.explained, generated),
        )


def _last_token_when(rows: Tensor, mask: Tensor) -> Tensor:
    """``mask`` (``B x T`` bool), reduced to its last True token on ``rows`` (``B`` bool)."""
    positions = torch.arange(1, mask.shape[1] + 1)
    last = (mask.long() * positions).argmax(dim=1, keepdim=True)
    only_last = torch.zeros_like(mask).scatter_(1, last, True) & mask
    return torch.where(rows.unsqueeze(1), only_last, mask)


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
