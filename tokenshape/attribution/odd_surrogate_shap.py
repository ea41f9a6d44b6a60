"""KernelSHAP adjusted by a kernel-ridge surrogate of the game's odd part.

The Shapley value of a game v depends only on its odd part, d(S) = (v(S) - v(N \\ S)) / 2: the
even part gives every player zero. KernelSHAP's paired rows (each sampled coalition S with its
complement, the enumerated sizes closed under complements) observe d exactly, and its linear fit
is exact when d is additive; what it misses is the odd part's higher-order terms (three-way
interactions, saturation). This method fits them and uses the fit as a control variate:

1. the coalitions are KernelSHAP's plan (:class:`~tokenshape.attribution.kernel_shap.KernelShapAttributor`:
   extreme sizes enumerated, the rest sampled in antithetic pairs, no repeated row);
2. kernel ridge regression of d on the P complete pairs, in +-1 coordinates x(S), with the odd
   kernel k(x, y) = sinh(gamma x.y / M) / sinh(gamma) (the odd part of exp(gamma x.y / M)), the
   pair (N, empty) included; gamma and the ridge are chosen by exact leave-one-out error;
3. the surrogate g(S) = sum_p alpha_p k(x(S), x_p) has exact Shapley values in closed form: each
   k(., x_p) depends on S only through |S n A_p| and |S \\ A_p| (A_p the members of pair p's
   coalition), a game with two kinds of players, O(M^2) per coalition size;
4. KernelSHAP on the residual game v - g (same rows, same weights, efficiency
   v(N) - v(empty) minus the sum of g's Shapley values) corrects what the surrogate missed.

The sum of both parts is exactly efficient, and exact once every coalition is evaluated (the
residual's KernelSHAP is then the residual's Shapley value). With fewer than
``min_pairs`` complete pairs it is KernelSHAP.
"""

from __future__ import annotations

from math import lgamma

import torch
from torch import Tensor

from tokenshape.attribution.base import CoalitionPlan
from tokenshape.attribution.kernel_shap import KernelShapAttributor
from tokenshape.errors import InvalidArgumentError

__all__ = ["OddSurrogateShapAttributor", "odd_kernel_shapley"]

GAMMAS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
RIDGES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def _odd_kernel(x: Tensor, y: Tensor, gamma: float) -> Tensor:
    """``N1 x N2`` odd kernel between rows of +-1 matrices ``x`` (``N1 x M``) and ``y``."""
    return torch.sinh(gamma * (x @ y.T) / x.shape[1]) / torch.sinh(
        torch.tensor(gamma, dtype=torch.float64)
    )


def _log_binomial(n: Tensor, k: Tensor) -> Tensor:
    return torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)


def _two_kind_shapley(size: int, n_units: int, gamma: float) -> tuple[float, float]:
    """Shapley values of the game S -> sinh(gamma x(S).x(A) / M) / sinh(gamma), |A| = ``size``.

    Returns:
        (the value of each member of A, the value of each player outside A).
    """
    m = n_units
    outside = m - size
    a = torch.arange(size + 1, dtype=torch.float64)[:, None]  # members of A in S
    b = torch.arange(outside + 1, dtype=torch.float64)[None, :]  # others in S
    dot = (2 * a - size) - (2 * b - outside)  # x(S).x(A)
    value = torch.sinh(gamma * dot / m) / torch.sinh(torch.tensor(gamma, dtype=torch.float64))
    s = a + b  # coalition size before the player joins
    log_w = (torch.lgamma(s + 1) + torch.lgamma(m - s) - lgamma(m + 1)).where(
        s <= m - 1, torch.tensor(float("-inf"), dtype=torch.float64)
    )
    member = 0.0
    if size > 0:
        log_count = _log_binomial(torch.tensor(size - 1.0), a[:-1]) + _log_binomial(
            torch.tensor(float(outside)), b
        )
        member = float(((log_count + log_w[:-1]).exp() * (value[1:] - value[:-1])).sum())
    other = 0.0
    if outside > 0:
        log_count = _log_binomial(torch.tensor(float(size)), a) + _log_binomial(
            torch.tensor(outside - 1.0), b[:, :-1]
        )
        other = float(((log_count + log_w[:, :-1]).exp() * (value[:, 1:] - value[:, :-1])).sum())
    return member, other


