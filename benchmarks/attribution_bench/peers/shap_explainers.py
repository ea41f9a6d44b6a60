"""shap: Partition with the Text masker's clustering, and KernelExplainer on a binary mask."""

from __future__ import annotations

from typing import Any

import numpy as np

from attribution_bench.game import Context, Method, ResponseRows
from attribution_bench.sequences import Sequence


class _MaskGameMasker:
    """A shap masker playing the mask game on a vector of response token ids.

    Hidden positions take the mask id. The clustering is the one shap's ``Text`` masker builds
    for text (its ``partition_tree`` over the word pieces), so Partition explains as it does text.
    """

    def __new__(cls, mask_id: int, tokens: list[str]) -> Any:
        from shap.maskers import Masker
        from shap.maskers._text import partition_tree

        class MaskGameMasker(Masker):
            def __init__(self) -> None:
                self.mask_id = mask_id
                self.shape = (1, len(tokens))
                tree = partition_tree(tokens, [])
                tree[:, 2] = tree[:, 3]
                tree[:, 2] /= tree[:, 2].max()
                self.clustering = tree
                self.default_batch_size = 5  # shap.maskers.Text's
                self.immutable_outputs = True

            def __call__(self, mask: np.ndarray, x: np.ndarray) -> tuple[np.ndarray]:
                return (np.where(mask, x, self.mask_id)[None, :],)

        return MaskGameMasker()


def shap_partition(context: Context, sequence: Sequence, budget: int, seed: int) -> np.ndarray:
    import shap

    np.random.seed(seed)
    rows = ResponseRows(context, sequence)
    tokens = context.tokenizer.convert_ids_to_tokens(rows.response.tolist())
    explainer = shap.explainers.Partition(
        rows.values_of_ids, _MaskGameMasker(context.mask_id, tokens)
    )
    explanation = explainer(rows.response.numpy()[None, :], max_evals=budget, silent=True)
    return np.asarray(explanation.values[0], dtype=np.float64).reshape(-1)


def shap_kernel(context: Context, sequence: Sequence, budget: int, seed: int) -> np.ndarray:
    import shap

    np.random.seed(seed)
    rows = ResponseRows(context, sequence)
    m = rows.n_units
    explainer = shap.KernelExplainer(rows.values_of_keep, np.zeros((1, m)))
    phi = explainer.shap_values(
        np.ones((1, m)), nsamples=max(budget - 2, 2), l1_reg=False, silent=True
    )
    return np.asarray(phi, dtype=np.float64).reshape(-1)


def methods() -> list[Method]:
    return [
        Method(
            "shap.partition",
            "shap",
            shap_partition,
            needs_tokenizer=True,
            how="Partition, Text-masker clustering, batch_size 5 (Text default)",
        ),
        Method(
            "shap.kernel",
            "shap",
            shap_kernel,
            how="KernelExplainer on a binary mask, l1_reg=False, nsamples=budget-2",
        ),
    ]
