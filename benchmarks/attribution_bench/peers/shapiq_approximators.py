"""shapiq as installed in the running environment: KernelSHAP with pairing."""

from __future__ import annotations

import numpy as np

from attribution_bench.game import Context, Method, ResponseRows
from attribution_bench.sequences import Sequence


def shapiq_kernel_shap(context: Context, sequence: Sequence, budget: int, seed: int) -> np.ndarray:
    from shapiq.approximator import KernelSHAP

    rows = ResponseRows(context, sequence)
    approximator = KernelSHAP(n=rows.n_units, pairing_trick=True, random_state=seed)
    values = approximator.approximate(budget=budget, game=rows.values_of_keep)
    return np.array([values[(i,)] for i in range(rows.n_units)], dtype=np.float64)


def methods() -> list[Method]:
    return [
        Method(
            "shapiq.kernel_shap", "shapiq", shapiq_kernel_shap, how="KernelSHAP, pairing_trick=True"
        )
    ]
