"""Games given by a table of every coalition's value, in numpy alone.

Coalition ``c`` (an integer in ``[0, 2^M)``) holds player ``i`` when bit ``i`` of ``c`` is set.
This module imports nothing but numpy, so the estimators of another environment (a Python
without torch) can play the reward model's recorded games and the smooth games here.
"""

from __future__ import annotations

import numpy as np


def coalition_keep(n_players: int) -> np.ndarray:
    """``2^M x M`` bool: row ``c`` holds player ``i`` when bit ``i`` of ``c`` is set."""
    codes = np.arange(2**n_players)
    return ((codes[:, None] >> np.arange(n_players)) & 1).astype(bool)


def smooth_interaction_values(n_players: int, seed: int) -> np.ndarray:
    """A smooth nonlinear game with pairwise and three-way interactions: ``2^M`` values.

    v(z) = 2 tanh(x(z) / 2), x(z) = sum_i a_i z_i + sum_{(i,j)} b_ij z_i z_j
    + sum_{(i,j,k)} c_ijk z_i z_j z_k, with a ~ N(0, 1) on every player, b ~ N(0, 0.5^2) on 2M
    random pairs and c ~ N(0, 0.5^2) on M random triples. The tanh couples every player with
    every other (interactions of all orders, decaying), as a saturating reward model does.
    """
    rng = np.random.default_rng(seed)
    z = coalition_keep(n_players).astype(np.float64)
    x = z @ rng.normal(0.0, 1.0, n_players)
    for _ in range(2 * n_players):
        i, j = rng.choice(n_players, size=2, replace=False)
        x += rng.normal(0.0, 0.5) * z[:, i] * z[:, j]
    for _ in range(n_players):
        i, j, k = rng.choice(n_players, size=3, replace=False)
        x += rng.normal(0.0, 0.5) * z[:, i] * z[:, j] * z[:, k]
    return 2.0 * np.tanh(x / 2.0)


class LookupGame:
    """A game that answers coalitions from its value table and counts them.

    Args:
        values: ``2^M`` coalition values.

    Attributes:
        rows: coalitions evaluated since construction or :meth:`reset`.
    """

    def __init__(self, values: np.ndarray) -> None:
        self.values = np.asarray(values, dtype=np.float64)
        self.n_players = int(self.values.shape[0]).bit_length() - 1
        self.bits = 1 << np.arange(self.n_players)
        self.rows = 0

    def reset(self) -> None:
        self.rows = 0

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        """Values ``k`` of ``coalitions`` (``k x M``, nonzero = player present)."""
        keep = np.asarray(coalitions).reshape(-1, self.n_players) != 0
        self.rows += keep.shape[0]
        return self.values[keep @ self.bits]
