"""KernelSHAP computed by the ``shap`` package on tokenshape's reward game.

:class:`ShapLibraryAttributor` runs ``shap.KernelExplainer`` on the binary coalition space of each
sequence: the background is the all-hidden coalition (a vector of zeros), the explained instance
is the all-present one (a vector of ones), and the model maps a batch of 0/1 vectors to the game's
values. The explainer's expected value is then v(empty), its f(x) is v(all), and its scores
estimate the same Shapley values as ``kernel_shap``. It is a reference for checking tokenshape's
own estimator against the package everyone knows, not a faster path.

Settings that differ from shap's defaults, and why:

* ``l1_reg=False``: the default ``"num_features(10)"`` keeps 10 units and sets every other score
  to zero, which breaks a dense reward on any response longer than 10 tokens.
* ``nsamples = budget - 2``: shap evaluates the background and the instance besides its samples,
  so a sequence costs ``budget`` rows, as with every tokenshape method. shap needs at least one
  sample, so a budget of 2 costs 3 rows (2 for a single unit, which shap scores without
  sampling). shap caps the samples at 2^M - 2: from a budget of 2^M on it enumerates every
  coalition and returns exact Shapley values. Below M + 1 rows the regression is underdetermined
  and shap warns that it falls back to least squares.
* shap draws from NumPy's global generator. It is seeded with ``seed`` (modulo 2^32) for each
  sequence and restored afterwards, so results are reproducible and the caller's NumPy random
  state is left as it was.

shap explains one instance at a time, so the sequences of a batch are evaluated one after another;
``rows`` counts the rows each one sent through the game's evaluator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

from tokenshape.attribution.base import Attributor, GameAttribution
from tokenshape.game import RewardGame

__all__ = ["ShapLibraryAttributor"]


@contextmanager
def _seeded_numpy(seed: int) -> Iterator[None]:
    """Seed NumPy's global generator inside the block and restore its previous state after."""
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)


def _sequence_model(game: RewardGame, row: int) -> Callable[[np.ndarray], np.ndarray]:
    """The game of sequence ``row`` as a function of 0/1 vectors: ``N x M`` float -> ``N``."""

    def model(z: np.ndarray) -> np.ndarray:
        coalitions = [torch.zeros(0, m, dtype=torch.bool) for m in game.n_units]
        coalitions[row] = torch.from_numpy(np.asarray(z) > 0.5)
        return game.values(coalitions)[row].cpu().numpy()

    return model


class ShapLibraryAttributor(Attributor):
    """``shap.KernelExplainer`` on the reward game (see the module docstring for its settings)."""

    name = "shap_library"
    default_budget = 256

    def attribute_game(self, game: RewardGame, *, budget: int | None, seed: int) -> GameAttribution:
        import shap

        budget = self.default_budget if budget is None else budget
        scores, base, full, rows = [], [], [], []
        for row, n_units in enumerate(game.n_units):
            rows_before = game.rows
            with _seeded_numpy(seed):
                explainer = shap.KernelExplainer(
                    _sequence_model(game, row), np.zeros((1, n_units), dtype=np.float64)
                )
                phi = explainer.shap_values(
                    np.ones(n_units, dtype=np.float64),
                    nsamples=max(budget - 2, 1),
                    l1_reg=False,
                    silent=True,
                )
            scores.append(torch.as_tensor(np.asarray(phi, dtype=np.float64).reshape(n_units)))
            base.append(float(explainer.expected_value))
            full.append(float(explainer.fx[0]))
            rows.append(game.rows - rows_before)
        return GameAttribution(
            unit_scores=scores,
            base_value=torch.tensor(base, dtype=torch.float64),
            full_value=torch.tensor(full, dtype=torch.float64),
            rows=torch.tensor(rows, dtype=torch.long),
        )