def odd_kernel_shapley(centers: Tensor, alpha: Tensor, gamma: float) -> Tensor:
    """Exact Shapley values of g(S) = sum_p alpha_p k(x(S), x(centers_p)).

    Args:
        centers: ``P x M`` bool coalitions.
        alpha: ``P`` float64 coefficients.
        gamma: the kernel's scale.

    Returns:
        ``M`` float64.
    """
    n_units = centers.shape[1]
    sizes = centers.sum(dim=1)
    table = {
        int(s): _two_kind_shapley(int(s), n_units, gamma) for s in torch.unique(sizes).tolist()
    }
    member = torch.tensor([table[int(s)][0] for s in sizes.tolist()], dtype=torch.float64)
    other = torch.tensor([table[int(s)][1] for s in sizes.tolist()], dtype=torch.float64)
    per_center = torch.where(centers.cpu(), member[:, None], other[:, None])  # P x M
    return (alpha.cpu()[:, None] * per_center).sum(dim=0)


def _complete_pairs(coalitions: Tensor) -> Tensor:
    """``P x 2`` row numbers of coalitions whose complement is also in ``coalitions``."""
    index = {row.numpy().tobytes(): i for i, row in enumerate(coalitions.cpu())}
    pairs = []
    for i, row in enumerate(coalitions.cpu()):
        j = index.get((~row).numpy().tobytes())
        if j is not None and i < j:
            pairs.append((i, j))
    return torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)


def _fit_odd_surrogate(x: Tensor, d: Tensor) -> tuple[Tensor, float]:
    """Kernel ridge fit of ``d`` (``P``) at +-1 points ``x`` (``P x M``), leave-one-out tuned.

    Returns:
        (``alpha`` ``P``, gamma).
    """
    best: tuple[float, Tensor, float] | None = None
    for gamma in GAMMAS:
        eigenvalues, vectors = torch.linalg.eigh(_odd_kernel(x, x, gamma))
        projected = vectors.T @ d
        for ridge in RIDGES:
            inverse = 1.0 / (eigenvalues.clamp(min=0.0) + ridge)
            alpha = vectors @ (inverse * projected)
            diagonal = (vectors**2) @ inverse
            error = float(((alpha / diagonal) ** 2).mean())
            if best is None or error < best[0]:
                best = (error, alpha, gamma)
    assert best is not None
    return best[1], best[2]


class OddSurrogateShapAttributor(KernelShapAttributor):
    """KernelSHAP with an odd-part kernel surrogate as control variate (see the module docstring).

    Args:
        min_pairs: the fewest complete pairs (the (N, empty) pair included) for which the
            surrogate is fitted; below it the result is KernelSHAP's.
    """

    name = "odd_surrogate_shap"
    default_budget = 256

    def __init__(self, *, min_pairs: int = 8) -> None:
        if isinstance(min_pairs, bool) or not isinstance(min_pairs, int) or min_pairs < 2:
            raise InvalidArgumentError("min_pairs", min_pairs, "an int >= 2")
        self.min_pairs = min_pairs

    def _solve(
        self, plan: CoalitionPlan, values: Tensor, v_empty: Tensor, v_full: Tensor
    ) -> Tensor:
        kernel_phi = super()._solve(plan, values, v_empty, v_full)
        coalitions = plan.coalitions
        n_units = coalitions.shape[1]
        pairs = _complete_pairs(coalitions) if n_units >= 3 else torch.zeros(0, 2)
        if pairs.shape[0] + 1 < self.min_pairs:
            return kernel_phi
        device = values.device
        full = torch.ones(1, n_units, dtype=torch.bool)
        centers = torch.cat([full, coalitions[pairs[:, 0]].cpu()])
        x = 2.0 * centers.double() - 1.0
        # What the linear fit leaves of the odd part (the odd linear game with Shapley values
        # kernel_phi is sum_i kernel_phi_i x_i / 2); at N it leaves nothing, by efficiency.
        odd = ((values[pairs[:, 0]] - values[pairs[:, 1]]) / 2).cpu()
        left = torch.cat(
            [torch.zeros(1, dtype=torch.float64), odd - x[1:] @ (kernel_phi.cpu() / 2)]
        )
        alpha, gamma = _fit_odd_surrogate(x, left)
        exact_part = odd_kernel_shapley(centers, alpha, gamma)
        at_rows = _odd_kernel(2.0 * coalitions.cpu().double() - 1.0, x, gamma) @ alpha
        at_full = float(_odd_kernel(torch.ones(1, n_units, dtype=torch.float64), x, gamma) @ alpha)
        # KernelSHAP's estimate of the surrogate from the same rows, its efficiency gap taken
        # from the exact part so that the correction sums to zero to rounding.
        estimated_part = super()._solve(
            plan,
            at_rows.to(device),
            torch.tensor(at_full - float(exact_part.sum()), dtype=torch.float64, device=device),
            torch.tensor(at_full, dtype=torch.float64, device=device),
        )
        return kernel_phi + exact_part.to(device) - estimated_part
