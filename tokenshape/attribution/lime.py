"""LIME on the reward game, batched: a weighted ridge regression on random coalitions.

Sampling follows the ``lime`` package's text explainer: the number of hidden units is uniform on
1..M-1 and the hidden units uniform given that number; the full and empty coalitions are always
in the fit. Each coalition z is weighted by the exponential kernel exp(-d^2 / (2 width^2)) on the
cosine distance d = 1 - sqrt(|z| / M) between z and the full coalition (``lime``'s default width
is 25 on distances scaled by 100, i.e. 0.25 here). The fit is a kernel-weighted ridge with
intercept whose penalty is ``alpha * sum(kernel weights) * ||phi||^2``: scaled to the total weight,
so the shrinkage does not depend on the budget (``lime``'s fixed ``Ridge(alpha=1)`` shrinks the
scores of a small sample towards 0). The default ``alpha = 4e-4`` is what ``Ridge(alpha=1)``
amounts to at ``lime``'s default 5,000 samples, whose kernel weights average about 0.5.

The scores are the ridge's coefficients, which, unlike Shapley values, need not sum to
v(all) - v(empty) (not even in sign). In a shaping blend (:func:`tokenshape.shape_rewards`)
every signal is turned into shares that sum to 1 over the response before it is weighted, so
only the relative sizes and signs of LIME's scores enter, next to the efficient signals'
shares; its total is never used, and the blend still sums to the sequence reward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tokenshape.attribution.base import CoalitionAttributor, CoalitionPlan
from tokenshape.errors import InvalidArgumentError

__all__ = ["LimeAttributor", "check_lime_options", "lime_kernel"]


def lime_kernel(coalitions: Tensor, kernel_width: float) -> Tensor:
    """Kernel weights of coalitions.

    Args:
        coalitions: ``N x M`` bool.
        kernel_width: the width on cosine distance.

    Returns:
        ``N`` float64.
    """
    present = coalitions.to(torch.float64).sum(dim=1)
    distance = 1.0 - torch.sqrt(present / coalitions.shape[1])
    return torch.exp(-(distance**2) / (2.0 * kernel_width**2))


def check_lime_options(kernel_width: float, alpha: float) -> tuple[float, float]:
    """Validate LIME's kernel width and ridge penalty (both numbers > 0); returns them as floats."""
    for name, value in (("kernel_width", kernel_width), ("alpha", alpha)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise InvalidArgumentError(name, value, "a number > 0")
    return float(kernel_width), float(alpha)


class LimeAttributor(CoalitionAttributor):
    """Batched LIME.

    Args:
        kernel_width: width of the exponential kernel on cosine distance (default 0.25).
        alpha: ridge penalty per unit of total kernel weight, > 0 (default 4e-4).
    """

    name = "lime"
    default_budget = 256

    def __init__(self, *, kernel_width: float = 0.25, alpha: float = 4e-4) -> None:
        self.kernel_width, self.alpha = check_lime_options(kernel_width, alpha)

    def _plan(self, n_units: int, budget: int | None, generator: torch.Generator) -> CoalitionPlan:
        n_samples = budget - 2
        if n_units == 1 or n_samples <= 0:
            return CoalitionPlan(torch.zeros(0, n_units, dtype=torch.bool))
        hidden = torch.randint(1, n_units, (n_samples,), generator=generator)
        ranks = torch.rand(n_samples, n_units, generator=generator).argsort(dim=1).argsort(dim=1)
        return CoalitionPlan(ranks >= hidden[:, None])

    def _solve(
        self, plan: CoalitionPlan, values: Tensor, v_empty: Tensor, v_full: Tensor
    ) -> Tensor:
        n_units = plan.coalitions.shape[1]
        device = values.device
        ends = torch.stack(
            [
                torch.ones(n_units, dtype=torch.bool, device=device),
                torch.zeros(n_units, dtype=torch.bool, device=device),
            ]
        )
        z = torch.cat([ends, plan.coalitions]).to(torch.float64)
        y = torch.cat([torch.stack([v_full, v_empty]), values])
        w = lime_kernel(z.bool(), self.kernel_width)
        z_mean = (w[:, None] * z).sum(dim=0) / w.sum()
        y_mean = (w * y).sum() / w.sum()
        zc, yc = z - z_mean, y - y_mean
        penalty = self.alpha * w.sum()
        gram = zc.T @ (w[:, None] * zc) + penalty * torch.eye(
            n_units, dtype=torch.float64, device=device
        )
        return torch.linalg.solve(gram, zc.T @ (w * yc))
