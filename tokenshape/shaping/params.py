"""The parameters the outer optimiser tunes: blend weights over named signals."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tokenshape.errors import InvalidArgumentError

__all__ = ["ShapingParams", "SPARSE", "NORMALIZATIONS"]

#: The signal that puts the whole sequence reward on the last response token.
SPARSE = "sparse"

#: How a signal's per-token attributions become a distribution over the response
#: (see :func:`tokenshape.shaping.shape_rewards`).
NORMALIZATIONS = ("sum", "abs", "positive")

_SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class ShapingParams:
    """Blend weights on the simplex over named signals.

    Args:
        weights: signal name -> weight, e.g. ``{"sparse": 0.5, "kernel_shap": 0.5}``. Weights must be
            >= 0 and sum to 1 (within 1e-6) unless ``normalize=True``.
        normalization: how signed attributions become per-token shares, one of
            :data:`NORMALIZATIONS`.
        normalize: rescale weights that are >= 0 but don't sum to 1 instead of raising.
    """

    weights: Mapping[str, float]
    normalization: str = "sum"
    normalize: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.weights, Mapping) or not self.weights:
            raise InvalidArgumentError(
                "weights", self.weights, "a non-empty dict of signal name -> weight"
            )
        clean: dict[str, float] = {}
        for name, value in self.weights.items():
            if not isinstance(name, str) or not name:
                raise InvalidArgumentError("weights", dict(self.weights), "signal names as strings")
            try:
                weight = float(value)
            except (TypeError, ValueError):
                raise InvalidArgumentError(
                    f"weights[{name!r}]", value, "a number >= 0"
                ) from None
            if not math.isfinite(weight) or weight < 0:
                raise InvalidArgumentError(f"weights[{name!r}]", value, "a finite number >= 0")
            clean[name] = weight
        total = sum(clean.values())
        if total <= 0:
            raise InvalidArgumentError("weights", dict(self.weights), "at least one weight > 0")
        if abs(total - 1.0) > _SUM_TOLERANCE:
            if not self.normalize:
                raise InvalidArgumentError(
                    "weights",
                    dict(self.weights),
                    f"weights summing to 1 (they sum to {total:.6g}); pass normalize=True to rescale",
                )
            clean = {name: weight / total for name, weight in clean.items()}
        if self.normalization not in NORMALIZATIONS:
            raise InvalidArgumentError("normalization", self.normalization, f"one of {NORMALIZATIONS}")
        object.__setattr__(self, "weights", dict(clean))

    @property
    def active_signals(self) -> tuple[str, ...]:
        """Names of the signals with a weight above zero, in the order given."""
        return tuple(name for name, weight in self.weights.items() if weight > 0)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form; :meth:`from_dict` reads it back."""
        return {"weights": dict(self.weights), "normalization": self.normalization}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShapingParams:
        """Rebuild params written by :meth:`to_dict`."""
        return cls(weights=dict(data["weights"]), normalization=data.get("normalization", "sum"))
