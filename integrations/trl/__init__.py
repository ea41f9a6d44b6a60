"""TRL integration: GRPO with token advantages from explained, shaped rewards.

Importing it checks that the installed TRL has the hooks the trainer needs
(:func:`~tokenshape.integrations.trl.compat.check_trl_support`).
"""

from .compat import SUPPORTED_TRL, UnsupportedTRLError, check_trl_support
from .config import TokenShapeConfig
from .grpo import ShapedGRPOTrainer

__all__ = [
    "SUPPORTED_TRL",
    "ShapedGRPOTrainer",
    "TokenShapeConfig",
    "UnsupportedTRLError",
    "check_trl_support",
]
