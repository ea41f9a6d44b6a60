"""The first comparison: sparse GRPO, ABC, kernel_shap only, lime only and the tuned blend.

Each condition is trained with the same config for several seeds; every run is saved as it
finishes, so an interrupted comparison continues where it stopped. The results (final held-out
reward, steps needed to reach the sparse baseline's final training reward, KL to the starting
policy) are written as a Markdown table with a plot of the learning curves.

Usage::

    python -m tokenshape.experiments.compare --config imdb_positive --seeds 3 \\
        --study runs/imdb_positive --out experiments/results/imdb_positive
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

from rich.console import Console

from tokenshape.experiments.config import load_config
from tokenshape.experiments.inner_run import run_inner
from tokenshape.shaping.params import ShapingParams

__all__ = ["CONDITIONS", "main", "run_comparison", "steps_to_reach"]

#: Fixed conditions: name -> weights. ABC's attention weight is 0.5 (its beta is a choice).
CONDITIONS = {
    "sparse": {"sparse": 1.0},
    "abc": {"attention": 0.5, "sparse": 0.5},
    "kernel_shap": {"kernel_shap": 1.0},
    "lime": {"lime": 1.0},
}


def steps_to_reach(curve: list[float], target: float) -> int | None:
    """The first step (1-based) at which ``curve`` reaches ``target``, or None."""
    return next((step for step, value in enumerate(curve, start=1) if value >= target), None)


def _tuned_weights(study: Path) -> dict[str, float]:
    from tokenshape.tuning import TrialStore

    with TrialStore(study) as store:
        complete = [t for t in store.trials(status="complete")]
    if not complete:
        raise SystemExit(
            f"the study in {study} has no complete trial: run `tokenshape sweep` first"
        )
    return dict(max(complete, key=lambda t: t.objective).params.weights)


def run_comparison(
    config_name: str,
    seeds: int,
    study: Path | None,
    out: Path,
    console: Console,
    *,
    conditions: dict[str, dict[str, float]] | None = None,
) -> Path:
    """Run every condition for ``seeds`` seeds (skipping finished runs); returns the table's path.

    ``conditions`` defaults to :data:`CONDITIONS`; it must hold ``sparse``, the baseline.
    """
    base = load_config(config_name)
    conditions = dict(CONDITIONS if conditions is None else conditions)
    if study is not None:
        conditions["bo_tuned"] = _tuned_weights(study)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {name: [] for name in conditions}
    for name, weights in conditions.items():
        for seed in range(seeds):
            run_dir = out / "runs" / f"{name}-seed{seed}"
            result_file = run_dir / "result.json"
            if not result_file.exists():
                console.print(f"[bold]{name}[/] seed {seed}: {weights}")
                config = dataclasses.replace(base, seed=base.seed + seed)
                params = ShapingParams(weights, normalization=config.attribution.normalization)
                run_inner(config, params, output_dir=run_dir)
            results[name].append(json.loads(result_file.read_text()))
    return _write_table(results, conditions, out, config_name, seeds, study)


def _write_table(results, conditions, out: Path, config_name: str, seeds: int, study) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sparse_final = statistics.mean(run["learning_curve"][-1] for run in results["sparse"])
    rows = [
        "| condition | weights | held-out reward (mean ± sd) | steps to sparse's final train reward | KL to start |",
        "|---|---|---|---|---|",
    ]
    figure, ax = plt.subplots(figsize=(7, 4))
    for name, runs in results.items():
        finals = [run["objective"] for run in runs]
        spread = statistics.stdev(finals) if len(finals) > 1 else 0.0
        steps = [steps_to_reach(run["learning_curve"], sparse_final) for run in runs]
        reached = [s for s in steps if s is not None]
        steps_text = (
            f"{statistics.mean(reached):.1f} ({len(reached)}/{len(runs)} reached)"
            if reached
            else f"not reached (0/{len(runs)})"
        )
        kl = statistics.mean(run["kl_to_start"] for run in runs)
        weights = ", ".join(f"{k} {v:.2f}" for k, v in conditions[name].items())
        rows.append(
            f"| {name} | {weights} | {statistics.mean(finals):.3f} ± {spread:.3f} | {steps_text} | {kl:.3f} |"
        )
        length = min(len(run["learning_curve"]) for run in runs)
        mean_curve = [
            statistics.mean(run["learning_curve"][i] for run in runs) for i in range(length)
        ]
        ax.plot(
            range(1, length + 1),
            mean_curve,
            marker="o",
            label=name,
            linestyle="--" if name == "sparse" else "-",
        )
    ax.set_xlabel("GRPO step")
    ax.set_ylabel(f"mean training reward ({seeds} seeds)")
    ax.legend()
    figure.savefig(out / "learning_curves.png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    command = f"python -m tokenshape.experiments.compare --config {config_name} --seeds {seeds}"
    if study is not None:
        command += f" --study {study}"
    command += f" --out {out}"
    table = out / "results.md"
    table.write_text(
        f"# Comparison on `{config_name}`\n\n"
        + "\n".join(rows)
        + f"\n\n![learning curves](learning_curves.png)\n\nRegenerate: `{command}`\n"
    )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="imdb_positive")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--study",
        type=Path,
        default=None,
        help="a finished study; adds its best weights as bo_tuned",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    console = Console()
    out = args.out or Path("experiments/results") / args.config
    table = run_comparison(args.config, args.seeds, args.study, out, console)
    console.print(table.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
