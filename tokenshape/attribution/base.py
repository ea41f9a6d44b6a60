"""What every attribution method shares.

:class:`Attributor` is the template: a method turns a :class:`~tokenshape.game.RewardGame` into
per-unit scores. Most methods are :class:`CoalitionAttributor` s: they only choose which coalitions
to evaluate (``_plan``) and how to turn the values into scores (``_solve``); the base class adds
the full and empty coalitions, evaluates every sequence's coalitions in one batched pass, and
gives each sequence its own generator seeded with ``seed`` so a sequence's result does not depend
on the rest of the batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from tokenshape.game import RewardGame

__all__ = ["Attributor", "CoalitionAttributor", "CoalitionPlan", "GameAttribution"]


@dataclass
class GameAttribution:
    """Per-unit scores of a batch.

    Attributes:
        unit_scores: one float64 tensor ``M_b`` per sequence.
        base_value: ``B`` float64.
        full_value: ``B`` float64.
        rows: ``B`` long, forward rows spent per sequence.
    """

    unit_scores: list[Tensor]
    base_value: Tensor
    full_value: Tensor
    rows: Tensor


@dataclass
class CoalitionPlan:
    """Coalitions a method wants evaluated for one sequence, besides the full and empty ones.

    Attributes:
        coalitions: ``N x M`` bool, True where a unit is present.
        weights: ``N`` float64 regression weights, or None when the method needs none.
    """

    coalitions: Tensor
    weights: Tensor | None = None


class Attributor(ABC):
    """An attribution method.

    Class attributes:
        name: the method's name in :func:`tokenshape.attribute` and in results.
        default_budget: rows per sequence when the caller gives none; None for methods whose row
            count is fixed by the number of units.
        max_units: the most units per sequence the method handles, or None.
        uses_masking: whether the method evaluates coalitions; one that does not (``attention``)
            runs without a replacement token, and so without a tokenizer.
    """

    name: ClassVar[str]
    default_budget: ClassVar[int | None] = None
    max_units: ClassVar[int | None] = None
    uses_masking: ClassVar[bool] = True

    @abstractmethod
    def attribute_game(self, game: RewardGame, *, budget: int | None, seed: int) -> GameAttribution:
        """Scores of every unit of every sequence of ``game``."""


def sequence_generator(seed: int) -> torch.Generator:
    """A fresh CPU generator for one sequence: the same seed gives the same coalitions."""
    return torch.Generator(device="cpu").manual_seed(seed)


class CoalitionAttributor(Attributor):
    """A method defined by the coalitions it evaluates and how it fits scores to their values."""

    @abstractmethod
    def _plan(self, n_units: int, budget: int | None, generator: torch.Generator) -> CoalitionPlan:
        """The coalitions to evaluate for a sequence of ``n_units`` units.

        ``budget`` counts every row of the sequence, the full and empty coalitions included.
        """

    @abstractmethod
    def _solve(
        self, plan: CoalitionPlan, values: Tensor, v_empty: Tensor, v_full: Tensor
    ) -> Tensor:
        """Scores ``M`` from ``values`` (``N``, float64) of ``plan.coalitions`` and the two ends."""

    def attribute_game(self, game: RewardGame, *, budget: int | None, seed: int) -> GameAttribution:
        if budget is None:
            budget = self.default_budget
        device = game.input_ids.device
        plans, coalitions = [], []
        for n_units in game.n_units:
            plan = self._plan(n_units, budget, sequence_generator(seed))
            ends = torch.stack(
                [torch.ones(n_units, dtype=torch.bool), torch.zeros(n_units, dtype=torch.bool)]
            )
            plans.append(plan)
            coalitions.append(torch.cat([ends, plan.coalitions.cpu()]))
        values = game.values(coalitions)
        scores, base, full = [], [], []
        for plan, value in zip(plans, values):
            moved = CoalitionPlan(
                coalitions=plan.coalitions.to(device),
                weights=None if plan.weights is None else plan.weights.to(device),
            )
            scores.append(self._solve(moved, value[2:], value[1], value[0]))
            full.append(value[0])
            base.append(value[1])
        rows = torch.tensor([c.shape[0] for c in coalitions], dtype=torch.long)
        return GameAttribution(scores, torch.stack(base), torch.stack(full), rows)
