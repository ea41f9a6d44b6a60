"""The game as the peers see it (a vector of response token ids, or a keep-mask over them) and
the record of one method as the benchmark runs it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attribution_bench.rewards import CountingReward
from attribution_bench.sequences import Sequence


@dataclass
class Context:
    """What every method needs to explain a sequence.

    Attributes:
        reward: the counting reward.
        mask_id: the replacement token.
        tokenizer: the reward model's tokenizer.
        peer_chunk: rows per forward when a peer hands over more rows at once (the floor's best
            batch size at that width).
        captum_chunk: captum's ``perturbations_per_eval`` (tokenshape's default chunk).
    """

    reward: CountingReward
    mask_id: int
    tokenizer: Any
    peer_chunk: int
    captum_chunk: int


class ResponseRows:
    """Turns a peer's perturbations of one sequence's response into reward-model rows."""

    def __init__(self, context: Context, sequence: Sequence) -> None:
        self.context = context
        self.input_ids = sequence.input_ids
        self.positions = sequence.response_positions
        self.response = sequence.input_ids[sequence.response_positions]

    @property
    def n_units(self) -> int:
        return int(self.positions.shape[0])

    def values_of_ids(self, response_ids: Any) -> np.ndarray:
        """Rewards ``n`` (float64) of rows whose responses are ``response_ids`` (``n x M``)."""
        if isinstance(response_ids, Tensor):
            response = response_ids.detach().cpu().long()
        else:
            response = torch.as_tensor(np.asarray(response_ids)).long()
        response = response.reshape(-1, self.n_units)
        rows = self.input_ids.expand(response.shape[0], -1).clone()
        rows[:, self.positions] = response
        mask = torch.ones_like(rows)
        chunk = self.context.peer_chunk
        values = [
            self.context.reward(rows[start : start + chunk], mask[start : start + chunk])
            .detach()
            .cpu()
            for start in range(0, rows.shape[0], chunk)
        ]
        return torch.cat(values).double().numpy()

    def values_of_keep(self, keep: Any) -> np.ndarray:
        """Rewards ``n`` of the coalitions ``keep`` (``n x M``, True / nonzero = token shown)."""
        keep_mask = torch.as_tensor(np.asarray(keep)).reshape(-1, self.n_units) != 0
        return self.values_of_ids(torch.where(keep_mask, self.response, self.context.mask_id))

    def forward(self, response_ids: Tensor) -> Tensor:
        """Captum's forward: ``n x M`` response ids -> ``n`` rewards."""
        return torch.from_numpy(self.values_of_ids(response_ids))


# ----------------------------------------------------------------------------------------------
# Methods


@dataclass(frozen=True)
class Method:
    """One attribution method as the benchmark runs it.

    Attributes:
        name: ``library.method``.
        library: the package that computes it.
        explain: ``(context, sequence, budget, seed) -> M`` unit scores.
        explain_batch: tokenshape's batched call, ``(context, sequences, budget, seed) -> list``.
        fixed_rows: the row count does not depend on the budget (occlusion, attention).
        game: ``"mask"`` or ``"remove"``.
        needs_tokenizer: it reads the tokens' text (it cannot play the smooth games, which have
            none).
        how: the settings, as the results table shows them.
    """

    name: str
    library: str
    explain: Callable[[Context, Sequence, int, int], np.ndarray]
    explain_batch: Callable[[Context, list[Sequence], int, int], list[np.ndarray]] | None = None
    fixed_rows: bool = False
    game: str = "mask"
    needs_tokenizer: bool = False
    how: str = ""
