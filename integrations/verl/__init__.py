"""verl integration: PPO with a critic on dense token rewards from explained reward models.

Importing it checks the installed verl (:func:`~tokenshape.integrations.verl.compat.check_verl_support`)
and registers :class:`TokenShapeRewardManager` in verl's reward-manager registry as
``"tokenshape"``. verl imports it by itself through the ``verl.plugins`` entry point, so
``reward.reward_manager.name=tokenshape`` works in every process that imports verl.
"""

from .compat import SUPPORTED_VERL, UnsupportedVerlError, check_verl_support

check_verl_support()

from .config import CONFIG_KEY, VerlShapingConfig
from .manager import (
    MANAGER_NAME,
    TokenShapeRewardManager,
    load_completion_shaper,
    reward_device,
)
from .trajectory import Trajectory, read_trajectory

__all__ = [
    "CONFIG_KEY",
    "MANAGER_NAME",
    "SUPPORTED_VERL",
    "TokenShapeRewardManager",
    "Trajectory",
    "UnsupportedVerlError",
    "VerlShapingConfig",
    "check_verl_support",
    "load_completion_shaper",
    "read_trajectory",
    "reward_device",
]
