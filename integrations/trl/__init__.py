"""TRL integration: a reward function that keeps dense rewards, and GRPO with token advantages
from explained, shaped rewards.

Importing it checks that the installed TRL has the hooks the trainer needs
(:func:`~tokenshape.integrations.trl.compat.check_trl_support`).
"""

from .compat import SUPPORTED_TRL, UnsupportedTRLError, check_trl_support
from .config import TokenShapeConfig
from .grpo import ShapedGRPOTrainer
from .reward import ShapedReward

__all__ = [
    "SUPPORTED_TRL",
    "ShapedGRPOTrainer",
    "ShapedReward",
    "TokenShapeConfig",
    "UnsupportedTRLError",
    "check_trl_support",
]
