"""The outer loop: Bayesian optimisation of the blend weights, one stored trial at a time."""

from __future__ import annotations

import functools
import logging
import math
import numbers
import os
import random
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.optim import optimize_acqf
from botorch.sampling import SobolQMCNormalSampler
from torch import Tensor

from tokenshape.errors import InvalidArgumentError
from tokenshape.shaping.params import ShapingParams
from tokenshape.tuning.space import SimplexSpace
from tokenshape.tuning.store import Trial, TrialStore
from tokenshape.tuning.surrogate import (
    MIN_GP_TRIALS,
    Recommendation,
    SurrogateFitError,
    fit_surrogate,
    recommend,
    trial_data,
)

__all__ = ["ObjectiveResult", "StudyResult", "propose_candidates", "tune_shaping"]

_log = logging.getLogger(__name__)

_MC_SAMPLES = 128
#: A proposal closer than this (Euclidean, on the simplex) to a trial already in the study is
#: a duplicate: it would teach the GP nothing new.
MIN_DISTANCE = 0.01
#: A proposal closer than this to a failed trial is not made: a point that failed once is
#: likely to fail again (e.g. a deterministic error), and a failure is never a GP observation.
FAILED_DISTANCE = 0.05


@dataclass(frozen=True)
class ObjectiveResult:
    """What an objective may return instead of a bare float.

    Args:
        value: the number to maximise, e.g. the mean original reward on held-out prompts; with
            ``replicate_values``, their mean.
        replicate_values: the value of each replicate (e.g. one inner run per training seed);
            their spread is the trial's measured noise, given to the GP.
        learning_curve: the inner run's curve (e.g. evaluation reward per step), stored with the
            trial.
        info: extra JSON-ready values to store with the trial (e.g. the final KL).
    """

    value: float
    replicate_values: Sequence[float] | None = None
    learning_curve: Sequence[float] | None = None
    info: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class StudyResult:
    """The outcome of :func:`tune_shaping`.

    Evaluations are noisy, so the best trial is the complete trial with the highest posterior
    mean of a GP fitted to all complete trials (:func:`~tokenshape.tuning.surrogate.recommend`),
    not the highest single observation. With fewer than two complete trials, or when the GP can't
    be fitted, it falls back to the highest observed objective.

    Attributes:
        trials: every trial of the study, in id order.
        signals: the signal names, in the order of the weight vector.
    """

    trials: tuple[Trial, ...]
    signals: tuple[str, ...] = ()

    @functools.cached_property
    def recommendation(self) -> Recommendation | None:
        """The GP's recommendation with its posterior mean and sd, or ``None`` without a GP."""
        if not self.signals:
            return None
        try:
            return recommend(self.trials, self.signals)
        except SurrogateFitError as error:
            _log.warning("no GP recommendation: %s", error)
            return None

    @property
    def best_trial(self) -> Trial | None:
        """The recommended complete trial (see the class docstring), or ``None``."""
        if self.recommendation is not None:
            return self.recommendation.trial
        complete = [t for t in self.trials if t.status == "complete"]
        return max(complete, key=lambda t: t.objective, default=None)

    @property
    def best_params(self) -> ShapingParams | None:
        """The best trial's params, or ``None`` if no trial completed."""
        best = self.best_trial
        return None if best is None else best.params

    @property
    def best_value(self) -> float | None:
        """The best trial's observed objective value, or ``None`` if no trial completed."""
        best = self.best_trial
        return None if best is None else best.objective


