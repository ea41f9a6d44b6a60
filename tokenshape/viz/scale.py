"""A diverging colour scale centred at zero, shared by the HTML and terminal views.

Negative scores are red, positive scores blue, zero near white (the five anchors of ColorBrewer's
RdBu, interpolated linearly). The scale is symmetric: it runs from ``-limit`` to ``+limit`` with
``limit`` the largest absolute finite score shown, so equal colour intensity means equal magnitude
whatever the sign.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["NAN_COLOR", "DivergingScale"]

# (position in [-1, 1], RGB): ColorBrewer RdBu, red for negative, blue for positive.
_ANCHORS = (
    (-1.0, (178, 24, 43)),
    (-0.5, (239, 138, 98)),
    (0.0, (247, 247, 247)),
    (0.5, (103, 169, 207)),
    (1.0, (33, 102, 172)),
)
#: Beyond this fraction of the limit a token's text is drawn white for contrast.
_DARK_FROM = 0.6
#: The grey of a NaN score (the HTML view hatches it).
NAN_COLOR = "#9e9e9e"


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


@dataclass(frozen=True)
class DivergingScale:
    """Colours for values in ``[-limit, limit]``; values beyond are clipped.

    Attributes:
        limit: the largest absolute value of the scale, > 0.
    """

    limit: float

    @classmethod
    def fit(cls, values: Iterable[float]) -> DivergingScale:
        """The scale whose limit is the largest absolute finite value (1.0 when all are 0 or NaN)."""
        finite = [abs(float(v)) for v in values if math.isfinite(float(v))]
        largest = max(finite, default=0.0)
        return cls(limit=largest if largest > 0 else 1.0)

    def position(self, value: float) -> float:
        """``value / limit`` clipped to ``[-1, 1]``."""
        return max(-1.0, min(1.0, float(value) / self.limit))

    def rgb(self, value: float) -> tuple[int, int, int]:
        """The colour of a finite ``value`` as an RGB triple."""
        t = self.position(value)
        for (t0, c0), (t1, c1) in itertools.pairwise(_ANCHORS):
            if t <= t1:
                f = (t - t0) / (t1 - t0)
                return tuple(round(a + f * (b - a)) for a, b in zip(c0, c1))  # type: ignore[return-value]
        return _ANCHORS[-1][1]

    def color(self, value: float) -> str:
        """The colour of ``value`` as ``#rrggbb``; :data:`NAN_COLOR` for NaN."""
        if math.isnan(float(value)):
            return NAN_COLOR
        return _hex(self.rgb(value))

    def text_color(self, value: float) -> str:
        """``#ffffff`` on a dark background, else ``#111111``."""
        dark = math.isfinite(float(value)) and abs(self.position(value)) > _DARK_FROM
        return "#ffffff" if dark else "#111111"

    def ticks(self) -> list[float]:
        """The values a legend labels: ``-limit, 0, limit``."""
        return [-self.limit, 0.0, self.limit]

    def css_gradient(self) -> str:
        """A CSS ``linear-gradient`` from ``-limit`` (left) to ``+limit`` (right)."""
        stops = ", ".join(f"{_hex(rgb)} {round((t + 1) * 50)}%" for t, rgb in _ANCHORS)
        return f"linear-gradient(to right, {stops})"
