"""Views of attributions and studies: HTML for notebooks, ``rich`` for terminals, matplotlib plots.

Names are imported on first use, so ``import tokenshape`` never imports matplotlib or rich.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "attribution_heatmap",
    "attribution_html",
    "compare_html",
    "heldout_checkpoints",
    "learning_curves",
    "method_agreement",
    "objective_per_trial",
    "render_terminal",
    "save_html",
    "terminal_view",
]

_MODULE_OF = {
    "attribution_html": "html",
    "compare_html": "html",
    "save_html": "html",
    "render_terminal": "terminal",
    "terminal_view": "terminal",
    "attribution_heatmap": "plots",
    "method_agreement": "plots",
    "objective_per_trial": "plots",
    "learning_curves": "plots",
    "heldout_checkpoints": "plots",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'tokenshape.viz' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tokenshape.viz.{_MODULE_OF[name]}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
