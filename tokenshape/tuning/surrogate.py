"""The Gaussian-process surrogate of the objective over the weights, and its picture.

:func:`fit_surrogate` is the one place the GP is built: the optimiser proposes trials from it, the
study's recommended trial is read from it (:func:`recommend`) and the study report draws its
posterior mean.

**Observed noise.** A trial's objective is the mean of its replicates (training seeds), a noisy
observation. When some trials have two or more replicates, the GP is given each trial's noise
variance (``SingleTaskGP(train_Yvar=...)``) instead of inferring one noise level, which with few
trials tends to BoTorch's small default and makes the GP pass through every observation. Per
trial, the replicate variance is shrunk towards the variance pooled over all replicated trials,
``s2_i = ((n_i - 1) s_i^2 + nu s_p^2) / (n_i - 1 + nu)`` with ``nu = 2`` (a sample variance of
two or three values alone is too noisy to trust), and the observation's variance is ``s2_i / n_i``.
A trial with one replicate has no variance of its own and gets ``s_p^2``: it is as noisy as one
draw of the others. When no trial has two replicates the noise is not observed and the GP
infers one level, as BoTorch does by default.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from botorch.exceptions.errors import ModelFittingError
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from gpytorch.mlls import ExactMarginalLogLikelihood
from linear_operator.utils.errors import NanError, NotPSDError
from torch import Tensor

from tokenshape.errors import TokenShapeError
from tokenshape.tuning.store import Trial

__all__ = [
    "MIN_GP_TRIALS",
    "Recommendation",
    "SurrogateFitError",
    "fit_surrogate",
    "noise_variances",
    "posterior_mean_figure",
    "recommend",
    "trial_data",
]

#: Complete trials needed before a GP is fitted.
MIN_GP_TRIALS = 2

_GRID = 60
#: Prior degrees of freedom of the pooled variance when a trial's own variance is shrunk to it.
_POOLED_DOF = 2.0
#: The smallest noise variance given to the GP, relative to the variance of the objectives.
_MIN_RELATIVE_NOISE = 1e-4


class SurrogateFitError(TokenShapeError):
    """The Gaussian process could not be fitted to the trials (the optimiser falls back to Sobol)."""


def noise_variances(replicates: Sequence[Sequence[float] | None]) -> list[float] | None:
    """The noise variance of each trial's mean objective, from the replicate values.

    Args:
        replicates: per trial, its replicate values (``None`` or one value: not replicated).

    Returns:
        One variance per trial (see the module docstring for the pooling), or ``None`` when no
        trial has two or more replicates (the noise is then not observed).
    """
    counts = [0 if values is None else len(values) for values in replicates]
    sample_variances = [
        float(np.var(values, ddof=1)) if n >= 2 else None
        for values, n in zip(replicates, counts, strict=True)
    ]
    dof = sum(n - 1 for n in counts if n >= 2)
    if dof == 0:
        return None
    pooled = sum((n - 1) * v for n, v in zip(counts, sample_variances) if v is not None) / dof
    variances = []
    for n, own in zip(counts, sample_variances, strict=True):
        if own is None:
            variances.append(pooled)
        else:
            shrunk = ((n - 1) * own + _POOLED_DOF * pooled) / (n - 1 + _POOLED_DOF)
            variances.append(shrunk / n)
    return variances


def trial_data(
    trials: Sequence[Trial], signals: Sequence[str]
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The GP's training data from complete trials.

    Returns:
        ``(train_x n x K, train_y n x 1, train_yvar n x 1 or None)`` in double precision;
        ``train_yvar`` is ``None`` when no trial is replicated (:func:`noise_variances`).
    """
    x = torch.tensor(
        [[t.params.weights.get(name, 0.0) for name in signals] for t in trials], dtype=torch.double
    ).reshape(len(trials), len(signals))
    y = torch.tensor([[t.objective] for t in trials], dtype=torch.double).reshape(len(trials), 1)
    variances = noise_variances([t.replicate_values for t in trials])
    yvar = None if variances is None else torch.tensor(variances, dtype=torch.double)[:, None]
    return x, y, yvar


def fit_surrogate(
    train_x: Tensor, train_y: Tensor, *, train_yvar: Tensor | None = None, seed: int
) -> SingleTaskGP:
    """A ``SingleTaskGP`` (outcome standardised) fitted by maximum marginal likelihood.

    Args:
        train_x: ``n x K`` double, observed weights in ``[0, 1]^K``.
        train_y: ``n x 1`` double, their objective values.
        train_yvar: ``n x 1`` double, the noise variance of each value, or ``None`` to infer one
            noise level.
        seed: seeds the fit's random restarts.

    Raises:
        SurrogateFitError: every objective is the same, or the marginal likelihood could not be
            optimised (e.g. BoTorch's ``ModelFittingError``, or a covariance that is not positive
            definite).
    """
    spread = float(train_y.var()) if len(train_y) > 1 else 0.0
    scale = 1.0 + float(train_y.abs().max()) if len(train_y) else 1.0
    if not spread > (1e-9 * scale) ** 2:
        raise SurrogateFitError(
            f"all {len(train_y)} trials have the same objective: there is nothing to model"
        )
    if train_yvar is not None:
        train_yvar = train_yvar.clamp_min(_MIN_RELATIVE_NOISE * spread)
    with torch.random.fork_rng(), warnings.catch_warnings():
        # A failed attempt is retried by fit_gpytorch_mll and reported as an error at the end;
        # the warning of each attempt says nothing more.
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="botorch")
        torch.manual_seed(seed)
        try:
            model = SingleTaskGP(
                train_x, train_y, train_Yvar=train_yvar, outcome_transform=Standardize(m=1)
            )
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        except (ModelFittingError, NotPSDError, NanError, RuntimeError, ValueError) as error:
            raise SurrogateFitError(
                f"the Gaussian process could not be fitted to {len(train_y)} trials: {error}"
            ) from error
    return model


