"""``tokenshape report STUDY``: a self-contained HTML page with PNG plots of a study.

The page shows the study's config, the objective per trial with the best so far, the learning
curves (shaped trials against the sparse ones), the best weights, every trial in a table, and the
Gaussian process's posterior mean over the weights when the simplex can be drawn (2 or 3 signals).
The PNGs are written beside ``report.html`` and embedded in it, so the page can be mailed alone.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from tokenshape.errors import InvalidArgumentError
from tokenshape.tuning.store import STUDY_FILE, TrialStore

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


def write_report(study_dir: str | Path) -> Path:
    """Write ``report.html`` and its PNGs into the study folder; returns the page's path."""
    import matplotlib

    matplotlib.use("Agg")
    from tokenshape.tuning.surrogate import posterior_mean_figure
    from tokenshape.viz.plots import learning_curves, objective_per_trial

    folder = Path(study_dir)
    if not (folder / STUDY_FILE).exists():
        raise InvalidArgumentError("study", str(folder), f"a study folder holding {STUDY_FILE}")
    with TrialStore(folder) as store:
        frame = store.to_dataframe()
        study = store.study
    signals = study.signals if study is not None else ()
    weight_columns = [f"w_{name}" for name in signals]
    complete = frame[frame["status"] == "complete"]

    sections = []
    config_file = folder / "config.yaml"
    if config_file.exists():
        sections.append(_section("Config", f"<pre>{html.escape(config_file.read_text())}</pre>"))
    if len(complete):
        best = complete["objective"].idxmax()
        weights = ", ".join(f"{name} = {complete.loc[best, f'w_{name}']:.3f}" for name in signals)
        sections.append(
            _section(
                "Best trial",
                f"<p>trial {best}: objective {complete.loc[best, 'objective']:.4f} with {html.escape(weights)}</p>",
            )
        )
    else:
        sections.append(_section("Best trial", "<p>No trial has completed yet.</p>"))
    figures = [("objective per trial", "objective", objective_per_trial)]
    if complete["learning_curve"].notna().any():
        figures.append(
            ("learning curves: shaped against sparse", "learning_curves", learning_curves)
        )
    for title, stem, plot in figures:
        axes = plot(frame)
        sections.append(
            _section(title.capitalize(), _save_figure(axes.figure, folder / f"{stem}.png"))
        )
    posterior = posterior_mean_figure(
        complete[weight_columns].to_numpy(), complete["objective"].to_numpy(), signals
    )
    if posterior is not None:
        sections.append(
            _section(
                "GP posterior mean over the weights",
                _save_figure(posterior, folder / "posterior.png"),
            )
        )
    shown = frame[
        ["status", "objective", *weight_columns, "attempts", "duration_s", "error"]
    ].copy()
    shown["error"] = shown["error"].map(
        lambda error: (
            str(error).strip().splitlines()[-1] if isinstance(error, str) and error.strip() else ""
        )
    )
    sections.append(_section("Trials", shown.to_html(float_format=lambda v: f"{v:.4g}", na_rep="")))
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
