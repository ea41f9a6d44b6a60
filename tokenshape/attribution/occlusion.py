"""Leave-one-out occlusion: phi_i = v(all) - v(all without unit i). M + 2 rows per sequence."""

from __future__ import annotations

import torch
from torch import Tensor

from tokenshape.attribution.base import CoalitionAttributor, CoalitionPlan

__all__ = ["OcclusionAttributor"]


class OcclusionAttributor(CoalitionAttributor):
    """Leave-one-out scores; its row count is M + 2 per sequence, whatever the budget."""

    name = "occlusion"

    def _plan(self, n_units: int, budget: int | None, generator: torch.Generator) -> CoalitionPlan:
        return CoalitionPlan(~torch.eye(n_units, dtype=torch.bool))

    def _solve(
        self, plan: CoalitionPlan, values: Tensor, v_empty: Tensor, v_full: Tensor
    ) -> Tensor:
        return v_full - values
