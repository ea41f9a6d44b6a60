"""Every method the benchmark runs, in the order of the results tables."""

from __future__ import annotations

from attribution_bench.game import Method
from attribution_bench.peers import (
    captum_attr,
    lime_text,
    shap_explainers,
    shapiq_approximators,
    tokenshape_methods,
)

PEERS = (tokenshape_methods, shap_explainers, captum_attr, shapiq_approximators, lime_text)


def build_methods() -> list[Method]:
    return [method for peer in PEERS for method in peer.methods()]
