"""Attribution methods, one per file, sharing one verb: :func:`attribute`."""

from tokenshape.attribution.api import METHODS, attribute, make_attributor, register_method
from tokenshape.attribution.attention import AttentionAttributor
from tokenshape.attribution.base import (
    Attributor,
    CoalitionAttributor,
    CoalitionPlan,
    GameAttribution,
)
from tokenshape.attribution.exact import ExactShapleyAttributor, shapley_from_values
from tokenshape.attribution.gradient import GradientAttributor
from tokenshape.attribution.kernel_shap import KernelShapAttributor
from tokenshape.attribution.lime import LimeAttributor
from tokenshape.attribution.lime_library import LimeLibraryAttributor
from tokenshape.attribution.occlusion import OcclusionAttributor
from tokenshape.attribution.odd_surrogate_shap import OddSurrogateShapAttributor
from tokenshape.attribution.prefix import PrefixAttributor
from tokenshape.attribution.shap_library import ShapLibraryAttributor

__all__ = [
    "METHODS",
    "AttentionAttributor",
    "Attributor",
    "CoalitionAttributor",
    "CoalitionPlan",
    "ExactShapleyAttributor",
    "GameAttribution",
    "GradientAttributor",
    "KernelShapAttributor",
    "LimeAttributor",
    "LimeLibraryAttributor",
    "OcclusionAttributor",
    "OddSurrogateShapAttributor",
    "PrefixAttributor",
    "ShapLibraryAttributor",
    "attribute",
    "make_attributor",
    "register_method",
    "shapley_from_values",
]
