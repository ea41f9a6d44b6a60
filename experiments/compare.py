"""The first comparison: sparse GRPO, ABC, kernel_shap only, lime only and the tuned blend.

A control, sparse GRPO with twice the learning rate, runs beside them.

Each condition is trained with the same config for several seeds; every run is saved as it
finishes, so an interrupted comparison continues where it stopped. Runs go seed by seed (every
condition of seed 0, then of seed 1, ...), so a comparison stopped early is still balanced. Within a
seed all conditions share the training prompts, their order and the held-out prompts, so each
condition is also compared with sparse GRPO of the same seed.

The results are written as a Markdown table with plots: final held-out reward (and the starting
policy's on the same prompts), the paired difference to sparse, the steps needed to reach sparse's
final training reward, the KL to the starting policy and the training time.

Usage::

    python -m tokenshape.experiments.compare --config imdb_positive --seeds 3 \\
        --study runs/imdb_positive --steps 50 --eval-prompts 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from tokenshape.errors import InvalidArgumentError
from tokenshape.experiments.config import (
    ExperimentConfig,
    config_from_dict,
    config_to_dict,
    load_config,
)
from tokenshape.experiments.inner_run import run_inner
from tokenshape.experiments.progress import progress_bars
from tokenshape.machine import cpu_model
from tokenshape.shaping.params import ShapingParams

__all__ = ["CONDITIONS", "Condition", "main", "run_comparison", "smoothed", "steps_to_reach"]


@dataclass(frozen=True)
class Condition:
    """One arm of the comparison: the blend weights, and a multiplier of the learning rate."""

    weights: dict[str, float]
    learning_rate_scale: float = 1.0

    def describe(self) -> str:
        text = ", ".join(f"{name} {weight:.2f}" for name, weight in self.weights.items())
        if self.learning_rate_scale != 1.0:
            text += f"; learning rate x{self.learning_rate_scale:g}"
        return text


#: Fixed conditions. ABC's attention weight is 0.5 (its beta is a choice). ``sparse_lr2x`` is a
#: control: dense credit moves the policy further per step, so sparse GRPO with twice the learning
#: rate shows how much of a gain a larger step alone would give.
CONDITIONS = {
    "sparse": Condition({"sparse": 1.0}),
    "abc": Condition({"attention": 0.5, "sparse": 0.5}),
    "kernel_shap": Condition({"kernel_shap": 1.0}),
    "lime": Condition({"lime": 1.0}),
    "sparse_lr2x": Condition({"sparse": 1.0}, learning_rate_scale=2.0),
}

#: Training rewards are averaged over this many steps before steps-to-reach is read off.
SMOOTHING_WINDOW = 10


def smoothed(curve: list[float], window: int = SMOOTHING_WINDOW) -> list[float]:
    """Trailing mean of ``curve`` over up to ``window`` steps (shorter at the start)."""
    if window < 1:
        raise InvalidArgumentError("window", window, "an int >= 1")
    return [
        statistics.mean(curve[max(0, step - window + 1) : step + 1]) for step in range(len(curve))
    ]


def steps_to_reach(curve: list[float], target: float) -> int | None:
    """The first step (1-based) at which ``curve`` reaches ``target``, or None."""
    return next((step for step, value in enumerate(curve, start=1) if value >= target), None)


def _tuned(study: Path) -> Condition:
    from tokenshape.tuning import TrialStore

    with TrialStore(study) as store:
        complete = list(store.trials(status="complete"))
    if not complete:
        raise SystemExit(
            f"the study in {study} has no complete trial: run `tokenshape sweep` first"
        )
    return Condition(dict(max(complete, key=lambda t: t.objective).params.weights))


def _with_overrides(
    config: ExperimentConfig, steps: int | None, eval_prompts: int | None
) -> ExperimentConfig:
    """``config`` with its training steps and held-out prompts replaced, validated again.

    The runs' objective is always the held-out reward, whatever the config tunes.
    """
    data = config_to_dict(config)
    data["sweep"]["objective"] = "heldout_reward"
    if steps is not None:
        data["training"]["steps"] = steps
    if eval_prompts is not None:
        data["data"]["eval_prompts"] = eval_prompts
    return config_from_dict(data)


def run_comparison(
    config_name: str,
    seeds: int,
    study: Path | None,
    out: Path,
    console: Console,
    *,
    conditions: dict[str, Condition] | None = None,
    steps: int | None = None,
    eval_prompts: int | None = None,
) -> Path:
    """Run every condition for ``seeds`` seeds (skipping finished runs); returns the table's path.

    ``conditions`` defaults to :data:`CONDITIONS`; it must hold ``sparse``, the baseline.
    ``steps`` and ``eval_prompts`` replace the config's training steps and held-out prompts.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise InvalidArgumentError("seeds", seeds, "an int >= 1")
    base = _with_overrides(load_config(config_name), steps, eval_prompts)
    conditions = dict(CONDITIONS if conditions is None else conditions)
    if "sparse" not in conditions:
        raise InvalidArgumentError("conditions", sorted(conditions), "names including 'sparse'")
    if study is not None:
        conditions["bo_tuned"] = _tuned(study)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {name: [] for name in conditions}
    with progress_bars(console) as bars:
        runs_task = bars.add_task("runs", total=seeds * len(conditions))
        for seed in range(seeds):
            config = config_from_dict({**config_to_dict(base), "seed": base.seed + seed})
            for name, condition in conditions.items():
                result_file = out / "runs" / f"{name}-seed{seed}" / "result.json"
                if not result_file.exists():
                    bars.console.print(f"[bold]{name}[/] seed {seed}: {condition.describe()}")
                    _run(config, condition, result_file.parent, bars)
                results[name].append(json.loads(result_file.read_text()))
                bars.advance(runs_task)
    command = f"python -m tokenshape.experiments.compare --config {config_name} --seeds {seeds}"
    if study is not None:
        command += f" --study {study}"
    if steps is not None:
        command += f" --steps {steps}"
    if eval_prompts is not None:
        command += f" --eval-prompts {eval_prompts}"
    command += f" --out {out}"
    _plot(results, out, seeds)
    return _write_table(results, conditions, out, base, command)


