"""KernelSHAP with paired sampling, enumerated extreme sizes and exact efficiency.

The Shapley values are the solution of a weighted least squares over coalitions z in {0,1}^M,
weighted by the Shapley kernel pi(z) = (M-1) / (C(M,|z|) |z| (M-|z|)), constrained by efficiency
sum_i phi_i = v(all) - v(empty) (Lundberg & Lee 2017). With B rows per sequence:

* if 2^M <= B every coalition is evaluated and the solution is the exact Shapley value;
* otherwise coalition sizes are taken in pairs (s, M-s) from the extremes inwards, and a pair is
  enumerated completely while the budget's share of its kernel mass covers it; the kernel mass
  left over is estimated by sampling coalitions in antithetic pairs (S and its complement), each
  sampled coalition weighted by the remaining mass over the number sampled.

The constrained problem is solved through its KKT system in float64 with a pseudo-inverse, so a
budget below the number of units still gives the minimum-norm solution that is exactly efficient.
"""

from __future__ import annotations

import itertools
from math import comb

import torch
from torch import Tensor

from tokenshape.attribution.base import CoalitionAttributor, CoalitionPlan

__all__ = ["KernelShapAttributor", "shapley_kernel_size_mass"]


def shapley_kernel_size_mass(n_units: int) -> Tensor:
    """Kernel mass of each coalition size.

    Args:
        n_units: M >= 2.

    Returns:
        Tensor ``M - 1`` float64: entry s-1 is the share of the Shapley kernel's total weight on
        coalitions of size s (size s has C(M, s) coalitions of weight (M-1)/(C(M,s) s (M-s))).
    """
    sizes = torch.arange(1, n_units, dtype=torch.float64)
    mass = (n_units - 1) / (sizes * (n_units - sizes))
    return mass / mass.sum()


def _all_coalitions(n_units: int, size: int) -> Tensor:
    """Every coalition of ``size`` units out of ``n_units``: ``C(M, s) x M`` bool."""
    members = torch.tensor(list(itertools.combinations(range(n_units), size)), dtype=torch.long)
    out = torch.zeros(members.shape[0], n_units, dtype=torch.bool)
    out.scatter_(1, members, True)
    return out


def _random_coalitions(sizes: Tensor, n_units: int, generator: torch.Generator) -> Tensor:
    """One uniformly random coalition per entry of ``sizes``: ``len(sizes) x M`` bool."""
    ranks = torch.rand(sizes.shape[0], n_units, generator=generator).argsort(dim=1).argsort(dim=1)
    return ranks < sizes[:, None]


class KernelShapAttributor(CoalitionAttributor):
    """Batched KernelSHAP (see the module docstring for the estimator)."""

    name = "kernel_shap"
    default_budget = 256

    def _plan(self, n_units: int, budget: int | None, generator: torch.Generator) -> CoalitionPlan:
        empty = CoalitionPlan(torch.zeros(0, n_units, dtype=torch.bool), torch.zeros(0, dtype=torch.float64))
        if n_units == 1:
            return empty
        mass = shapley_kernel_size_mass(n_units)
        remaining_rows = budget - 2
        if n_units < 62 and remaining_rows >= 2**n_units - 2:
            blocks = [_all_coalitions(n_units, s) for s in range(1, n_units)]
            weights = [torch.full((comb(n_units, s),), float(mass[s - 1]) / comb(n_units, s), dtype=torch.float64) for s in range(1, n_units)]
            return CoalitionPlan(torch.cat(blocks), torch.cat(weights))

        blocks, weights = [], []
        remaining_mass = 1.0
        open_sizes = list(range(1, n_units))
        for low in range(1, n_units // 2 + 1):
            high = n_units - low
            pair = [low] if low == high else [low, high]
            count = sum(comb(n_units, s) for s in pair)
            pair_mass = float(sum(mass[s - 1] for s in pair))
            if remaining_rows * pair_mass / remaining_mass < count - 1e-9:
                break
            for s in pair:
                blocks.append(_all_coalitions(n_units, s))
                weights.append(torch.full((comb(n_units, s),), float(mass[s - 1]) / comb(n_units, s), dtype=torch.float64))
                open_sizes.remove(s)
            remaining_rows -= count
            remaining_mass -= pair_mass
        if remaining_rows > 0 and open_sizes:
            size_values = torch.tensor(open_sizes, dtype=torch.long)
            probs = mass[size_values - 1]
            n_pairs, single = divmod(remaining_rows, 2)
            drawn = size_values[torch.multinomial(probs, n_pairs + single, replacement=True, generator=generator)]
            sampled = _random_coalitions(drawn, n_units, generator)
            # Antithetic pairs: each drawn coalition and its complement (the last one alone if odd).
            sampled = torch.cat([sampled[:n_pairs], ~sampled[:n_pairs], sampled[n_pairs:]])
            blocks.append(sampled)
            weights.append(torch.full((sampled.shape[0],), remaining_mass / sampled.shape[0], dtype=torch.float64))
        if not blocks:
            return empty
        return CoalitionPlan(torch.cat(blocks), torch.cat(weights))

    def _solve(self, plan: CoalitionPlan, values: Tensor, v_empty: Tensor, v_full: Tensor) -> Tensor:
        n_units = plan.coalitions.shape[1]
        gap = v_full - v_empty
        if n_units == 1 or plan.coalitions.shape[0] == 0:
            return torch.full((n_units,), float(gap) / n_units, dtype=torch.float64, device=values.device)
        z = plan.coalitions.to(torch.float64)
        weighted = z * plan.weights[:, None]
        gram = z.T @ weighted  # M x M
        target = weighted.T @ (values - v_empty)  # M
        ones = torch.ones(n_units, 1, dtype=torch.float64, device=values.device)
        kkt = torch.cat(
            [torch.cat([gram, ones], dim=1), torch.cat([ones.T, torch.zeros(1, 1, dtype=torch.float64, device=values.device)], dim=1)]
        )
        rhs = torch.cat([target, gap.reshape(1)])
        return (torch.linalg.pinv(kkt) @ rhs)[:n_units]
