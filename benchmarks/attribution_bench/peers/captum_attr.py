"""captum: KernelShap, Lime and ShapleyValueSampling with the mask id as the baseline."""

from __future__ import annotations

import numpy as np
import torch

from attribution_bench.game import Context, Method, ResponseRows
from attribution_bench.sequences import Sequence


def _captum_surrogate(
    method: type, context: Context, sequence: Sequence, budget: int, seed: int
) -> np.ndarray:
    """A captum surrogate-model attribution (``KernelShap`` or ``Lime``) with ``budget`` rows."""
    torch.manual_seed(seed)
    rows = ResponseRows(context, sequence)
    phi = method(rows.forward).attribute(
        rows.response[None, :],
        baselines=context.mask_id,
        n_samples=budget,
        perturbations_per_eval=context.captum_chunk,
    )
    return phi.double().reshape(-1).numpy()


def captum_kernel_shap(context: Context, sequence: Sequence, budget: int, seed: int) -> np.ndarray:
    from captum.attr import KernelShap

    return _captum_surrogate(KernelShap, context, sequence, budget, seed)


def captum_lime(context: Context, sequence: Sequence, budget: int, seed: int) -> np.ndarray:
    from captum.attr import Lime

    return _captum_surrogate(Lime, context, sequence, budget, seed)


def captum_shapley_sampling(
    context: Context, sequence: Sequence, budget: int, seed: int
) -> np.ndarray:
    from captum.attr import ShapleyValueSampling

    torch.manual_seed(seed)
    rows = ResponseRows(context, sequence)
    phi = ShapleyValueSampling(rows.forward).attribute(
        rows.response[None, :],
        baselines=context.mask_id,
        n_samples=max(1, (budget - 1) // rows.n_units),
        perturbations_per_eval=context.captum_chunk,
    )
    return phi.double().reshape(-1).numpy()


def methods() -> list[Method]:
    return [
        Method(
            "captum.kernel_shap",
            "captum",
            captum_kernel_shap,
            how="n_samples=budget, perturbations_per_eval=16",
        ),
        Method(
            "captum.lime",
            "captum",
            captum_lime,
            how="defaults (Lasso 0.01, exp kernel), n_samples=budget, ppe=16",
        ),
        Method(
            "captum.shapley_sampling",
            "captum",
            captum_shapley_sampling,
            how="n_samples=(budget-1)//M permutations, ppe=16",
        ),
    ]
