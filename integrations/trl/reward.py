"""``ShapedReward``: an explained reward model as a TRL reward function that keeps dense rewards.

It is a plain callable ``(prompts, completions, completion_ids, **kwargs) -> list[float]``, so it
works unchanged as a ``reward_funcs`` entry of TRL's ``GRPOTrainer``, ``RLOOTrainer`` and
``OnlineDPOTrainer``. Each call hands the batch to the shared core, a
:class:`~tokenshape.completions.CompletionShaper` (render, tokenise, score, attribute, shape,
align to the policy's ``completion_ids``; see :mod:`tokenshape.completions`), returns the scores,
logs each signal's cost through TRL's ``log_metric`` and keeps the
:class:`~tokenshape.completions.ShapedBatch` in :attr:`ShapedReward.last`, where
:class:`~tokenshape.integrations.trl.ShapedGRPOTrainer` reads the token rewards (``B x T``, each
row summing to its score, zero on padding and tool results). A reward model it holds is placed on
``accelerate.PartialState().device``, as TRL expects of a callable reward.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from tokenshape.attribution import Attributor
from tokenshape.completions import CompletionShaper, CompletionShaping, ShapedBatch
from tokenshape.reward import RewardFn
from tokenshape.shaping import ShapingParams

__all__ = ["ShapedReward"]


class ShapedReward:
    """An explained reward model as a TRL reward function with dense token rewards on the side.

    Args:
        reward: a tokenshape reward function (:class:`~tokenshape.reward.SequenceClassifierReward`,
            :class:`~tokenshape.reward.StringScorerReward` or any ``(input_ids, attention_mask) ->
            B`` callable), or a Hugging Face sequence classifier, read at logit 0. A model it
            holds (``.model``) is moved to ``accelerate.PartialState().device``.
        params: the shaping weights over signals; see
            :class:`~tokenshape.completions.CompletionShaping`.
        tokenizer: the reward model's tokenizer, a fast one (default: ``reward.tokenizer``).
        methods: extra signal name -> method name or configured
            :class:`~tokenshape.attribution.Attributor`.
        policy_tokenizer: the policy's tokenizer, needed to align token rewards to
            ``completion_ids`` (``ShapedGRPOTrainer`` sets it to its own when None).
        budget, seed, unit, masking, max_rows, max_length, chat_template: see
            :class:`~tokenshape.completions.CompletionShaping`.
        name: the function's ``__name__``, which names TRL's ``rewards/<name>/...`` metrics
            (default ``"shaped_" + reward.__name__``).

    Attributes:
        shaper: the :class:`~tokenshape.completions.CompletionShaper` that does the work.
        last: the :class:`~tokenshape.completions.ShapedBatch` of the last call (None before).

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
        shaping = CompletionShaping(
            params=params,
            methods=dict(methods or {}),
            budget=budget,
            seed=seed,
            unit=unit,
            masking=masking,
            max_rows=max_rows,
            max_length=max_length,
            chat_template=chat_template,
        )
        self.shaper = CompletionShaper(reward, shaping, tokenizer=tokenizer)
        self.policy_tokenizer = policy_tokenizer
        reward = self.shaper.reward
        self.__name__ = name or f"shaped_{getattr(reward, '__name__', type(reward).__name__)}"
        self.last: ShapedBatch | None = None
        model = getattr(reward, "model", None)
        if isinstance(model, torch.nn.Module):
            from accelerate import PartialState

            model.to(PartialState().device)

    @property
    def reward(self) -> RewardFn:
        """The reward function."""
        return self.shaper.reward

    @property
    def params(self) -> ShapingParams:
        """The shaping weights."""
        return self.shaper.shaping.params

    @property
    def tokenizer(self):
        """The reward model's tokenizer."""
        return self.shaper.tokenizer

    @property
    def signals(self) -> dict[str, str | Attributor]:
        """Signal -> method of every weighted signal but ``"sparse"``."""
        return self.shaper.signals

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None = None,
        tool_mask: Sequence[Sequence[int]] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        """Score and explain a batch; see :meth:`CompletionShaper.shape
        <tokenshape.completions.CompletionShaper.shape>`.

        Args:
            prompts: ``B`` prompts (strings or message lists).
            completions: ``B`` completions (strings or message lists).
            completion_ids: ``B`` lists of the policy's completion token ids (padded or not).
            tool_mask: ``B`` lists, one value per completion token: 1 on the tokens the policy
                generated, 0 on tool results inside the completion (TRL's tool loop; passed by
                ``ShapedGRPOTrainer``). Needed to place the turns of a completion with tool
                calls; None when every completion is one assistant message or a string.
            **kwargs: TRL's extra columns; ``log_metric(name, value)``, when given, receives
                each entry of :attr:`ShapedBatch.metrics <tokenshape.completions.ShapedBatch>`
                as ``tokenshape/<signal>/<metric>``: ``seconds``, ``rows_per_sequence``,
                ``efficiency_error`` and, for an amortised signal once measured, ``pearson``.

        Returns:
            ``B`` floats, the reward model's scores.
        """
        batch = self.shaper.shape(
            prompts,
            completions,
            completion_ids,
            policy_tokenizer=self.policy_tokenizer,
            tool_mask=tool_mask,
        )
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            for metric, value in batch.metrics.items():
                log_metric(f"tokenshape/{metric}", value)
        self.last = batch
        return batch.scores.tolist()