def _run(config: ExperimentConfig, condition: Condition, folder: Path, bars) -> None:
    """One inner run with a step bar of its own, removed when the run ends."""
    if condition.learning_rate_scale != 1.0:
        data = config_to_dict(config)
        data["training"]["learning_rate"] *= condition.learning_rate_scale
        config = config_from_dict(data)
    params = ShapingParams(condition.weights, normalization=config.attribution.normalization)
    task = bars.add_task("  step", total=config.training.steps)
    try:
        run_inner(
            config,
            params,
            output_dir=folder,
            progress=lambda step, total: bars.update(task, completed=step, total=total),
        )
    finally:
        bars.remove_task(task)


def _mean_sd(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def _steps_to_sparse(runs: list[dict], sparse_runs: list[dict]) -> list[int | None]:
    """Per seed: the first step whose smoothed training reward reaches sparse's smoothed final.

    Only steps with a full averaging window count (all of them when the run is shorter).
    """
    steps = []
    for run, base in zip(runs, sparse_runs):
        curve = smoothed(run["learning_curve"])
        first_full = min(SMOOTHING_WINDOW, len(curve)) - 1
        reached = steps_to_reach(curve[first_full:], smoothed(base["learning_curve"])[-1])
        steps.append(None if reached is None else reached + first_full)
    return steps


def _write_table(
    results: dict[str, list[dict]],
    conditions: dict[str, Condition],
    out: Path,
    config: ExperimentConfig,
    command: str,
) -> Path:
    sparse = results["sparse"]
    seeds = len(sparse)
    rows = [
        (
            "| condition | weights | held-out reward | minus sparse, same seed | better than sparse "
            "| final train reward minus sparse | steps to sparse's final train reward "
            "| KL to start |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        finals = [run["objective"] for run in runs]
        differences = [run["objective"] - base["objective"] for run, base in zip(runs, sparse)]
        steps = _steps_to_sparse(runs, sparse)
        reached = [s for s in steps if s is not None]
        steps_text = (
            f"{statistics.mean(reached):.1f} ({len(reached)}/{len(runs)} reached)"
            if reached
            else f"not reached (0/{len(runs)})"
        )
        better = sum(d > 0 for d in differences)
        train_differences = [
            smoothed(run["learning_curve"])[-1] - smoothed(base["learning_curve"])[-1]
            for run, base in zip(runs, sparse)
        ]
        paired = name != "sparse"
        rows.append(
            f"| {name} | {conditions[name].describe()} | {_mean_sd(finals)} | "
            f"{_mean_sd(differences) if paired else '-'} | "
            f"{f'{better}/{len(runs)} seeds' if paired else '-'} | "
            f"{_mean_sd(train_differences) if paired else '-'} | {steps_text} | "
            f"{_mean_sd([run['kl_to_start'] for run in runs])} |"
        )
    start = [run["start_reward"] for run in sparse]
    training = config.training
    lines = [
        f"# Comparison on `{config.name}`",
        "",
        (
            f"{seeds} seeds per condition; each run: {training.steps} GRPO steps of "
            f"{training.batch_size} completions ({training.num_generations} per prompt, at most "
            f"{training.max_completion_length} tokens), attribution budget {config.attribution.budget} "
            f"rows per completion, then one seeded completion for each of {config.data.eval_prompts} "
            "held-out prompts scored by the reward model. Values are mean ± sd over seeds."
        ),
        "",
        *rows,
        "",
        (
            f"The starting policy scores {_mean_sd(start)} on the same held-out prompts "
            "(same sampling seed)."
        ),
        "",
        (
            f"Training rewards are averaged over the last {SMOOTHING_WINDOW} steps. Within a seed "
            "every condition trains on the same prompts in the same order, so the final train "
            "reward is compared with sparse GRPO's on the same prompts. Steps to reach: the first "
            f"step whose {SMOOTHING_WINDOW}-step average reaches sparse's final one; it compares "
            "different prompts, so it carries the batches' differences in difficulty."
        ),
        "",
        "The cost of a step with each signal is measured in `benchmarks/results/training_step.md`.",
        "",
        "![learning curves, held-out rewards, reward against KL](comparison.png)",
        "",
        (
            f"Machine: {platform.machine()}, {cpu_model() or 'unknown CPU'} "
            f"({os.cpu_count()} cores), torch CPU. Regenerate: `{command}`"
        ),
        "",
    ]
    table = out / "results.md"
    table.write_text("\n".join(lines))
    return table


def _plot(results: dict[str, list[dict]], out: Path, seeds: int) -> None:
    """Smoothed mean training curves; each seed's held-out rewards, joined; reward against KL.

    The middle panel starts with the starting policy's held-out reward, so each seed's line shows
    where every condition took the same policy on the same prompts. The right panel puts each run's
    held-out gain over its starting policy against its KL to it: a condition that only moves the
    policy further lies on the others' trend, one that moves it better lies above.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (curves, finals, frontier) = plt.subplots(
        1, 3, figsize=(17, 4.2), gridspec_kw={"width_ratios": [3, 2, 2]}
    )
    for name, runs in results.items():
        length = min(len(run["learning_curve"]) for run in runs)
        mean_curve = [
            statistics.mean(run["learning_curve"][i] for run in runs) for i in range(length)
        ]
        curves.plot(
            range(1, length + 1),
            smoothed(mean_curve),
            label=name,
            linestyle="--" if name == "sparse" else "-",
        )
        frontier.scatter(
            [run["kl_to_start"] for run in runs],
            [run["objective"] - run["start_reward"] for run in runs],
            label=name,
            marker="s" if name.startswith("sparse") else "o",
        )
    columns = {"start": [run["start_reward"] for run in results["sparse"]]}
    columns.update({name: [run["objective"] for run in runs] for name, runs in results.items()})
    for seed in range(seeds):
        finals.plot(
            range(len(columns)),
            [values[seed] for values in columns.values()],
            marker="o",
            alpha=0.5,
            label=f"seed {seed}",
        )
    for position, values in enumerate(columns.values()):
        finals.hlines(statistics.mean(values), position - 0.3, position + 0.3, color="black")
    curves.set_xlabel("GRPO step")
    curves.set_ylabel(f"training reward, mean of {seeds} seeds, {SMOOTHING_WINDOW}-step average")
    curves.legend()
    finals.set_xticks(range(len(columns)), list(columns), rotation=30)
    finals.set_ylabel("held-out reward (bar: mean over seeds)")
    finals.legend(fontsize="small")
    frontier.axhline(0.0, color="grey", linewidth=0.8)
    frontier.set_xlabel("KL to the starting policy (held-out completions)")
    frontier.set_ylabel("held-out reward minus the starting policy's")
    frontier.legend(fontsize="small")
    figure.savefig(out / "comparison.png", dpi=110, bbox_inches="tight")
    plt.close(figure)


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
    parser.add_argument("--steps", type=int, default=None, help="replaces training.steps")
    parser.add_argument("--eval-prompts", type=int, default=None, help="replaces data.eval_prompts")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    console = Console()
    out = args.out or Path("experiments/results") / Path(args.config).stem
    try:
        table = run_comparison(
            args.config,
            args.seeds,
            args.study,
            out,
            console,
            steps=args.steps,
            eval_prompts=args.eval_prompts,
        )
    except KeyboardInterrupt:
        console.print(
            f"stopped: finished runs are kept in {out / 'runs'}; run the same command to continue"
        )
        return 130
    console.print(table.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
