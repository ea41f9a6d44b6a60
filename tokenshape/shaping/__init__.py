"""Shaping: turning a sequence reward and per-token attributions into dense token rewards."""

from tokenshape.shaping.functional import LinearShaper, shape_rewards
from tokenshape.shaping.params import NORMALIZATIONS, SPARSE, ShapingParams

__all__ = ["NORMALIZATIONS", "SPARSE", "LinearShaper", "ShapingParams", "shape_rewards"]
