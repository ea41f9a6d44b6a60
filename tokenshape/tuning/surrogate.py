"""The Gaussian-process surrogate of the objective over the weights, and its picture.

:func:`fit_surrogate` is the one place the GP is built: the optimiser proposes trials from it and
the study report draws its posterior mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch import Tensor

__all__ = ["MIN_GP_TRIALS", "fit_surrogate", "posterior_mean_figure"]

#: Complete trials needed before a GP is fitted.
MIN_GP_TRIALS = 2

_GRID = 60


def fit_surrogate(train_x: Tensor, train_y: Tensor, *, seed: int) -> SingleTaskGP:
    """A ``SingleTaskGP`` (outcome standardised) fitted by maximum marginal likelihood.

    Args:
        train_x: ``n x K`` double, observed weights in ``[0, 1]^K``.
        train_y: ``n x 1`` double, their objective values.
        seed: seeds the fit's random restarts.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SingleTaskGP(train_x, train_y, outcome_transform=Standardize(m=1))
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model


def _simplex_grid(n_signals: int) -> np.ndarray:
    """Points covering the simplex: ``G x K`` (K = 2 a segment, K = 3 a triangle)."""
    steps = np.linspace(0.0, 1.0, _GRID + 1)
    if n_signals == 2:
        return np.stack([1 - steps, steps], axis=1)
    points = [(a, b, 1 - a - b) for a in steps for b in steps if a + b <= 1 + 1e-12]
    return np.clip(np.array(points), 0.0, 1.0)


def posterior_mean_figure(weights: np.ndarray, objective: np.ndarray, signals: Sequence[str]):
    """The GP's posterior mean over the simplex, with the observed trials on top.

    Args:
        weights: ``n x K`` weights of the complete trials.
        objective: ``n`` objective values.
        signals: the K signal names.

    Returns:
        A matplotlib figure, or None when it can't be drawn (K not 2 or 3, or too few trials).
    """
    if len(signals) not in (2, 3) or len(objective) < MIN_GP_TRIALS + 1:
        return None
    import matplotlib.pyplot as plt
    import matplotlib.tri as mtri

    train_x = torch.as_tensor(np.asarray(weights, dtype=float), dtype=torch.double)
    train_y = torch.as_tensor(np.asarray(objective, dtype=float), dtype=torch.double)[:, None]
    model = fit_surrogate(train_x, train_y, seed=0)
    grid = _simplex_grid(len(signals))
    with torch.no_grad():
        mean = model.posterior(torch.as_tensor(grid, dtype=torch.double)).mean.squeeze(-1).numpy()
    figure, ax = plt.subplots(figsize=(6.0, 4.5))
    if len(signals) == 2:
        ax.plot(grid[:, 1], mean, color="#1f77b4", label="posterior mean")
        ax.scatter(weights[:, 1], objective, color="black", zorder=3, label="trials")
        ax.set_xlabel(f"weight of {signals[1]} (1 - weight of {signals[0]})")
        ax.set_ylabel("objective")
        ax.legend()
    else:
        # Barycentric to the plane: corner k of the triangle is signal k.
        corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
        plane = grid @ corners
        filled = ax.tricontourf(
            mtri.Triangulation(plane[:, 0], plane[:, 1]), mean, levels=20, cmap="viridis"
        )
        figure.colorbar(filled, ax=ax, label="posterior mean of the objective")
        seen = np.asarray(weights, dtype=float) @ corners
        ax.scatter(seen[:, 0], seen[:, 1], c="white", edgecolors="black", zorder=3, label="trials")
        for (x, y), name in zip(corners, signals):
            ax.annotate(
                name,
                (x, y),
                textcoords="offset points",
                xytext=(0, 6 if y > 0 else -14),
                ha="center",
            )
        ax.set_aspect("equal")
        ax.set_ylim(-0.12, np.sqrt(3) / 2 + 0.12)
        ax.axis("off")
        ax.legend(loc="upper right")
    ax.set_title("GP posterior mean over the blend weights", pad=14)
    return figure
