"""Exact Shapley values by evaluating all 2^M coalitions: the reference for short responses.

phi_i = sum over S not containing i of |S|! (M-|S|-1)! / M! * (v(S u {i}) - v(S)).
"""

from __future__ import annotations

from math import factorial

import torch
from torch import Tensor

from tokenshape.attribution.base import CoalitionAttributor, CoalitionPlan

__all__ = ["MAX_EXACT_UNITS", "ExactShapleyAttributor", "shapley_from_values"]

#: 2^16 = 65,536 rows per sequence; beyond that use kernel_shap.
MAX_EXACT_UNITS = 16


def _bit_table(n_units: int) -> Tensor:
    """``2^M x M`` bool: row k holds the bits of k (unit i present when bit i is set)."""
    codes = torch.arange(2**n_units, dtype=torch.long)
    return (codes[:, None] >> torch.arange(n_units)) & 1 == 1


def shapley_from_values(values: Tensor) -> Tensor:
    """Shapley values of a game given on every coalition.

    Args:
        values: ``2^M`` float64, ``values[k]`` = v(coalition whose members are the set bits of k).

    Returns:
        ``M`` float64.
    """
    n_units = values.shape[0].bit_length() - 1
    codes = torch.arange(values.shape[0], device=values.device)
    bits = _bit_table(n_units).to(values.device)
    weights = torch.tensor(
        [factorial(s) * factorial(n_units - s - 1) / factorial(n_units) for s in range(n_units)]
        + [0.0],
        dtype=torch.float64,
        device=values.device,
    )
    # Row k, column i: v(k with i) - v(k), weighted by |k|! (M-|k|-1)! / M! where i is not in k
    # (the marginal contribution of i to coalition k); zero where i is already in k.
    with_i = codes[:, None] | (1 << torch.arange(n_units, device=values.device))
    marginal = values[with_i] - values[:, None]
    weight = torch.where(bits, 0.0, weights[bits.sum(dim=1)][:, None])
    return (weight * marginal).sum(dim=0)


class ExactShapleyAttributor(CoalitionAttributor):
    """Exact Shapley values; its row count is 2^M per sequence, whatever the budget."""

    name = "exact"
    max_units = MAX_EXACT_UNITS

    def _plan(self, n_units: int, budget: int | None, generator: torch.Generator) -> CoalitionPlan:
        return CoalitionPlan(_bit_table(n_units)[1:-1])

    def _solve(
        self, plan: CoalitionPlan, values: Tensor, v_empty: Tensor, v_full: Tensor
    ) -> Tensor:
        every = torch.cat([v_empty.reshape(1), values, v_full.reshape(1)])
        return shapley_from_values(every)