def tune_shaping(
    objective: Callable[[ShapingParams], float | ObjectiveResult],
    signals: Sequence[str],
    *,
    n_initial: int,
    n_trials: int,
    store: TrialStore | str | os.PathLike[str],
    batch_size: int = 1,
    seed: int = 0,
    normalization: str = "sum",
    seed_per_trial: bool = False,
    num_restarts: int = 10,
    raw_samples: int = 512,
    progress: Callable[[Trial], None] | None = None,
) -> StudyResult:
    """Maximise ``objective`` over blend weights on the simplex with Bayesian optimisation.

    The first ``n_initial`` trials are scrambled Sobol points mapped onto the simplex. After them
    a ``SingleTaskGP`` (outcomes standardised, inputs the weights in ``[0, 1]^K``) is fitted to the
    complete trials and ``qLogNoisyExpectedImprovement`` is maximised with ``optimize_acqf`` under
    the constraint ``sum w = 1``. With ``batch_size = q > 1`` the ``q`` points are proposed jointly
    and then evaluated one after the other in this process; to evaluate a batch in parallel, have
    the objective hand its work to your own workers.

    An objective that returns :class:`ObjectiveResult` with ``replicate_values`` gives each trial
    a measured noise, which the GP is fitted with (see :mod:`tokenshape.tuning.surrogate`). No
    proposal lies within :data:`MIN_DISTANCE` of a trial of the study or within
    :data:`FAILED_DISTANCE` of a failed one: such a candidate is replaced by the best point of the
    acquisition among quasi-random points outside those balls. When the GP can't be fitted the
    next Sobol points are proposed instead, with a warning, so a study never stops on it.

    Every trial is saved before it runs, so the study survives the process: calling
    ``tune_shaping`` again with the same store continues it. Complete and failed trials are kept,
    a trial interrupted by a killed process or by Ctrl-C is run again with the same params and
    seed, and new trials are proposed until ``n_trials`` trials are finished (complete or failed).
    The same ``seed`` gives the same trials.

    Before each evaluation Python's, NumPy's and torch's global generators are seeded with the
    trial's seed (read it back with ``torch.initial_seed()`` to seed a trainer) and restored
    afterwards. An objective that raises or returns NaN or infinity fails its trial, with the
    error text stored, and the study goes on; failed trials are left out of the GP's data. A
    ``KeyboardInterrupt`` marks the running trial interrupted and is raised again.

    Args:
        objective: evaluates one :class:`ShapingParams` (typically: train a policy with the shaped
            rewards for a fixed budget and score it), returning a float or an
            :class:`ObjectiveResult`; larger is better.
        signals: the ``K >= 2`` signal names the weights are over.
        n_initial: the number of quasi-random trials before the GP takes over, >= 1.
        n_trials: the number of finished trials to reach, >= 1.
        store: a :class:`TrialStore`, or a study folder to open (and close afterwards).
        batch_size: points proposed at once, >= 1.
        seed: the study's seed, >= 0; a resumed study must be given the same one.
        normalization: the normalisation of every :class:`ShapingParams` evaluated.
        seed_per_trial: if ``False`` every trial runs under ``seed`` (seeds shared across
            trials, so trials differ only by their weights); if ``True`` trial ``i`` runs under
            ``seed + i``.
        num_restarts: starting points of the acquisition optimiser (``optimize_acqf``).
        raw_samples: quasi-random simplex points from which those starts are chosen.
        progress: called with each trial once it is finished.

    Returns:
        All the study's trials and the recommended one (highest GP posterior mean).

    Raises:
        InvalidArgumentError: an argument is out of range, or differs from the resumed study's.
        StudyStoreError: the study folder is in use by another process or is not a study.
    """
    if not callable(objective):
        raise InvalidArgumentError("objective", objective, "a callable taking ShapingParams")
    space = SimplexSpace(signals, normalization=normalization)
    _check_int("n_initial", n_initial, 1)
    _check_int("n_trials", n_trials, 1)
    _check_int("batch_size", batch_size, 1)
    _check_int("seed", seed, 0)
    _check_int("num_restarts", num_restarts, 1)
    _check_int("raw_samples", raw_samples, num_restarts)
    if progress is not None and not callable(progress):
        raise InvalidArgumentError("progress", progress, "a callable taking a Trial, or None")
    if isinstance(store, TrialStore):
        opened = store
    elif isinstance(store, str | os.PathLike):
        opened = TrialStore(store)
    else:
        raise InvalidArgumentError("store", store, "a TrialStore or a study folder path")
    try:
        opened.define_study(signals=space.signals, seed=seed, normalization=normalization)
        while True:
            to_run = opened.trials(status=("pending", "interrupted"))
            if not to_run:
                trials = opened.trials()
                if len(trials) >= n_trials:
                    break
                to_run = _propose_trials(
                    opened,
                    space,
                    trials,
                    n_initial=n_initial,
                    n_trials=n_trials,
                    batch_size=batch_size,
                    seed=seed,
                    seed_per_trial=seed_per_trial,
                    num_restarts=num_restarts,
                    raw_samples=raw_samples,
                )
            for trial in to_run:
                finished = _run_trial(objective, opened, trial)
                if progress is not None:
                    progress(finished)
        return StudyResult(trials=tuple(opened.trials()), signals=space.signals)
    finally:
        if opened is not store:
            opened.close()


