"""KernelSHAP with paired sampling, enumerated extreme sizes and exact efficiency.

The Shapley values are the solution of a weighted least squares over coalitions z in {0,1}^M,
weighted by the Shapley kernel pi(z) = (M-1) / (C(M,|z|) |z| (M-|z|)), constrained by efficiency
sum_i phi_i = v(all) - v(empty) (Lundberg & Lee 2017). With B rows per sequence:

* if 2^M <= B every coalition is evaluated and the solution is the exact Shapley value;
* otherwise coalition sizes are taken in pairs (s, M-s) from the extremes inwards, and a pair is
  enumerated completely while the budget's share of its kernel mass covers it; the kernel mass
  left over is estimated by sampling coalitions in antithetic pairs (S and its complement). A
  coalition drawn twice is evaluated once and weighted by its draw count, so no row is spent on
  a repeat; each sampled coalition's weight is the remaining mass times its share of the draws.

The constrained problem is solved in float64 on the CPU without a pseudo-inverse of the KKT
system: writing phi = gap / M + u with sum(u) = 0 (gap = v(all) - v(empty)) turns it into an
unconstrained weighted least squares in u over the centred coalitions z - |z| / M, whose rows sum
to 0. A coalition and its complement fold into one row (their centred rows are opposite), and
an SVD least-squares solve of the K x M weighted rows (LAPACK ``gelsd``, O(K M min(K, M)): at
the usual budgets below 2M it grows with the budget, not with M^3) returns the minimum-norm
solution, orthogonal to the ones vector, so efficiency holds to float64 rounding whatever the
budget. Directions are kept down to 1e-10 of the largest singular value, on the rows themselves
rather than on a Gram matrix, whose conditioning is the square.

Underdetermined regime. A coalition and its complement have the same centred row up to sign, so
an antithetic pair determines one direction of u, not two: a budget of B rows fixes at most about
(B - 2) / 2 of the M - 1 directions, and below B = 2M (not M) the values are not determined by
the samples. There the method returns, of the efficient solutions that fit the sampled values
best, the one closest to the equal split gap / M (the minimum-norm u): the samples' correction
to the equal split, and equal shares along every direction no sampled pair tells apart.
"""

from __future__ import annotations

import itertools
from math import comb

import numpy as np
import torch
from torch import Tensor

from tokenshape.attribution.base import CoalitionAttributor, CoalitionPlan

__all__ = ["KernelShapAttributor", "shapley_kernel_size_mass"]

_MAX_DRAWS_PER_ROW = 20
#: Singular values below this fraction of the largest are dropped from the least squares.
_RCOND = 1e-10


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


