"""Matplotlib figures: the artists they draw and the numbers behind them (Agg backend)."""

from __future__ import annotations

import json
import subprocess
import sys

import matplotlib
import numpy as np
import pandas as pd
import pytest

from tokenshape.errors import InvalidArgumentError
from tokenshape.shaping.params import ShapingParams
from tokenshape.tuning.store import TrialStore
from tokenshape.viz import plots

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def close_figures():
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


def test_importing_tokenshape_and_viz_does_not_import_matplotlib():
    code = (
        "import sys, tokenshape, tokenshape.viz, tokenshape.viz.plots, tokenshape.viz.html;"
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_viz_exports_resolve_lazily_and_unknown_names_fail():
    from tokenshape import viz

    assert viz.compare_html.__module__ == "tokenshape.viz.html"
    assert viz.learning_curves is plots.learning_curves
    assert set(viz.__all__) <= set(dir(viz))
    with pytest.raises(AttributeError, match="no_such_view"):
        viz.no_such_view  # noqa: B018


def test_heatmap_draws_response_scores_on_a_symmetric_scale(two_rows, piece_tokenizer):
    fig = plots.attribution_heatmap(two_rows, piece_tokenizer)
    ax = fig.axes[0]
    (image,) = ax.get_images()
    assert image.get_clim() == (-2.0, 2.0)
    data = image.get_array()
    assert data.shape == (2, 4)  # 4 and 3 response tokens; the prompt is not drawn
    np.testing.assert_allclose(data[0].filled(np.nan), [2.0, -1.0, 0.5, 0.0])
    assert data.mask[1].tolist() == [False, False, False, True]  # past the second response
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "score"  # the colour bar
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["great", "<script>", "alert(1)", "</script>", "dull", "long", "mess"]
    assert ax.get_title() == "kernel_shap attribution"


def test_heatmap_marks_nan_scores_as_hatched_cells(build):
    nan = float("nan")
    attribution = build([[0, 1.0, nan, -0.5]], [[1, 6, 7, 8]], [[False, True, True, True]])
    fig = plots.attribution_heatmap(attribution)
    ax = fig.axes[0]
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 1 and hatched[0].get_xy() == (0.5, -0.5)
    assert [t.get_text() for t in ax.texts] == ["6", "NaN", "8"]
    assert ax.get_images()[0].get_clim() == (-1.0, 1.0)


def test_heatmap_draws_on_a_given_axes(two_rows):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    assert plots.attribution_heatmap(two_rows, ax=ax) is fig


def test_method_agreement_scatters_response_tokens_with_pearson_r(build):
    ids, response = [[1, 6, 7, 8, 9, 2]], [[False, True, True, True, True, False]]
    a = build([[9.0, 1.0, 2.0, -1.0, 0.5, 9.0]], ids, response, method="kernel_shap")
    b = build([[0.0, 3.0, 5.0, -1.0, 2.0, 0.0]], ids, response, method="lime")  # 2a + 1
    fig = plots.method_agreement(a, b)
    ax = fig.axes[0]
    (points,) = ax.collections
    np.testing.assert_allclose(
        points.get_offsets(), [[1.0, 3.0], [2.0, 5.0], [-1.0, -1.0], [0.5, 2.0]]
    )
    assert ax.get_title() == "kernel_shap vs lime: Pearson r = 1.000"
    assert ax.get_legend().get_texts()[0].get_text() == "4 tokens, Pearson r = 1.000"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("kernel_shap score", "lime score")


def test_method_agreement_value_matches_numpy_and_skips_nan(build):
    ids, response = [[1, 6, 7, 8, 9]], [[False, True, True, True, True]]
    a = build([[0, 1.0, 2.0, 3.0, float("nan")]], ids, response)
    b = build([[0, 2.0, 1.0, 5.0, 4.0]], ids, response, method="occlusion")
    ax = plots.method_agreement(a, b).axes[0]
    expected = np.corrcoef([1.0, 2.0, 3.0], [2.0, 1.0, 5.0])[0, 1]
    assert ax.get_title().endswith(f"r = {expected:.3f}")
    assert len(ax.collections[0].get_offsets()) == 3


def test_method_agreement_refuses_different_tokens(build):
    a = build([[0, 1.0]], [[1, 6]], [[False, True]])
    with pytest.raises(InvalidArgumentError, match="b"):
        plots.method_agreement(a, build([[0, 1.0]], [[1, 7]], [[False, True]]))
    with pytest.raises(InvalidArgumentError, match="response_mask"):
        plots.method_agreement(a, build([[0, 1.0]], [[1, 6]], [[True, True]]))


@pytest.fixture
def study(tmp_path) -> pd.DataFrame:
    """A stored study: sparse-only baseline, four complete trials with curves and one failure."""
    signals = ["sparse", "kernel_shap"]
    weights = [1.0, 0.5, 0.2, 0.8, 0.3, 0.0]
    objectives = [0.4, 0.7, 0.6, None, 0.9, 0.5]
    with TrialStore(tmp_path / "study") as store:
        store.define_study(signals=signals, seed=0)
        params = [ShapingParams({"sparse": w, "kernel_shap": 1 - w}) for w in weights]
        for trial, objective in zip(store.add_trials(params, seeds=[0] * len(params)), objectives):
            store.start_trial(trial.id)
            if objective is None:
                store.fail_trial(trial.id, error="diverged")
            else:
                curve = [objective * step / 4 for step in range(5)]
                store.complete_trial(trial.id, objective=objective, learning_curve=curve)
        return store.to_dataframe()


def test_objective_per_trial_draws_points_and_best_so_far(study):
    ax = plots.objective_per_trial(study).axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(labels) == ["failed", "highest observed so far", "sparse only", "trial objective"]
    by_label = {c.get_label(): c for c in ax.collections}
    np.testing.assert_allclose(
        by_label["trial objective"].get_offsets(),
        [[0, 0.4], [1, 0.7], [2, 0.6], [4, 0.9], [5, 0.5]],
    )
    np.testing.assert_allclose(by_label["sparse only"].get_offsets(), [[0, 0.4]])
    np.testing.assert_allclose(by_label["failed"].get_offsets(), [[3, 0.4]])
    (best,) = [line for line in ax.get_lines() if line.get_label() == "highest observed so far"]
    np.testing.assert_allclose(best.get_xdata(), [0, 1, 2, 4, 5])
    np.testing.assert_allclose(best.get_ydata(), [0.4, 0.7, 0.7, 0.9, 0.9])
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("trial", "objective")


def test_objective_per_trial_without_complete_trials_says_so():
    frame = pd.DataFrame(
        {"status": ["failed"], "objective": [np.nan]}, index=pd.Index([0], name="trial")
    )
    ax = plots.objective_per_trial(frame).axes[0]
    assert "no complete trials" in [t.get_text() for t in ax.texts]


def test_objective_per_trial_refuses_a_frame_without_objective():
    with pytest.raises(InvalidArgumentError, match="objective"):
        plots.objective_per_trial(pd.DataFrame({"status": ["complete"]}))
    with pytest.raises(InvalidArgumentError, match="df"):
        plots.objective_per_trial([1, 2])


def test_learning_curves_highlight_best_and_sparse_only(study):
    ax = plots.learning_curves(study).axes[0]
    lines = ax.get_lines()
    assert len(lines) == 5  # the failed trial has no curve
    sparse = [line for line in lines if line.get_linestyle() == "--"]
    assert len(sparse) == 1 and sparse[0].get_label() == "sparse only (trial 0)"
    np.testing.assert_allclose(sparse[0].get_ydata(), [0.0, 0.1, 0.2, 0.3, 0.4])
    (best,) = [line for line in lines if line.get_label() == "best (trial 4)"]
    assert best.get_linewidth() > max(
        line.get_linewidth() for line in lines if line is not best and line not in sparse
    )
    np.testing.assert_allclose(best.get_ydata()[-1], 0.9)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(labels) == ["best (trial 4)", "other trials", "sparse only (trial 0)"]


def test_learning_curves_read_json_text_and_report_absence():
    frame = pd.DataFrame(
        {
            "objective": [0.5, 0.8],
            "learning_curve": [json.dumps([0.1, 0.5]), json.dumps([0.2, 0.8])],
        },
        index=pd.Index([0, 1], name="trial"),
    )
    ax = plots.learning_curves(frame).axes[0]
    np.testing.assert_allclose([line.get_ydata()[-1] for line in ax.get_lines()], [0.5, 0.8])
    empty = pd.DataFrame({"objective": [0.5], "learning_curve": [None]})
    ax = plots.learning_curves(empty).axes[0]
    assert "no learning curves recorded" in [t.get_text() for t in ax.texts]


def _checkpoints(rewards, kls):
    return [
        {"step": 2 * (i + 1), "reward_mean": r, "kl": k}
        for i, (r, k) in enumerate(zip(rewards, kls))
    ]


def test_objective_per_trial_shows_standard_errors_integer_ticks_and_the_recommendation():
    frame = pd.DataFrame(
        {
            "status": ["complete", "complete", "complete"],
            "objective": [0.4, 0.9, 0.6],
            "objective_sem": [0.1, np.nan, 0.05],
            "w_sparse": [1.0, 0.2, 0.0],
        },
        index=pd.Index([0, 1, 2], name="trial"),
    )
    ax = plots.objective_per_trial(frame, recommended=2).axes[0]
    (bars,) = [c for c in ax.containers if c.get_label() == "± standard error over seeds"]
    segments = bars.lines[2][0].get_segments()
    np.testing.assert_allclose([seg[:, 1] for seg in segments], [[0.3, 0.5], [0.55, 0.65]])
    ringed = {c.get_label(): c for c in ax.collections}["recommended (GP posterior mean)"]
    np.testing.assert_allclose(ringed.get_offsets(), [[2, 0.6]])
    ticks = ax.xaxis.get_major_locator().tick_values(0, 2)
    assert all(float(t).is_integer() for t in ticks)


def test_heldout_checkpoints_average_replicates_from_the_starting_policy():
    frame = pd.DataFrame(
        {
            "w_sparse": [1.0, 0.0],
            "info": [
                {
                    "start_reward": 0.5,
                    "replicates": [
                        {"checkpoints": _checkpoints([1.0, 2.0], [0.1, 0.3])},
                        {"checkpoints": _checkpoints([3.0, 4.0], [0.3, 0.5])},
                    ],
                },
                {"start_reward": 0.5, "checkpoints": _checkpoints([0.7, 0.8], [0.2, 0.6])},
            ],
        },
        index=pd.Index([0, 1], name="trial"),
    )
    figure = plots.heldout_checkpoints(frame, recommended=1)
    by_step, by_kl = figure.axes
    sparse, recommended = by_step.get_lines()
    assert sparse.get_linestyle() == "--" and sparse.get_label() == "sparse only (trial 0)"
    np.testing.assert_allclose(sparse.get_xdata(), [0, 2, 4])
    np.testing.assert_allclose(sparse.get_ydata(), [0.5, 2.0, 3.0])
    assert recommended.get_label() == "recommended (trial 1)"
    sparse_kl = by_kl.get_lines()[0]
    np.testing.assert_allclose(sparse_kl.get_xdata(), [0.0, 0.2, 0.4])
    empty = pd.DataFrame({"info": [None]}, index=pd.Index([0], name="trial"))
    ax = plots.heldout_checkpoints(empty).axes[0]
    assert "no checkpoints recorded" in [t.get_text() for t in ax.texts]
