"""The outer loop: Bayesian optimisation of the shaping weights, with trials kept on disk."""

from tokenshape.tuning.optimizer import (
    ObjectiveResult,
    StudyResult,
    propose_candidates,
    tune_shaping,
)
from tokenshape.tuning.space import SimplexSpace
from tokenshape.tuning.store import TRIAL_STATUSES, StudyInfo, Trial, TrialStore
from tokenshape.tuning.surrogate import Recommendation, SurrogateFitError, recommend

__all__ = [
    "TRIAL_STATUSES",
    "ObjectiveResult",
    "Recommendation",
    "SimplexSpace",
    "StudyInfo",
    "StudyResult",
    "SurrogateFitError",
    "Trial",
    "TrialStore",
    "propose_candidates",
    "recommend",
    "tune_shaping",
]
