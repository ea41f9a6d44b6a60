"""Tests of tokenshape.tuning.surrogate: observed noise, the recommendation, fit failures."""

from __future__ import annotations

import pytest
import torch

from tokenshape.shaping.params import ShapingParams
from tokenshape.tuning.store import Trial
from tokenshape.tuning.surrogate import (
    SurrogateFitError,
    fit_surrogate,
    noise_variances,
    recommend,
)

SIGNALS = ("sparse", "kernel_shap")


def trial(trial_id: int, w: float, values: list[float] | None, objective: float | None = None):
    mean = sum(values) / len(values) if values else objective
    return Trial(
        id=trial_id,
        params=ShapingParams({"sparse": 1.0 - w, "kernel_shap": w}),
        seed=0,
        status="complete",
        objective=mean,
        objective_sem=None,
        replicate_values=None if values is None else tuple(values),
        error=None,
        learning_curve=None,
        info=None,
        attempts=1,
        created_at="",
        updated_at="",
        started_at=None,
        finished_at=None,
        duration_s=None,
    )


def test_noise_variances_pool_and_shrink_by_hand() -> None:
    # Trial a: values (0, 2): variance 2, n 2. Trial b: (1, 1, 4): variance 3, n 3. c: one value.
    # Pooled: (1 * 2 + 2 * 3) / 3 = 8/3.
    pooled = 8 / 3
    variances = noise_variances([[0.0, 2.0], [1.0, 1.0, 4.0], [5.0]])
    assert variances == pytest.approx(
        [(1 * 2 + 2 * pooled) / 3 / 2, (2 * 3 + 2 * pooled) / 4 / 3, pooled]
    )
    assert noise_variances([[1.0], None]) is None


def test_observed_noise_is_used_by_the_gp() -> None:
    x = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]], dtype=torch.double)
    y = torch.tensor([[0.0], [1.0], [0.0]], dtype=torch.double)
    quiet = fit_surrogate(x, y, train_yvar=torch.full_like(y, 1e-6), seed=0)
    noisy = fit_surrogate(x, y, train_yvar=torch.full_like(y, 4.0), seed=0)
    with torch.no_grad():
        at_middle = [float(m.posterior(x[1:2]).mean) for m in (quiet, noisy)]
    # Almost noise-free: the GP passes through the observation; very noisy: it does not.
    assert at_middle[0] == pytest.approx(1.0, abs=0.01)
    assert at_middle[1] < 0.9


def test_the_recommendation_is_not_the_luckiest_draw() -> None:
    """The true objective rises with w; one trial at w = 0.2 had a lucky mean far above it, with
    replicates spread as widely as everyone's. The posterior mean discounts it."""
    trials = [
        trial(i, w, [w - 0.6, w, w + 0.6])
        for i, w in enumerate([0.0, 0.1, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    ]
    trials.append(trial(10, 0.2, [0.7, 1.3, 1.9]))
    assert max(trials, key=lambda t: t.objective).id == 10
    recommendation = recommend(trials, SIGNALS, baseline=trials[0])
    assert recommendation.trial.id != 10
    assert recommendation.trial.params.weights["kernel_shap"] >= 0.7
    assert recommendation.noise_observed and recommendation.indistinguishable_within > 0
    assert 0.5 < recommendation.prob_better <= 1.0
    assert recommendation.baseline_mean < recommendation.mean


def test_a_baseline_that_is_itself_the_recommendation_has_no_probability() -> None:
    trials = [trial(0, 0.0, [2.0, 2.2]), trial(1, 1.0, [0.0, 0.2]), trial(2, 0.5, [1.0, 1.2])]
    recommendation = recommend(trials, SIGNALS, baseline=trials[0])
    assert recommendation.trial.id == 0 and recommendation.prob_better is None
    assert recommendation.spread > 1.0


def test_too_few_trials_or_a_failing_fit_raise_a_surrogate_error(monkeypatch) -> None:
    with pytest.raises(SurrogateFitError, match="at least 2"):
        recommend([trial(0, 0.5, [1.0])], SIGNALS)
    from botorch.exceptions.errors import ModelFittingError

    from tokenshape.tuning import surrogate

    def broken(*args, **kwargs):
        raise ModelFittingError("no")

    monkeypatch.setattr(surrogate, "fit_gpytorch_mll", broken)
    with pytest.raises(SurrogateFitError, match="could not be fitted"):
        recommend([trial(0, 0.5, [1.0]), trial(1, 0.1, [2.0])], SIGNALS)


def test_trials_that_all_scored_the_same_give_no_gp():
    trials = [trial(0, 0.0, [1.0, 1.0]), trial(1, 1.0, [1.0, 1.0]), trial(2, 0.5, [1.0, 1.0])]
    with pytest.raises(SurrogateFitError, match="same objective"):
        recommend(trials, SIGNALS)
