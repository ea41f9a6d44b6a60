"""tokenshape's own methods, each one batched call through :func:`tokenshape.attribute`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import tokenshape
from attribution_bench.game import Context, Method
from attribution_bench.sequences import Sequence, batch_tensors


def _tokenshape(method: str, *, remove: bool = False) -> tuple[Callable, Callable]:
    """``method`` in the mask game (hidden tokens become the context's mask id) or, with
    ``remove``, in the deletion game."""

    def explain_batch(
        context: Context, sequences: list[Sequence], budget: int, seed: int
    ) -> list[np.ndarray]:
        ids, attention, response = batch_tensors(sequences)
        result = tokenshape.attribute(
            context.reward,
            ids,
            attention,
            response,
            method=method,
            budget=budget,
            seed=seed,
            masking="remove" if remove else context.mask_id,
        )
        return [phi.detach().cpu().double().numpy() for phi in result.unit_scores]

    def explain(context: Context, sequence: Sequence, budget: int, seed: int) -> np.ndarray:
        return explain_batch(context, [sequence], budget, seed)[0]

    return explain, explain_batch


def methods() -> list[Method]:
    """kernel_shap, odd_surrogate_shap, lime, occlusion, attention, and kernel_shap in the
    deletion game."""
    ts_ks, ts_ks_batch = _tokenshape("kernel_shap")
    ts_odd, ts_odd_batch = _tokenshape("odd_surrogate_shap")
    ts_lime, ts_lime_batch = _tokenshape("lime")
    ts_occ, ts_occ_batch = _tokenshape("occlusion")
    ts_att, ts_att_batch = _tokenshape("attention")
    ts_rm, ts_rm_batch = _tokenshape("kernel_shap", remove=True)
    return [
        Method(
            "tokenshape.kernel_shap",
            "tokenshape",
            ts_ks,
            ts_ks_batch,
            how="paired, extreme sizes enumerated",
        ),
        Method(
            "tokenshape.odd_surrogate_shap",
            "tokenshape",
            ts_odd,
            ts_odd_batch,
            how="kernel_shap's rows, odd-part kernel-ridge surrogate as control variate",
        ),
        Method(
            "tokenshape.lime", "tokenshape", ts_lime, ts_lime_batch, how="ridge alpha=1, width 0.25"
        ),
        Method(
            "tokenshape.occlusion",
            "tokenshape",
            ts_occ,
            ts_occ_batch,
            fixed_rows=True,
            how="M+2 rows",
        ),
        Method(
            "tokenshape.attention",
            "tokenshape",
            ts_att,
            ts_att_batch,
            fixed_rows=True,
            how="1 row, last-layer [CLS] attention",
        ),
        Method(
            "tokenshape.kernel_shap[remove]",
            "tokenshape",
            ts_rm,
            ts_rm_batch,
            game="remove",
            how="masking='remove' (deletion game)",
        ),
    ]
