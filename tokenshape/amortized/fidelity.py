"""How close the explainer head is to its teacher, on sequences the head has not learned from."""

from __future__ import annotations

import math
from collections import deque

from torch import Tensor

__all__ = ["MIN_PEARSON_UNITS", "FidelityTracker", "pearson", "relative_l2"]

#: Sequences with fewer units have no informative Pearson correlation (two points always give
#: +-1) and are left out of it.
MIN_PEARSON_UNITS = 3


def pearson(estimate: Tensor, reference: Tensor) -> float:
    """Pearson correlation of two ``M`` vectors; NaN when either is constant or M < 3."""
    if estimate.shape[0] < MIN_PEARSON_UNITS:
        return math.nan
    a = estimate.double() - estimate.double().mean()
    b = reference.double() - reference.double().mean()
    norm = float(a.norm() * b.norm())
    return float(a @ b) / norm if norm > 0 else math.nan


def relative_l2(estimate: Tensor, reference: Tensor) -> float:
    """``||estimate - reference|| / ||reference||`` of two ``M`` vectors (NaN when the
    reference is zero)."""
    norm = float(reference.double().norm())
    return float((estimate.double() - reference.double()).norm()) / norm if norm > 0 else math.nan


class FidelityTracker:
    """Pearson and relative L2 over the last ``window`` compared sequences.

    Args:
        window: how many sequences the running figures cover.
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self.pearsons: deque[float] = deque(maxlen=window)
        self.relative_l2s: deque[float] = deque(maxlen=window)
        self.compared = 0

    def update(self, estimate: Tensor, reference: Tensor) -> None:
        """Record one sequence: the head's ``M`` scores against the teacher's."""
        value = pearson(estimate, reference)
        if not math.isnan(value):
            self.pearsons.append(value)
        error = relative_l2(estimate, reference)
        if not math.isnan(error):
            self.relative_l2s.append(error)
        self.compared += 1

    @property
    def full(self) -> bool:
        """Whether the window holds ``window`` Pearson values."""
        return len(self.pearsons) == self.window

    @property
    def pearson(self) -> float:
        """Mean Pearson over the window (NaN before any sequence)."""
        return sum(self.pearsons) / len(self.pearsons) if self.pearsons else math.nan

    @property
    def relative_l2(self) -> float:
        """Mean relative L2 over the window (NaN before any sequence)."""
        return sum(self.relative_l2s) / len(self.relative_l2s) if self.relative_l2s else math.nan

    def state_dict(self) -> dict:
        return {
            "window": self.window,
            "pearsons": list(self.pearsons),
            "relative_l2s": list(self.relative_l2s),
            "compared": self.compared,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> FidelityTracker:
        tracker = cls(int(state["window"]))
        tracker.pearsons.extend(float(v) for v in state["pearsons"])
        tracker.relative_l2s.extend(float(v) for v in state["relative_l2s"])
        tracker.compared = int(state["compared"])
        return tracker
