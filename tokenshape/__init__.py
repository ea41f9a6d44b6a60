"""tokenshape: dense token-level rewards for RLHF from explained reward models."""

from tokenshape.alignment import align_scores, align_to_policy
from tokenshape.amortized import AmortizedExplainer
from tokenshape.attribution import METHODS, Attributor, attribute, register_method
from tokenshape.completions import CompletionShaper, CompletionShaping, ShapedBatch
from tokenshape.errors import (
    InvalidArgumentError,
    MissingModelError,
    RewardFunctionError,
    StudyStoreError,
    TokenShapeError,
)
from tokenshape.reward import RewardFn, SequenceClassifierReward, StringScorerReward
from tokenshape.shaping import LinearShaper, ShapingParams, shape_rewards
from tokenshape.types import TokenAttribution

__all__ = [
    "METHODS",
    "AmortizedExplainer",
    "Attributor",
    "CompletionShaper",
    "CompletionShaping",
    "InvalidArgumentError",
    "LinearShaper",
    "MissingModelError",
    "ObjectiveResult",
    "RewardFn",
    "RewardFunctionError",
    "SequenceClassifierReward",
    "ShapedBatch",
    "ShapedReward",
    "ShapingParams",
    "StringScorerReward",
    "StudyResult",
    "StudyStoreError",
    "TokenAttribution",
    "TokenShapeError",
    "TrialStore",
    "align_scores",
    "align_to_policy",
    "attribute",
    "register_method",
    "shape_rewards",
    "tune_shaping",
]

# The tuning loop imports BoTorch, which is slow to import: load it on first use.
_TUNING_NAMES = ("ObjectiveResult", "StudyResult", "TrialStore", "tune_shaping")


def __getattr__(name: str):
    if name in _TUNING_NAMES:
        import tokenshape.tuning

        return getattr(tokenshape.tuning, name)
    if name == "ShapedReward":  # TRL's reward function: importing it imports TRL
        from tokenshape.integrations.trl import ShapedReward

        return ShapedReward
    raise AttributeError(f"module 'tokenshape' has no attribute {name!r}")