def propose_candidates(
    space: SimplexSpace,
    train_x: Tensor,
    train_y: Tensor,
    *,
    q: int,
    seed: int,
    num_restarts: int,
    raw_samples: int,
    train_yvar: Tensor | None = None,
    avoid: Tensor | None = None,
    avoid_radius: Tensor | None = None,
) -> Tensor:
    """Fit a GP to observed weights and propose ``q`` new points jointly by qLogNEI.

    Args:
        space: the simplex the weights live on.
        train_x: an ``n x K`` double tensor of observed weights.
        train_y: an ``n x 1`` double tensor of their objective values (larger is better).
        q: the number of points to propose.
        seed: seeds the GP fit, the acquisition's QMC sampler and the optimiser's starts.
        num_restarts: starting points of ``optimize_acqf``.
        raw_samples: quasi-random simplex points from which those starts are chosen.
        train_yvar: an ``n x 1`` double tensor of the observations' noise variances, or
            ``None`` to infer one noise level.
        avoid: an ``m x K`` double tensor of points no proposal may come close to.
        avoid_radius: an ``m`` double tensor, the distance to keep from each of ``avoid``.

    Returns:
        A ``q x K`` double tensor of points on the simplex, none within ``avoid_radius`` of
        ``avoid`` or within :data:`MIN_DISTANCE` of another.

    Raises:
        SurrogateFitError: the GP could not be fitted.
    """
    model = fit_surrogate(train_x, train_y, train_yvar=train_yvar, seed=seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        acquisition = qLogNoisyExpectedImprovement(
            model,
            X_baseline=train_x,
            sampler=SobolQMCNormalSampler(sample_shape=torch.Size([_MC_SAMPLES]), seed=seed),
        )
        candidates, _ = optimize_acqf(
            acquisition,
            bounds=space.bounds,
            q=q,
            num_restarts=num_restarts,
            raw_samples=raw_samples,
            equality_constraints=space.equality_constraints,
            options={"seed": seed},
            generator=space.sample_q_batches,
        )
        candidates = space.project(candidates.detach())
        if avoid is None:
            avoid = torch.empty(0, space.dim, dtype=torch.double)
            avoid_radius = torch.empty(0, dtype=torch.double)
        return _keep_apart(
            space, acquisition, candidates, avoid, avoid_radius, seed=seed, n=raw_samples
        )


def _keep_apart(
    space: SimplexSpace,
    acquisition,
    candidates: Tensor,
    avoid: Tensor,
    avoid_radius: Tensor,
    *,
    seed: int,
    n: int,
) -> Tensor:
    """Replace each candidate too close to ``avoid`` or to an earlier candidate.

    The replacement is the acquisition's best among ``n`` Sobol points outside every ball (one
    at a time, so the joint batch is kept where it is allowed).
    """
    kept: list[Tensor] = []
    pool = space.sobol(n, seed=seed + 1)
    for candidate in candidates:
        centres = torch.cat([avoid, *(k[None] for k in kept)]) if kept else avoid
        radii = torch.cat([avoid_radius, torch.full((len(kept),), MIN_DISTANCE).double()])
        if not _too_close(candidate[None], centres, radii).item():
            kept.append(candidate)
            continue
        allowed = pool[~_too_close(pool, centres, radii)]
        if not len(allowed):
            raise SurrogateFitError("no point of the simplex is far enough from the trials")
        with torch.no_grad():
            values = acquisition(allowed[:, None, :])
        kept.append(allowed[int(torch.argmax(values))])
    return torch.stack(kept)


def _too_close(points: Tensor, centres: Tensor, radii: Tensor) -> Tensor:
    """``p`` bools: whether each of ``points`` (``p x K``) lies within a ball of ``centres``."""
    if not len(centres):
        return torch.zeros(len(points), dtype=torch.bool)
    return (torch.cdist(points, centres) < radii[None, :]).any(dim=1)


def _propose_trials(
    store: TrialStore,
    space: SimplexSpace,
    trials: list[Trial],
    *,
    n_initial: int,
    n_trials: int,
    batch_size: int,
    seed: int,
    seed_per_trial: bool,
    num_restarts: int,
    raw_samples: int,
) -> list[Trial]:
    """Save the next batch of trials: Sobol points first, qLogNEI proposals after."""
    done = len(trials)
    q = min(batch_size, n_trials - done)
    complete = [t for t in trials if t.status == "complete"]
    points = None
    if done >= n_initial and len(complete) >= MIN_GP_TRIALS:
        train_x, train_y, train_yvar = trial_data(complete, space.signals)
        try:
            points = propose_candidates(
                space,
                train_x,
                train_y,
                train_yvar=train_yvar,
                q=q,
                seed=seed + done,
                num_restarts=num_restarts,
                raw_samples=raw_samples,
                avoid=torch.stack([space.to_tensor(t.params) for t in trials]),
                avoid_radius=torch.tensor(
                    [FAILED_DISTANCE if t.status == "failed" else MIN_DISTANCE for t in trials],
                    dtype=torch.double,
                ),
            )
        except SurrogateFitError as error:
            _log.warning("%s; proposing Sobol points instead", error)
    if points is None:
        if done < n_initial:
            q = min(q, n_initial - done)
        points = space.sobol(done + q, seed=seed)[done:]
    seeds = [seed + done + i if seed_per_trial else seed for i in range(q)]
    return store.add_trials([space.to_params(x) for x in points], seeds=seeds)


def _run_trial(
    objective: Callable[[ShapingParams], float | ObjectiveResult], store: TrialStore, trial: Trial
) -> Trial:
    """Evaluate one trial and record how it ended."""
    running = store.start_trial(trial.id)
    try:
        with _seeded(running.seed):
            returned = objective(running.params)
    except Exception:  # noqa: BLE001 - any error of the objective fails its trial, by design
        return store.fail_trial(trial.id, error=traceback.format_exc())
    except BaseException:
        store.interrupt_trial(trial.id)
        raise
    result = returned if isinstance(returned, ObjectiveResult) else ObjectiveResult(returned)
    value = _as_float(result.value)
    if value is None:
        return store.fail_trial(
            trial.id,
            error=f"the objective returned {returned!r}: expected a float or an ObjectiveResult",
        )
    if not math.isfinite(value):
        return store.fail_trial(
            trial.id, error=f"the objective returned {value}: expected a finite value"
        )
    try:
        return store.complete_trial(
            trial.id,
            objective=value,
            replicate_values=result.replicate_values,
            learning_curve=result.learning_curve,
            info=result.info,
        )
    except (TypeError, ValueError) as exc:
        return store.fail_trial(trial.id, error=f"the objective's result can't be stored: {exc}")


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed Python's, NumPy's and torch's global generators; restore them on exit."""
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    with torch.random.fork_rng():
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def _as_float(value: Any) -> float | None:
    """A real number or one-element tensor as a float; ``None`` for anything else."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return float(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return None


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgumentError(name, value, f"an integer >= {minimum}")
