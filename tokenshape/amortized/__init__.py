"""Amortised attribution: an explainer head trained online on a Shapley teacher's scores."""

from tokenshape.amortized.explainer import SHAPLEY_TEACHERS, AmortizedExplainer
from tokenshape.amortized.fidelity import FidelityTracker, pearson, relative_l2
from tokenshape.amortized.head import ExplainerHead

__all__ = [
    "SHAPLEY_TEACHERS",
    "AmortizedExplainer",
    "ExplainerHead",
    "FidelityTracker",
    "pearson",
    "relative_l2",
]
