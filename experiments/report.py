"""``tokenshape report STUDY``: a self-contained HTML page with PNG plots of a study.

The page shows what the study can and cannot tell (the recommended blend by GP posterior mean with
its uncertainty, sparse GRPO's, the probability that the one beats the other, and the difference
the study cannot resolve), the objective per trial with its standard error over seeds, the
held-out reward along each trial's runs (against the step and against the KL to the starting
policy), every trial in a table, and the Gaussian process's posterior mean over the weights when
the simplex can be drawn (2 or 3 signals).
The PNGs are written beside ``report.html`` and embedded in it, so the page can be mailed alone.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from tokenshape.errors import InvalidArgumentError
from tokenshape.tuning.store import STUDY_FILE, Trial, TrialStore
from tokenshape.tuning.surrogate import Recommendation, SurrogateFitError, recommend

__all__ = ["REPORT_FILE", "write_report"]

REPORT_FILE = "report.html"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; }
.failed { color: #b00; }
"""


def _save_figure(figure, path: Path) -> str:
    """Save a matplotlib figure as PNG; returns an ``<img>`` tag embedding it."""
    import matplotlib.pyplot as plt

    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{encoded}">'


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n{body}\n"


def _sparse_trial(trials: list[Trial]) -> Trial | None:
    """The first complete trial with all weight on ``sparse``, if any."""
    return next(
        (
            t
            for t in trials
            if t.status == "complete" and t.params.weights.get("sparse", 0.0) >= 1.0 - 1e-9
        ),
        None,
    )


def _weights_text(trial: Trial) -> str:
    return ", ".join(f"{name} {w:.3f}" for name, w in trial.params.weights.items())


def _what_it_can_tell(
    trials: list[Trial], recommendation: Recommendation | None, why_not: str | None
) -> str:
    """Plain sentences on the recommendation, its uncertainty and the study's resolution."""
    complete = [t for t in trials if t.status == "complete"]
    if not complete:
        return "<p>No trial has completed yet.</p>"
    counts = sorted({len(t.replicate_values or (t.objective,)) for t in complete})
    seeds = " or ".join(str(n) for n in counts)
    lines = []
    if recommendation is None:
        best = max(complete, key=lambda t: t.objective)
        lines.append(
            f"No Gaussian process could be fitted ({html.escape(why_not or '')}). The highest "
            f"observation is trial {best.id} ({html.escape(_weights_text(best))}): "
            f"{best.objective:.4f}, one noisy draw, not a recommendation."
        )
    else:
        chosen = recommendation.trial
        lines.append(
            f"Recommended blend (highest GP posterior mean, not the highest single observation): "
            f"trial {chosen.id}, {html.escape(_weights_text(chosen))}: posterior mean "
            f"{recommendation.mean:.4f} ± {recommendation.sd:.4f} (sd)."
        )
        if recommendation.baseline is not None:
            lines.append(
                f"Plain sparse GRPO (trial {recommendation.baseline.id}): posterior mean "
                f"{recommendation.baseline_mean:.4f} ± {recommendation.baseline_sd:.4f}."
            )
            if recommendation.prob_better is not None:
                lines.append(
                    "Posterior probability that the recommended blend beats sparse GRPO: "
                    f"{recommendation.prob_better:.2f}."
                )
            else:
                lines.append("The recommendation is sparse GRPO itself.")
        if recommendation.noise_observed:
            within = recommendation.indistinguishable_within
            lines.append(
                f"Each trial is the mean of {seeds} training seeds and the GP was given each "
                "trial's measured noise. Blends within "
                f"±{within:.3f} of each other are indistinguishable at this budget (twice the "
                "largest posterior sd of a trial)."
            )
            if recommendation.spread < within:
                lines.append(
                    f"The posterior means of all trials lie within {recommendation.spread:.3f} of "
                    "each other: this study cannot separate its blends. More seeds per trial "
                    "(sweep.replicates) or longer runs would."
                )
        else:
            lines.append(
                "Each trial is one training seed, so its noise is not measured: the GP infers a "
                "single noise level and the study cannot say which differences between blends "
                "are real. Set sweep.replicates >= 2 to measure it."
            )
    runs = [
        r
        for t in complete
        for r in ((t.info or {}).get("replicates") or [])
        if r.get("kl_budget_reached") is not None
    ]
    missed = [r for r in runs if r["kl_budget_reached"] is False]
    if missed:
        lines.append(
            f"{len(missed)} of {len(runs)} runs never reached the KL budget: their objective is "
            "the held-out reward of their last checkpoint, at a lower KL."
        )
    return "".join(f"<p>{line}</p>" for line in lines)


def write_report(study_dir: str | Path) -> Path:
    """Write ``report.html`` and its PNGs into the study folder; returns the page's path."""
    import matplotlib

    matplotlib.use("Agg")
    from tokenshape.tuning.surrogate import posterior_mean_figure
    from tokenshape.viz.plots import heldout_checkpoints, objective_per_trial

    folder = Path(study_dir)
    if not (folder / STUDY_FILE).exists():
        raise InvalidArgumentError("study", str(folder), f"a study folder holding {STUDY_FILE}")
    with TrialStore(folder) as store:
        frame = store.to_dataframe()
        trials = store.trials()
        study = store.study
    signals = study.signals if study is not None else ()
    weight_columns = [f"w_{name}" for name in signals]
    recommendation, why_not = None, None
    try:
        recommendation = recommend(trials, signals, baseline=_sparse_trial(trials))
    except SurrogateFitError as error:
        why_not = str(error)
    chosen = None if recommendation is None else recommendation.trial.id

    sections = []
    config_file = folder / "config.yaml"
    sections.append(
        _section("What this study can tell", _what_it_can_tell(trials, recommendation, why_not))
    )
    figures = [
        (
            "objective per trial",
            "objective",
            lambda f: objective_per_trial(f, recommended=chosen),
        ),
        (
            "held-out reward along the runs",
            "checkpoints",
            lambda f: heldout_checkpoints(f, recommended=chosen),
        ),
    ]
    for title, stem, plot in figures:
        figure = plot(frame)
        sections.append(_section(title.capitalize(), _save_figure(figure, folder / f"{stem}.png")))
    posterior = posterior_mean_figure(trials, signals)
    if posterior is not None:
        sections.append(
            _section(
                "GP posterior mean over the weights",
                _save_figure(posterior, folder / "posterior.png"),
            )
        )
    shown = frame[
        ["status", "objective", "objective_sem", "replicates", *weight_columns, "attempts"]
        + ["duration_s", "error"]
    ].copy()
    shown.insert(
        4,
        "kl_to_start",
        frame["info"].map(lambda info: (info or {}).get("kl_to_start", float("nan"))),
    )
    shown["error"] = shown["error"].map(
        lambda error: (
            str(error).strip().splitlines()[-1] if isinstance(error, str) and error.strip() else ""
        )
    )
    sections.append(_section("Trials", shown.to_html(float_format=lambda v: f"{v:.4g}", na_rep="")))
    if config_file.exists():
        sections.append(_section("Config", f"<pre>{html.escape(config_file.read_text())}</pre>"))
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>tokenshape study {html.escape(folder.name)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>Study {html.escape(folder.name)}</h1>"
        f"<p>{len(frame)} trials: {int((frame['status'] == 'complete').sum())} complete, "
        f"{int((frame['status'] == 'failed').sum())} failed. Signals: {html.escape(', '.join(signals))}.</p>"
        + "".join(sections)
        + "</body></html>"
    )
    out = folder / REPORT_FILE
    out.write_text(page)
    return out
