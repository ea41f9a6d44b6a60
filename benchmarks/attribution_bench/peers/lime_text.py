"""lime: LimeTextExplainer on one word per token, no bag of words, no feature selection."""

from __future__ import annotations

import numpy as np

from attribution_bench.game import Context, Method, ResponseRows
from attribution_bench.sequences import Sequence


def lime_text(context: Context, sequence: Sequence, budget: int, seed: int) -> np.ndarray:
    from lime.lime_text import LimeTextExplainer

    rows = ResponseRows(context, sequence)
    m = rows.n_units
    # Each token is a word "t<id>"; hidden words become "t<mask id>".
    explainer = LimeTextExplainer(
        bow=False,
        split_expression=lambda text: text.split(" "),
        mask_string=f"t{context.mask_id}",
        feature_selection="none",
        random_state=seed,
    )

    def classify(texts: list[str]) -> np.ndarray:
        ids = np.array(
            [[int(word[1:]) for word in text.split(" ")] for text in texts], dtype=np.int64
        )
        return rows.values_of_ids(ids)[:, None]

    text = " ".join(f"t{token}" for token in rows.response.tolist())
    explanation = explainer.explain_instance(
        text, classify, labels=(0,), num_features=m, num_samples=budget
    )
    phi = np.zeros(m, dtype=np.float64)
    for feature, weight in explanation.local_exp[0]:
        phi[feature] = weight
    return phi


def methods() -> list[Method]:
    return [
        Method(
            "lime.text",
            "lime",
            lime_text,
            how="LimeTextExplainer bow=False, token split, feature_selection='none'",
        )
    ]