def _distinct_antithetic_sample(
    sizes: Tensor, size_probs: Tensor, n_rows: int, n_units: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Draw coalitions in antithetic pairs until ``n_rows`` distinct ones are held.

    A size is drawn with probability proportional to ``size_probs``, then a uniform coalition of
    that size, and its complement with it. A coalition drawn again spends no row: its draw count
    grows instead, so the counts stay a Monte Carlo estimate of the kernel mass while every row
    evaluated is new. Drawing stops after ``_MAX_DRAWS_PER_ROW * n_rows`` draws (small games whose
    open sizes hold fewer coalitions than ``n_rows``).

    Returns:
        (coalitions ``N x M`` bool with N <= n_rows, draw counts ``N`` float64).
    """
    index: dict[bytes, int] = {}
    rows: list[Tensor] = []
    counts: list[float] = []

    def add(coalition: Tensor) -> bool:
        key = coalition.numpy().tobytes()
        if key in index:
            counts[index[key]] += 1.0
            return False
        index[key] = len(rows)
        rows.append(coalition)
        counts.append(1.0)
        return True

    draws = 0
    while len(rows) < n_rows and draws < _MAX_DRAWS_PER_ROW * n_rows:
        batch = max(1, (n_rows - len(rows) + 1) // 2)
        drawn = sizes[torch.multinomial(size_probs, batch, replacement=True, generator=generator)]
        for coalition in _random_coalitions(drawn, n_units, generator):
            if len(rows) >= n_rows:
                break
            draws += 1
            add(coalition)
            if len(rows) < n_rows:
                draws += 1
                add(~coalition)
    return torch.stack(rows), torch.tensor(counts, dtype=torch.float64)


def _fold_complements(
    coalitions: Tensor, target: Tensor, weights: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Merge each coalition with its complement into one row of the centred least squares.

    The complement's centred row is the coalition's negated, so the pair's two squared residuals
    w1 (c.u - t1)^2 + w2 (-c.u - t2)^2 are (w1 + w2) (c.u - (w1 t1 - w2 t2) / (w1 + w2))^2 plus a
    constant: one row with the summed weight, which halves the rows of a paired sample.

    Args:
        coalitions: ``N x M`` bool.
        target: ``N`` float64, each row's target.
        weights: ``N`` float64.

    Returns:
        (coalitions ``K x M`` bool, target ``K``, weights ``K``), K <= N.
    """
    packed = np.packbits(coalitions.numpy(), axis=1)
    complements = np.packbits(~coalitions.numpy(), axis=1)
    row_of = {row.tobytes(): i for i, row in enumerate(packed)}
    first, second, taken = [], [], set()
    for i, complement in enumerate(complements):
        if i in taken:
            continue
        j = row_of.get(complement.tobytes())
        first.append(i)
        second.append(j if j is not None and j not in taken else -1)
        taken.update((i, second[-1]))
    first_rows, second_rows = torch.tensor(first), torch.tensor(second)
    paired = second_rows >= 0
    w1, t1 = weights[first_rows], target[first_rows]
    w2 = torch.where(paired, weights[second_rows.clamp(min=0)], 0.0)
    t2 = torch.where(paired, target[second_rows.clamp(min=0)], 0.0)
    merged = w1 + w2
    return coalitions[first_rows], (w1 * t1 - w2 * t2) / merged, merged


class KernelShapAttributor(CoalitionAttributor):
    """Batched KernelSHAP (see the module docstring for the estimator)."""

    name = "kernel_shap"
    default_budget = 256

    def _plan(self, n_units: int, budget: int | None, generator: torch.Generator) -> CoalitionPlan:
        empty = CoalitionPlan(
            torch.zeros(0, n_units, dtype=torch.bool), torch.zeros(0, dtype=torch.float64)
        )
        if n_units == 1:
            return empty
        mass = shapley_kernel_size_mass(n_units)
        remaining_rows = budget - 2
        if n_units < 62 and remaining_rows >= 2**n_units - 2:
            blocks = [_all_coalitions(n_units, s) for s in range(1, n_units)]
            weights = [
                torch.full(
                    (comb(n_units, s),), float(mass[s - 1]) / comb(n_units, s), dtype=torch.float64
                )
                for s in range(1, n_units)
            ]
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
                weights.append(
                    torch.full(
                        (comb(n_units, s),),
                        float(mass[s - 1]) / comb(n_units, s),
                        dtype=torch.float64,
                    )
                )
                open_sizes.remove(s)
            remaining_rows -= count
            remaining_mass -= pair_mass
        if remaining_rows > 0 and open_sizes:
            size_values = torch.tensor(open_sizes, dtype=torch.long)
            sampled, counts = _distinct_antithetic_sample(
                size_values, mass[size_values - 1], remaining_rows, n_units, generator
            )
            blocks.append(sampled)
            weights.append(remaining_mass * counts / counts.sum())
        if not blocks:
            return empty
        return CoalitionPlan(torch.cat(blocks), torch.cat(weights))

    def _solve(
        self, plan: CoalitionPlan, values: Tensor, v_empty: Tensor, v_full: Tensor
    ) -> Tensor:
        n_units = plan.coalitions.shape[1]
        gap = v_full - v_empty
        if n_units == 1 or plan.coalitions.shape[0] == 0:
            return torch.full(
                (n_units,), float(gap) / n_units, dtype=torch.float64, device=values.device
            )
        cpu = torch.device("cpu")
        z = plan.coalitions.to(cpu)
        sizes = z.sum(dim=1, dtype=torch.float64)
        share = float(gap) / n_units
        target = values.to(cpu) - float(v_empty) - sizes * share  # N
        z, target, weights = _fold_complements(z, target, plan.weights.to(cpu))
        centred = z.to(torch.float64) - z.sum(dim=1, keepdim=True, dtype=torch.float64) / n_units
        root = weights.sqrt()
        u = torch.linalg.lstsq(
            root[:, None] * centred, (root * target)[:, None], rcond=_RCOND, driver="gelsd"
        ).solution[:, 0]
        u = u - u.mean()  # orthogonal to the ones vector up to rounding: make it exact
        return (share + u).to(values.device)
