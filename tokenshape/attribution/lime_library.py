"""LIME computed by the ``lime`` package on tokenshape's reward game.

:class:`LimeLibraryAttributor` draws the neighbourhood exactly as ``lime``'s text explainer does
for a document of M words with ``bow=False`` (the first row is the unmasked response; each other
row hides a number of units drawn uniformly from 1..M, so it can hide them all, and then that many
units uniformly), measures cosine distances to the first row times 100 as it does, and fits the
surrogate with the package's own ``LimeBase.explain_instance_with_data``. With the same seed the
scores are those of ``lime.lime_text.LimeTextExplainer(bow=False, feature_selection="none")``
explaining the same game.

Settings that differ from lime's defaults, and why:

* ``feature_selection="none"`` with ``num_features=M``: every unit gets a score (lime's default
  keeps 10 features and drops the rest).
* No word splitting, no bag of words: the players are the game's units.

The kernel is lime's text kernel, sqrt(exp(-d^2 / width^2)) on the distance d times 100, with
width 100 x ``kernel_width`` (lime's default 25 is ``kernel_width=0.25`` here, as in ``lime``); the
surrogate is ``Ridge(alpha, fit_intercept=True)`` (lime's default ``alpha=1``).

``budget`` counts rows as every tokenshape method does: ``budget - 1`` neighbourhood rows (at
least the unmasked one) plus the all-hidden coalition, which gives ``base_value`` and is not part
of the fit, since lime's own neighbourhood holds it only when it happens to be drawn. The
neighbourhoods do not depend on the model, so every sequence's rows go through the game's
evaluator in one batched pass.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from tokenshape.attribution.base import Attributor, GameAttribution
from tokenshape.attribution.lime import check_lime_options
from tokenshape.game import RewardGame

__all__ = ["LimeLibraryAttributor"]


def _lime_neighbourhood(
    n_units: int, n_samples: int, random_state: np.random.RandomState
) -> np.ndarray:
    """Coalitions drawn as ``lime.lime_text.LimeTextExplainer`` draws them.

    Args:
        n_units: M, the number of units.
        n_samples: rows of the neighbourhood, the unmasked first row included (>= 1).
        random_state: the generator, advanced as lime advances it.

    Returns:
        ``n_samples x M`` float64 of 0/1, the first row all ones.
    """
    hidden_counts = random_state.randint(1, n_units + 1, n_samples - 1)
    data = np.ones((n_samples, n_units), dtype=np.float64)
    units = range(n_units)
    for row, count in enumerate(hidden_counts, start=1):
        data[row, random_state.choice(units, count, replace=False)] = 0.0
    return data


class LimeLibraryAttributor(Attributor):
    """``lime``'s ``LimeBase`` on the reward game (see the module docstring).

    Args:
        kernel_width: width of the exponential kernel on the unscaled cosine distance (default
            0.25, lime's 25 on distances times 100).
        alpha: ridge penalty, > 0 (default 1.0, lime's default).
    """

    name = "lime_library"
    default_budget = 256

    def __init__(self, *, kernel_width: float = 0.25, alpha: float = 1.0) -> None:
        self.kernel_width, self.alpha = check_lime_options(kernel_width, alpha)

    def _kernel(self, distances: np.ndarray) -> np.ndarray:
        """lime's text kernel on distances scaled by 100: ``N`` -> ``N`` weights."""
        width = 100.0 * self.kernel_width
        return np.sqrt(np.exp(-(distances**2) / width**2))

    def attribute_game(self, game: RewardGame, *, budget: int | None, seed: int) -> GameAttribution:
        from lime.lime_base import LimeBase
        from sklearn.exceptions import UndefinedMetricWarning
        from sklearn.linear_model import Ridge
        from sklearn.metrics.pairwise import pairwise_distances

        budget = self.default_budget if budget is None else budget
        n_samples = max(budget - 1, 1)
        states, neighbourhoods, coalitions = [], [], []
        for n_units in game.n_units:
            random_state = np.random.RandomState(seed % 2**32)
            data = _lime_neighbourhood(n_units, n_samples, random_state)
            states.append(random_state)
            neighbourhoods.append(data)
            # The all-hidden coalition goes last: it gives base_value and stays out of the fit.
            rows = np.vstack([data, np.zeros((1, n_units))])
            coalitions.append(torch.from_numpy(rows > 0.5))
        values = game.values(coalitions)

        scores, base, full = [], [], []
        for data, value, random_state in zip(neighbourhoods, values, states):
            value = value.cpu().numpy()
            labels = value[:-1, None]
            distances = pairwise_distances(data, data[:1], metric="cosine").ravel() * 100
            explainer = LimeBase(self._kernel, random_state=random_state)
            ridge = Ridge(alpha=self.alpha, fit_intercept=True, random_state=random_state)
            with warnings.catch_warnings():
                # lime also returns the surrogate's R^2, unused here and undefined for one row.
                warnings.simplefilter("ignore", UndefinedMetricWarning)
                _, weights, _, _ = explainer.explain_instance_with_data(
                    data,
                    labels,
                    distances,
                    label=0,
                    num_features=data.shape[1],
                    feature_selection="none",
                    model_regressor=ridge,
                )
            phi = torch.zeros(data.shape[1], dtype=torch.float64)
            for unit, weight in weights:
                phi[int(unit)] = float(weight)
            scores.append(phi)
            full.append(float(value[0]))
            base.append(float(value[-1]))
        return GameAttribution(
            unit_scores=scores,
            base_value=torch.tensor(base, dtype=torch.float64),
            full_value=torch.tensor(full, dtype=torch.float64),
            rows=torch.tensor([c.shape[0] for c in coalitions], dtype=torch.long),
        )
