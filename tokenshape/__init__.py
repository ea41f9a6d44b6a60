"""tokenshape: dense token-level rewards for RLHF from explained reward models."""

from tokenshape.errors import (
    InvalidArgumentError,
    MissingModelError,
    RewardFunctionError,
    TokenShapeError,
)

__all__ = [
    "InvalidArgumentError",
    "MissingModelError",
    "RewardFunctionError",
    "TokenShapeError",
]
