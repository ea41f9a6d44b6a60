"""The parameters the outer optimiser tunes: blend weights over named signals."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from tokenshape.errors import InvalidArgumentError

__all__ = ["AMORTIZED", "NORMALIZATIONS", "SPARSE", "ShapingParams"]

#: The signal that puts the whole sequence reward on the last response token.
SPARSE = "sparse"
#: The signal of an :class:`~tokenshape.AmortizedExplainer`, which a ``ShapedReward`` builds for
#: its own reward when no method is given for it.
AMORTIZED = "amortized"

#: How a signal's per-token attributions phi become shares e summing to 1 over the response
#: (see :func:`tokenshape.shaping.shape_rewards` for the formulas and fallbacks):
#: ``"sum"`` phi / sum(phi), signed; ``"abs"`` |phi| / sum|phi|; ``"positive"``
#: relu(phi) / sum relu(phi).
NORMALIZATIONS = ("sum", "abs", "positive")

_SUM_TOLERANCE = 1e-6
_DEFAULT_CANCELLATION_TOLERANCE = 0.1


@dataclass(frozen=True)
class ShapingParams:
    """Blend weights on the simplex over named signals.

    Args:
        weights: signal name -> weight, e.g. ``{"sparse": 0.5, "kernel_shap": 0.5}``. Weights must be
            >= 0 and sum to 1 (within 1e-6) unless ``normalize=True``.
        normalization: how signed attributions become per-token shares, one of
            :data:`NORMALIZATIONS`.
        normalize: rescale weights that are >= 0 but don't sum to 1 instead of raising.
        cancellation_tolerance: in (0, 1]. With ``normalization="sum"`` a row whose attributions
            nearly cancel, ``|sum phi| < cancellation_tolerance * sum |phi|``, falls back to
            ``|phi| / sum |phi|``; this bounds every token's share by ``1 / cancellation_tolerance``
            (at most 10x the sequence reward at the default 0.1).

    Example:
        >>> params = ShapingParams({"attention": 2.0, "sparse": 2.0}, normalize=True)
        >>> params.weights
        {'attention': 0.5, 'sparse': 0.5}
    """

    weights: Mapping[str, float]
    _: KW_ONLY
    normalization: str = "sum"
    normalize: bool = field(default=False, compare=False)
    cancellation_tolerance: float = _DEFAULT_CANCELLATION_TOLERANCE

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
                raise InvalidArgumentError(f"weights[{name!r}]", value, "a number >= 0") from None
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
            raise InvalidArgumentError(
                "normalization", self.normalization, f"one of {NORMALIZATIONS}"
            )
        tolerance = self.cancellation_tolerance
        if (
            isinstance(tolerance, bool)
            or not isinstance(tolerance, (int, float))
            or not 0 < tolerance <= 1
        ):
            raise InvalidArgumentError("cancellation_tolerance", tolerance, "a number in (0, 1]")
        object.__setattr__(self, "weights", dict(clean))
        object.__setattr__(self, "cancellation_tolerance", float(tolerance))

    @property
    def active_signals(self) -> tuple[str, ...]:
        """Names of the signals with a weight above zero, in the order given."""
        return tuple(name for name, weight in self.weights.items() if weight > 0)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form; :meth:`from_dict` reads it back."""
        return {
            "weights": dict(self.weights),
            "normalization": self.normalization,
            "cancellation_tolerance": self.cancellation_tolerance,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShapingParams:
        """Rebuild params written by :meth:`to_dict`."""
        return cls(
            weights=dict(data["weights"]),
            normalization=data.get("normalization", "sum"),
            cancellation_tolerance=data.get(
                "cancellation_tolerance", _DEFAULT_CANCELLATION_TOLERANCE
            ),
        )