@dataclass(frozen=True)
class Recommendation:
    """The study's recommended trial, read from the GP's posterior at the trials' points.

    Attributes:
        trial: the complete trial with the highest posterior mean.
        mean, sd: the posterior mean and standard deviation of its objective (latent, without
            the observation noise).
        baseline: the reference trial (e.g. plain sparse GRPO), if the study has one.
        baseline_mean, baseline_sd: its posterior mean and standard deviation.
        prob_better: the posterior probability that ``trial``'s objective exceeds the baseline's
            (from their joint posterior), ``None`` without a baseline or when they are the same.
        spread: the largest minus the smallest posterior mean over the complete trials.
        indistinguishable_within: twice the largest posterior sd among the trials, the
            difference the study could not tell from noise; ``None`` when the noise was not
            observed.
        noise_observed: whether the GP was given the trials' measured noise.
    """

    trial: Trial
    mean: float
    sd: float
    baseline: Trial | None
    baseline_mean: float | None
    baseline_sd: float | None
    prob_better: float | None
    spread: float
    indistinguishable_within: float | None
    noise_observed: bool


def recommend(
    trials: Sequence[Trial],
    signals: Sequence[str],
    *,
    baseline: Trial | None = None,
    seed: int = 0,
) -> Recommendation:
    """Recommend the complete trial with the highest GP posterior mean.

    A single observation is one noisy draw; the posterior mean pools it with its neighbours and
    weighs it by its noise, so the recommendation is not the luckiest draw.

    Args:
        trials: the study's trials (only the complete ones are used).
        signals: the signal names, in the order of the weight vector.
        baseline: a trial to compare the recommendation with.
        seed: seeds the GP fit.

    Raises:
        SurrogateFitError: fewer than :data:`MIN_GP_TRIALS` complete trials, or the fit failed.
    """
    complete = [t for t in trials if t.status == "complete"]
    if len(complete) < MIN_GP_TRIALS:
        raise SurrogateFitError(
            f"{len(complete)} complete trials: at least {MIN_GP_TRIALS} are needed for a GP"
        )
    x, y, yvar = trial_data(complete, signals)
    model = fit_surrogate(x, y, train_yvar=yvar, seed=seed)
    with torch.no_grad():
        posterior = model.posterior(x)
        means = posterior.mean.squeeze(-1)
        covariance = posterior.mvn.covariance_matrix
    sds = covariance.diagonal().clamp_min(0.0).sqrt()
    best = int(torch.argmax(means))
    prob = base_mean = base_sd = None
    if baseline is not None:
        index = next(i for i, t in enumerate(complete) if t.id == baseline.id)
        base_mean, base_sd = float(means[index]), float(sds[index])
        if index != best:
            variance = covariance[best, best] + covariance[index, index]
            variance = float(variance - 2 * covariance[best, index])
            gap = float(means[best] - means[index])
            prob = 0.5 * (1.0 + math.erf(gap / math.sqrt(2.0 * max(variance, 1e-300))))
    return Recommendation(
        trial=complete[best],
        mean=float(means[best]),
        sd=float(sds[best]),
        baseline=baseline,
        baseline_mean=base_mean,
        baseline_sd=base_sd,
        prob_better=prob,
        spread=float(means.max() - means.min()),
        indistinguishable_within=None if yvar is None else 2.0 * float(sds.max()),
        noise_observed=yvar is not None,
    )


def _simplex_grid(n_signals: int) -> np.ndarray:
    """Points covering the simplex: ``G x K`` (K = 2 a segment, K = 3 a triangle)."""
    steps = np.linspace(0.0, 1.0, _GRID + 1)
    if n_signals == 2:
        return np.stack([1 - steps, steps], axis=1)
    points = [(a, b, 1 - a - b) for a in steps for b in steps if a + b <= 1 + 1e-12]
    return np.clip(np.array(points), 0.0, 1.0)


def posterior_mean_figure(trials: Sequence[Trial], signals: Sequence[str]):
    """The GP's posterior mean over the simplex, with the observed trials on top.

    Args:
        trials: the study's trials (only the complete ones are used).
        signals: the K signal names.

    Returns:
        A matplotlib figure, or None when it can't be drawn (K not 2 or 3, too few trials, or
        the GP could not be fitted).
    """
    complete = [t for t in trials if t.status == "complete"]
    if len(signals) not in (2, 3) or len(complete) < MIN_GP_TRIALS + 1:
        return None
    import matplotlib.pyplot as plt
    import matplotlib.tri as mtri

    train_x, train_y, train_yvar = trial_data(complete, signals)
    try:
        model = fit_surrogate(train_x, train_y, train_yvar=train_yvar, seed=0)
    except SurrogateFitError:
        return None
    weights = train_x.numpy()
    objective = train_y.squeeze(-1).numpy()
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
