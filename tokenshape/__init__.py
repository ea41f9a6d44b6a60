"""tokenshape: dense token-level rewards for RLHF from explained reward models."""

from tokenshape.attribution import METHODS, Attributor, attribute, register_method
from tokenshape.errors import (
    InvalidArgumentError,
    MissingModelError,
    RewardFunctionError,
    TokenShapeError,
)
from tokenshape.reward import RewardFn, SequenceClassifierReward, StringScorerReward
from tokenshape.shaping import LinearShaper, ShapingParams, shape_rewards
from tokenshape.types import TokenAttribution

__all__ = [
    "METHODS",
    "Attributor",
    "InvalidArgumentError",
    "LinearShaper",
    "MissingModelError",
    "RewardFn",
    "RewardFunctionError",
    "SequenceClassifierReward",
    "ShapingParams",
    "StringScorerReward",
    "TokenAttribution",
    "TokenShapeError",
    "attribute",
    "register_method",
    "shape_rewards",
]
