"""Matplotlib figures of attributions and tuning studies.

matplotlib is imported inside each function, so importing this module (or ``tokenshape``) never
imports it. Every function draws on ``ax`` when given, else on a new figure, and returns the
figure.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from tokenshape.errors import InvalidArgumentError
from tokenshape.types import TokenAttribution
from tokenshape.viz.tokens import token_texts, visible_text

__all__ = [
    "attribution_heatmap",
    "heldout_checkpoints",
    "learning_curves",
    "method_agreement",
    "objective_per_trial",
]

#: Token texts are written into the heatmap's cells up to this many response tokens per row.
MAX_ANNOTATED_TOKENS = 64
#: A trial whose ``w_sparse`` is at least this is the plain sparse-reward baseline.
SPARSE_ONLY_WEIGHT = 1.0 - 1e-9

_SPARSE_COLOR = "#000000"
_BEST_COLOR = "#2166ac"
_FAILED_COLOR = "#b2182b"


def _axes(ax: Any, figsize: tuple[float, float]) -> Any:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _check_attribution(name: str, value: Any) -> None:
    if not isinstance(value, TokenAttribution):
        raise InvalidArgumentError(name, type(value).__name__, "a TokenAttribution")


def _response_rows(
    attribution: TokenAttribution, tokenizer: Any
) -> list[tuple[list[str], list[float]]]:
    """Per sequence, the texts and scores of its response tokens, in order."""
    rows = []
    for b in range(attribution.scores.shape[0]):
        mask = attribution.response_mask[b].cpu().bool()
        ids = attribution.input_ids[b].cpu()[mask].tolist()
        scores = attribution.scores[b].detach().cpu().double()[mask].tolist()
        rows.append(([visible_text(t) for t in token_texts(ids, tokenizer)], scores))
    return rows


def attribution_heatmap(
    attribution: TokenAttribution, tokenizer: Any = None, ax: Any = None
) -> Any:
    """A heatmap of the response tokens' scores: one row per sequence, one column per token.

    The colour scale is RdBu, symmetric around zero (``vmax = max |score|``). Cells past a row's
    response are blank; a NaN score is a hatched cell labelled ``NaN``, never a zero. Token texts
    are written into the cells when rows have at most :data:`MAX_ANNOTATED_TOKENS` tokens.

    Args:
        attribution: the scores to draw.
        tokenizer: decodes the tokens; defaults to ``attribution.tokenizer``; with neither, ids
            are written.
        ax: the axes to draw on; a new figure when None.

    Returns:
        The figure, with an image, a colour bar and the token texts.
    """
    _check_attribution("attribution", attribution)
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    tokenizer = tokenizer if tokenizer is not None else attribution.tokenizer
    rows = _response_rows(attribution, tokenizer)
    width = max(len(scores) for _, scores in rows)
    values = np.full((len(rows), width), np.nan)
    for b, (_, scores) in enumerate(rows):
        values[b, : len(scores)] = scores
    finite = np.abs(values[np.isfinite(values)])
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    ax = _axes(ax, (min(max(6.0, 0.45 * width), 24.0), max(2.0, 0.6 * len(rows) + 1.2)))
    cmap = colormaps["RdBu"].with_extremes(bad="#ffffff")
    image = ax.imshow(
        np.ma.masked_invalid(values),
        cmap=cmap,
        vmin=-vmax,
        vmax=vmax,
        aspect="auto",
        interpolation="nearest",
    )
    ax.figure.colorbar(image, ax=ax, label="score")
    for b, (texts, scores) in enumerate(rows):
        for j, (text, score) in enumerate(zip(texts, scores)):
            if math.isnan(score):
                ax.add_patch(
                    Rectangle(
                        (j - 0.5, b - 0.5), 1, 1, fill=False, hatch="///", edgecolor="#666666"
                    )
                )
                ax.text(j, b, "NaN", ha="center", va="center", fontsize=7)
            elif width <= MAX_ANNOTATED_TOKENS:
                color = "#ffffff" if abs(score) > 0.6 * vmax else "#111111"
                ax.text(
                    j,
                    b,
                    text,
                    ha="center",
                    va="center",
                    fontsize=7,
                    color=color,
                    rotation=90 if len(text) > 3 else 0,
                )
    ax.set_yticks(range(len(rows)))
    ax.set_ylabel("sequence")
    ax.set_xlabel("response token")
    ax.set_title(f"{attribution.method} attribution")
    return ax.figure


def method_agreement(a: TokenAttribution, b: TokenAttribution, ax: Any = None) -> Any:
    """Scatter of two methods' scores over the same response tokens, with their Pearson r.

    Args:
        a: the first method's attribution (x axis).
        b: the second method's attribution of the same tokens (y axis).
        ax: the axes to draw on; a new figure when None.

    Returns:
        The figure: one point per response token where both scores are finite; the title and
        the legend give the Pearson correlation (``nan`` with fewer than two points or a
        constant score).
    """
    _check_attribution("a", a)
    _check_attribution("b", b)
    if a.input_ids.shape != b.input_ids.shape or not bool(
        (a.input_ids.cpu() == b.input_ids.cpu()).all()
    ):
        raise InvalidArgumentError(
            "b", f"input_ids of shape {tuple(b.input_ids.shape)}", "the same tokens as a"
        )
    if not bool((a.response_mask.cpu() == b.response_mask.cpu()).all()):
        raise InvalidArgumentError(
            "b", "a different response_mask", "the same response tokens as a"
        )
    mask = a.response_mask.cpu().bool()
    x = a.scores.detach().cpu().double()[mask].numpy()
    y = b.scores.detach().cpu().double()[mask].numpy()
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    r = float(np.corrcoef(x, y)[0, 1]) if x.size >= 2 and x.std() > 0 and y.std() > 0 else math.nan
    ax = _axes(ax, (5.0, 4.5))
    ax.axhline(0.0, color="#bbbbbb", linewidth=0.8, zorder=0)
    ax.axvline(0.0, color="#bbbbbb", linewidth=0.8, zorder=0)
    ax.scatter(
        x, y, s=16, alpha=0.75, color=_BEST_COLOR, label=f"{x.size} tokens, Pearson r = {r:.3f}"
    )
    ax.set_xlabel(f"{a.method} score")
    ax.set_ylabel(f"{b.method} score")
    ax.set_title(f"{a.method} vs {b.method}: Pearson r = {r:.3f}")
    ax.legend(loc="best")
    return ax.figure


def _study_frame(df: Any, required: tuple[str, ...]) -> Any:
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise InvalidArgumentError(
            "df", type(df).__name__, "a DataFrame from TrialStore.to_dataframe()"
        )
    missing = [column for column in required if column not in df.columns]
    if missing:
        raise InvalidArgumentError(
            "df",
            f"columns {list(df.columns)}",
            f"a study DataFrame with the columns {list(required)}",
        )
    frame = df.reset_index() if "trial" not in df.columns else df.copy()
    if "trial" not in frame.columns:
        frame = frame.rename(columns={frame.columns[0]: "trial"})
    return frame.sort_values("trial")


def _sparse_only(frame: Any) -> Any:
    if "w_sparse" not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    return (frame["w_sparse"].astype(float) >= SPARSE_ONLY_WEIGHT).to_numpy()


def _complete(frame: Any) -> Any:
    done = frame["objective"].notna().to_numpy()
    if "status" in frame.columns:
        done = done & (frame["status"] == "complete").to_numpy()
    return done


def objective_per_trial(df: Any, ax: Any = None, *, recommended: int | None = None) -> Any:
    """Each trial's objective in trial order, with its standard error and the highest so far.

    Args:
        df: a study table from :meth:`tokenshape.tuning.store.TrialStore.to_dataframe` (trial id as
            the index or a ``trial`` column, ``objective``, optionally ``objective_sem``,
            ``status`` and ``w_sparse``).
        ax: the axes to draw on; a new figure when None.
        recommended: the id of the recommended trial (highest GP posterior mean), ringed.

    Returns:
        The figure: complete trials as points with ``± objective_sem`` bars where measured, the
        highest observation so far as a step line (one noisy draw: not the recommendation),
        sparse-only trials (``w_sparse`` = 1) as stars, failed trials as crosses on the lower
        edge, the recommended trial ringed; integer ticks on the trial axis.
    """
    from matplotlib.ticker import MaxNLocator

    frame = _study_frame(df, ("objective",))
    done = _complete(frame)
    sparse = _sparse_only(frame)
    ax = _axes(ax, (6.0, 4.0))
    trials = frame["trial"].to_numpy()
    objective = frame["objective"].astype(float).to_numpy()
    sem = (
        frame["objective_sem"].astype(float).to_numpy()
        if "objective_sem" in frame.columns
        else np.full(len(frame), np.nan)
    )
    if done.any():
        ax.scatter(
            trials[done], objective[done], s=22, color="#777777", label="trial objective", zorder=2
        )
        measured = done & np.isfinite(sem)
        if measured.any():
            ax.errorbar(
                trials[measured],
                objective[measured],
                yerr=sem[measured],
                fmt="none",
                ecolor="#777777",
                capsize=3,
                label="± standard error over seeds",
                zorder=2,
            )
        best = np.maximum.accumulate(objective[done])
        ax.step(
            trials[done],
            best,
            where="post",
            color=_BEST_COLOR,
            linewidth=2,
            label="highest observed so far",
            zorder=3,
        )
        if (done & sparse).any():
            ax.scatter(
                trials[done & sparse],
                objective[done & sparse],
                marker="*",
                s=120,
                color=_SPARSE_COLOR,
                label="sparse only",
                zorder=4,
            )
        chosen = done & (trials == recommended)
        if chosen.any():
            ax.scatter(
                trials[chosen],
                objective[chosen],
                s=220,
                facecolors="none",
                edgecolors=_BEST_COLOR,
                linewidths=2,
                label="recommended (GP posterior mean)",
                zorder=5,
            )
    else:
        _nothing_to_show(ax, "no complete trials")
    failed = (
        (frame["status"] == "failed").to_numpy()
        if "status" in frame.columns
        else np.zeros(len(frame), bool)
    )
    if failed.any():
        low = float(objective[done].min()) if done.any() else 0.0
        ax.scatter(
            trials[failed],
            np.full(int(failed.sum()), low),
            marker="x",
            color=_FAILED_COLOR,
            label="failed",
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("objective")
    ax.set_title("objective per trial")
    if done.any() or failed.any():
        ax.legend(loc="best")
    return ax.figure


def _replicate_checkpoints(info: Any) -> list[list[dict]]:
    """The checkpoints of each replicate recorded in a trial's ``info``."""
    if not isinstance(info, dict):
        return []
    if info.get("replicates"):
        return [r["checkpoints"] for r in info["replicates"] if r.get("checkpoints")]
    return [info["checkpoints"]] if info.get("checkpoints") else []


