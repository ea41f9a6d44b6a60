"""Where ``ShapedReward`` was first importable from; kept so existing imports keep working.

The TRL reward function lives in :mod:`tokenshape.integrations.trl.reward` (importing it imports
TRL); the framework-neutral core it calls, with :class:`ShapedBatch`, :func:`render_for_reward`
and :data:`SHAPED_UNITS`, in :mod:`tokenshape.completions`.
"""

from tokenshape.completions import SHAPED_UNITS, ShapedBatch, render_for_reward
from tokenshape.integrations.trl.reward import ShapedReward

__all__ = ["SHAPED_UNITS", "ShapedBatch", "ShapedReward", "render_for_reward"]
