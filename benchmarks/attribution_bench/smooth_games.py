"""Smooth games with interactions as the methods see them: token rows over a value table."""

from __future__ import annotations

import numpy as np
import torch

from attribution_bench.lookup_games import smooth_interaction_values
from attribution_bench.rewards import LookupReward
from attribution_bench.sequences import Sequence
from tokenshape.attribution.exact import shapley_from_values

#: The hidden token of the smooth games' rows; players are tokens MASK_ID + 1 + i.
MASK_ID = 1


def smooth_games(
    n_players: int, count: int
) -> tuple[np.ndarray, np.ndarray, list[Sequence], LookupReward]:
    """``count`` games of :func:`~attribution_bench.lookup_games.smooth_interaction_values`.

    Returns:
        (values ``G x 2^M``, exact Shapley values ``G x M``, one sequence per game, the reward
        that plays them).
    """
    values = np.stack([smooth_interaction_values(n_players, seed) for seed in range(count)])
    exact = np.stack([shapley_from_values(torch.from_numpy(v)).numpy() for v in values])
    positions = torch.arange(1, n_players + 1)
    sequences = [
        Sequence(torch.cat([torch.tensor([g]), MASK_ID + positions]), positions, g)
        for g in range(count)
    ]
    return values, exact, sequences, LookupReward(torch.from_numpy(values), MASK_ID)