def _mean_path(runs: list[list[dict]], start_reward: float | None) -> tuple[list, list, list]:
    """Steps, mean KL and mean held-out reward over replicates at the checkpoints all share."""
    steps = sorted(set.intersection(*({c["step"] for c in run} for run in runs)))
    by_step = [{c["step"]: c for c in run} for run in runs]
    kl = [float(np.mean([run[s]["kl"] for run in by_step])) for s in steps]
    reward = [float(np.mean([run[s]["reward_mean"] for run in by_step])) for s in steps]
    if start_reward is not None:
        return [0, *steps], [0.0, *kl], [start_reward, *reward]
    return steps, kl, reward


def _nothing_to_show(ax: Any, message: str) -> None:
    """Write ``message`` in the middle of an empty panel."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)


def _trial_style(trial: int, *, sparse: bool, highlight: str | None) -> tuple[dict, str]:
    """Line style and legend label of one trial: sparse-only, highlighted (``highlight`` names
    why, e.g. "recommended"), or one of the others."""
    if sparse:
        style = {"color": _SPARSE_COLOR, "linestyle": "--", "linewidth": 2.0, "zorder": 4}
        return style, f"sparse only (trial {trial})"
    if highlight is not None:
        return {"color": _BEST_COLOR, "linewidth": 2.5, "zorder": 3}, f"{highlight} (trial {trial})"
    return {"color": "#999999", "linewidth": 1.0, "alpha": 0.7, "zorder": 2}, "other trials"


def heldout_checkpoints(df: Any, axes: Any = None, *, recommended: int | None = None) -> Any:
    """Held-out reward along each trial's runs, against the step and against the KL.

    Args:
        df: a study table from :meth:`tokenshape.tuning.store.TrialStore.to_dataframe` whose
            ``info`` holds ``checkpoints`` (one run) or ``replicates`` with ``checkpoints``
            each (``step``, ``kl``, ``reward_mean``), and ``start_reward``.
        axes: two axes to draw on; a new figure when None.
        recommended: the id of the recommended trial, drawn bold.

    Returns:
        The figure: per trial, the mean over replicates of the held-out reward at each
        checkpoint (from the starting policy at step 0, KL 0) against the step (left) and
        against the KL to the starting policy (right); sparse-only trials black and dashed.
    """
    frame = _study_frame(df, ("info",))
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(1, 2, figsize=(11.0, 4.0))
    by_step, by_kl = axes
    sparse = _sparse_only(frame)
    labelled: set[str] = set()
    for k, (trial, info) in enumerate(zip(frame["trial"], frame["info"])):
        runs = _replicate_checkpoints(info)
        if not runs:
            continue
        steps, kl, reward = _mean_path(runs, info.get("start_reward"))
        style, label = _trial_style(
            trial, sparse=sparse[k], highlight="recommended" if trial == recommended else None
        )
        shown = None if label in labelled else label
        by_step.plot(steps, reward, marker="o", markersize=3, label=shown, **style)
        by_kl.plot(kl, reward, marker="o", markersize=3, label=shown, **style)
        labelled.add(label)
    if labelled:
        by_step.legend(loc="best", fontsize="small")
    else:
        _nothing_to_show(by_step, "no checkpoints recorded")
    by_step.set_xlabel("GRPO step")
    by_step.set_ylabel("held-out reward (mean over seeds)")
    by_step.set_title("held-out reward along the run")
    by_kl.set_xlabel("KL to the starting policy (nats per completion)")
    by_kl.set_ylabel("held-out reward (mean over seeds)")
    by_kl.set_title("held-out reward against KL")
    return by_step.figure


def _curve(value: Any) -> list[float] | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        value = json.loads(value)
    return [float(v) for v in value]


def learning_curves(df: Any, ax: Any = None) -> Any:
    """The inner runs' learning curves of a study, one line per trial that recorded one.

    Args:
        df: a study table from :meth:`tokenshape.tuning.store.TrialStore.to_dataframe` with a
            ``learning_curve`` column (a list of values per evaluation step, its JSON text, or
            None); ``objective`` and ``w_sparse`` are used when present.
        ax: the axes to draw on; a new figure when None.

    Returns:
        The figure: every curve thin, the best trial's (highest objective) bold, and sparse-only
        trials (``w_sparse`` = 1, the plain sparse RLHF baseline) black and dashed.
    """
    frame = _study_frame(df, ("learning_curve",))
    curves = [_curve(value) for value in frame["learning_curve"]]
    sparse = _sparse_only(frame)
    objective = (
        frame["objective"].astype(float).to_numpy() if "objective" in frame.columns else None
    )
    scored = [
        k
        for k, curve in enumerate(curves)
        if curve and objective is not None and math.isfinite(objective[k])
    ]
    best = max(scored, key=lambda k: objective[k]) if scored else None
    ax = _axes(ax, (6.0, 4.0))
    labelled: set[str] = set()
    for k, (trial, curve) in enumerate(zip(frame["trial"], curves)):
        if not curve:
            continue
        style, label = _trial_style(
            trial, sparse=sparse[k], highlight="best" if k == best else None
        )
        ax.plot(range(len(curve)), curve, label=None if label in labelled else label, **style)
        labelled.add(label)
    if labelled:
        ax.legend(loc="best")
    else:
        _nothing_to_show(ax, "no learning curves recorded")
    ax.set_xlabel("step")
    ax.set_ylabel("recorded value (training reward per step)")
    ax.set_title("learning curves")
    return ax.figure
