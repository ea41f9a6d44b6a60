"""The comparison on the reward-KL-compute frontier: sparse GRPO, dense signals, ABC, a tuned blend.

Conditions (``--conditions``, ``--modes``, ``--learning-rates``):

- ``sparse``: plain sparse GRPO at each learning-rate multiplier (its own frontier; dense credit
  moves the policy further per step, so sparse GRPO gets its best learning rate before shaping is
  credited). Named ``sparse`` at x1 and ``sparse_lr<x>`` otherwise.
- each dense signal (``kernel_shap``, ``lime``, ...) alone in each mode (``weight``,
  ``reward_to_go``, ``hybrid``), named ``<signal>.<mode>``;
- ``abc``: attention credit with weight 0.5 (ABC's beta is a choice), in ``weight`` mode;
- ``bo_tuned`` (with ``--study``): the study's recommended blend, by GP posterior mean, in the
  study's mode.

Each condition is trained for ``--seeds`` training seeds, seed by seed (every condition of one
seed, then the next), so a comparison stopped early is still balanced. Within a seed all
conditions share the training prompts and their order; the training seeds are not the study's
(they start at ``config.seed + 1000``) and the held-out prompts are a block of the held-out split
that a study never uses (from ``FINAL_EVAL_OFFSET``), so a tuned blend is not scored on what it was
selected on. Every run records its full specification; a resumed comparison keeps a finished run
only when its spec matches and refuses to mix in one that does not (before training anything).

Results, written to ``--out``: ``results.md`` with the held-out reward at matched KL, at matched
wall-clock seconds and at matched compute (reward-model rows plus policy tokens), each paired by
seed with sparse GRPO with percentile-bootstrap 95% intervals, and at the final checkpoint;
``frontier.png`` with held-out reward against KL and against compute, mean and 95% interval over
seeds.

Usage (the comparison recorded in ``experiments/results/imdb_positive``)::

    python -m tokenshape.experiments.compare --config imdb_positive --seeds 3 \\
        --conditions sparse,abc,kernel_shap,lime --modes weight --learning-rate 4e-5 \\
        --learning-rates 0.5,1,2 --steps 24 --eval-prompts 32 --eval-samples 2 --checkpoints 6

Add ``--study runs/imdb_positive`` to compare a study's recommended blend as well.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from rich.console import Console

from tokenshape.errors import InvalidArgumentError, TokenShapeError
from tokenshape.experiments.config import (
    BUILTIN_PROMPTS,
    ExperimentConfig,
    config_from_dict,
    config_to_dict,
    load_config,
)
from tokenshape.experiments.frontier import (
    AXES,
    Interval,
    best_at,
    bootstrap_mean,
    levels_up_to,
    matched_levels,
    path,
    reach,
    reward_at,
)
from tokenshape.experiments.inner_run import run_inner
from tokenshape.experiments.interrupts import remembered_interrupts
from tokenshape.experiments.progress import progress_bars
from tokenshape.experiments.prompts import heldout_block
from tokenshape.experiments.runs import finished_result, run_spec
from tokenshape.experiments.sources import check_sources
from tokenshape.machine import cpu_model
from tokenshape.shaping.params import ShapingParams

__all__ = [
    "FINAL_EVAL_OFFSET",
    "Condition",
    "build_conditions",
    "main",
    "parse_learning_rates",
    "parse_names",
    "run_comparison",
]

#: The first held-out prompt of the comparison; a study scores on the block before it.
FINAL_EVAL_OFFSET = 1000
#: Comparison seed ``k`` trains with ``config.seed + SEED_OFFSET + k``, never a study's seed.
SEED_OFFSET = 1000
MODES = ("weight", "reward_to_go", "hybrid")
REFERENCE = "sparse"
DEFAULT_CONDITIONS = "sparse,abc,kernel_shap,lime"
DEFAULT_LEARNING_RATES = "0.5,1,2"


@dataclass(frozen=True)
class Condition:
    """One arm: blend weights, a multiplier of the learning rate, and the mode (None: config's)."""

    weights: dict[str, float] = field(default_factory=dict)
    learning_rate_scale: float = 1.0
    mode: str | None = None

    def describe(self) -> str:
        text = ", ".join(f"{name} {weight:.3f}" for name, weight in self.weights.items())
        if self.mode is not None:
            text += f"; {self.mode}"
        if self.learning_rate_scale != 1.0:
            text += f"; learning rate x{self.learning_rate_scale:g}"
        return text


def parse_names(text: str, *, name: str, allowed: tuple[str, ...]) -> list[str]:
    """A comma-separated list of names, each one of ``allowed``, without repeats."""
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if not items or len(set(items)) != len(items) or not set(items) <= set(allowed):
        raise InvalidArgumentError(
            name, text, f"a comma-separated list of distinct names from {list(allowed)}"
        )
    return items


def parse_learning_rates(text: str) -> list[float]:
    """A comma-separated list of distinct learning-rate multipliers > 0, e.g. ``0.5,1,2``."""
    try:
        scales = [float(item) for item in str(text).split(",") if item.strip()]
    except ValueError:
        scales = []
    if not scales or not all(np.isfinite(s) and s > 0 for s in scales):
        raise InvalidArgumentError(
            "--learning-rates", text, "comma-separated multipliers > 0 of the config's rate"
        )
    if len(set(scales)) != len(scales):
        raise InvalidArgumentError("--learning-rates", text, "distinct multipliers")
    return scales


def _signals() -> tuple[str, ...]:
    from tokenshape.attribution import METHODS

    return tuple(sorted(METHODS))


def build_conditions(
    conditions: str = DEFAULT_CONDITIONS,
    modes: str = ",".join(MODES),
    learning_rates: str = DEFAULT_LEARNING_RATES,
) -> dict[str, Condition]:
    """The conditions named by the three comma-separated lists (see the module docstring)."""
    names = parse_names(conditions, name="--conditions", allowed=(REFERENCE, "abc", *_signals()))
    if REFERENCE not in names:
        raise InvalidArgumentError("--conditions", conditions, f"names including {REFERENCE!r}")
    chosen_modes = parse_names(modes, name="--modes", allowed=MODES)
    scales = parse_learning_rates(learning_rates)
    if 1.0 not in scales:
        raise InvalidArgumentError(
            "--learning-rates", learning_rates, "multipliers including 1 (the reference)"
        )
    built: dict[str, Condition] = {}
    for name in names:
        if name == REFERENCE:
            for scale in scales:
                key = REFERENCE if scale == 1.0 else f"{REFERENCE}_lr{scale:g}"
                built[key] = Condition({REFERENCE: 1.0}, learning_rate_scale=scale)
        elif name == "abc":
            built["abc"] = Condition({"attention": 0.5, REFERENCE: 0.5}, mode="weight")
        else:
            for mode in chosen_modes:
                built[f"{name}.{mode}"] = Condition({name: 1.0}, mode=mode)
    return built


def _tuned(study: Path) -> tuple[Condition, str]:
    """The study's recommended blend (by GP posterior mean) in the study's mode, and a note."""
    from tokenshape.tuning import SurrogateFitError, TrialStore, recommend

    with TrialStore(study) as store:
        trials = store.trials()
        signals = store.study.signals if store.study is not None else ()
    complete = [t for t in trials if t.status == "complete"]
    if not complete:
        raise InvalidArgumentError("--study", str(study), "a study with a complete trial")
    try:
        chosen = recommend(trials, signals).trial
        note = f"trial {chosen.id} of {study}, highest GP posterior mean"
    except SurrogateFitError as error:
        chosen = max(complete, key=lambda t: t.objective)
        note = f"trial {chosen.id} of {study}, highest observation (no GP: {error})"
    study_config = load_config(study / "config.yaml")
    weights = {name: float(w) for name, w in chosen.params.weights.items()}
    return Condition(weights, mode=study_config.training.mode), note


def _base_config(
    config_name: str | Path,
    *,
    steps: int | None,
    learning_rate: float | None,
    eval_prompts: int | None,
    checkpoints: int | None,
    eval_samples: int | None,
) -> ExperimentConfig:
    """The config every run starts from: the overrides applied, the final-evaluation prompts.

    The runs' recorded objective is the final held-out reward; the frontier is read from the
    checkpoints whatever the config tunes.
    """
    config = load_config(config_name)
    data = config_to_dict(config)
    data["sweep"]["objective"] = "heldout_reward"
    training = data["training"]
    # The built-in held-out split is large: the comparison scores on a block far after the
    # study's. A user's own held-out file is used as given (see _check_disjoint).
    if heldout_block(config)[0] in BUILTIN_PROMPTS:
        training["eval_prompt_offset"] = FINAL_EVAL_OFFSET
    for key, value in (
        ("steps", steps),
        ("learning_rate", learning_rate),
        ("checkpoints", checkpoints),
        ("eval_samples", eval_samples),
    ):
        if value is not None:
            training[key] = value
    if eval_prompts is not None:
        data["data"]["eval_prompts"] = eval_prompts
    return config_from_dict(data)


def _check_disjoint(base: ExperimentConfig, study: Path | None) -> None:
    """Refuse a study whose held-out prompts overlap the comparison's."""
    if study is None or not (study / "config.yaml").exists():
        return
    tuned = config_from_dict(yaml.safe_load((study / "config.yaml").read_text()))
    ours, theirs = heldout_block(base), heldout_block(tuned)
    if ours[0] != theirs[0]:
        return
    if (theirs[2] is None or ours[1] < theirs[2]) and (ours[2] is None or theirs[1] < ours[2]):
        raise InvalidArgumentError(
            "--study",
            str(study),
            f"a study scored on held-out prompts of {ours[0]} other than the comparison's "
            f"(prompts {ours[1]}..{'' if ours[2] is None else ours[2] - 1}; the study used "
            f"{theirs[1]}..{'' if theirs[2] is None else theirs[2] - 1}): give one of them "
            "another data.eval file or training.eval_prompt_offset",
        )


def _run_config(base: ExperimentConfig, condition: Condition) -> ExperimentConfig:
    data = config_to_dict(base)
    data["training"]["learning_rate"] *= condition.learning_rate_scale
    if condition.mode is not None:
        data["training"]["mode"] = condition.mode
    return config_from_dict(data)


def run_comparison(
    config_name: str | Path,
    seeds: int,
    study: Path | None,
    out: Path,
    console: Console,
    *,
    conditions: dict[str, Condition] | None = None,
    steps: int | None = None,
    learning_rate: float | None = None,
    eval_prompts: int | None = None,
    checkpoints: int | None = None,
    eval_samples: int | None = None,
    command: str | None = None,
) -> Path:
    """Run every condition for ``seeds`` seeds (keeping finished runs); returns the table's path.

    ``conditions`` defaults to :func:`build_conditions`'s; it must hold ``sparse``, the reference.
    ``steps``, ``learning_rate`` (every condition's rate before its multiplier),
    ``eval_prompts``, ``checkpoints`` and ``eval_samples`` replace the config's.

    Raises:
        InvalidArgumentError: a bad argument, or a study scored on the comparison's prompts.
        RunMismatchError: a finished run in ``out`` has another spec (nothing is trained).
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise InvalidArgumentError("seeds", seeds, "an int >= 1")
    base = _base_config(
        config_name,
        steps=steps,
        learning_rate=learning_rate,
        eval_prompts=eval_prompts,
        checkpoints=checkpoints,
        eval_samples=eval_samples,
    )
    check_sources(base)
    if base.training.checkpoints < 2:
        raise InvalidArgumentError(
            "training.checkpoints", base.training.checkpoints, "at least 2 to trace a frontier"
        )
    conditions = dict(build_conditions() if conditions is None else conditions)
    if REFERENCE not in conditions:
        raise InvalidArgumentError("conditions", sorted(conditions), "names including 'sparse'")
    notes = []
    if study is not None:
        _check_disjoint(base, study)
        conditions["bo_tuned"], note = _tuned(study)
        notes.append(f"bo_tuned: {note}.")
    plan = []
    for k in range(seeds):
        for name, condition in conditions.items():
            config = _run_config(base, condition)
            seed = base.seed + SEED_OFFSET + k
            params = ShapingParams(
                condition.weights, normalization=config.attribution.normalization
            )
            folder = out / "runs" / f"{name}-seed{k}"
            spec = run_spec(config, params, seed)
            plan.append((name, k, config, params, seed, folder, spec))
    # Every finished run is checked before anything trains: a mismatch stops the comparison.
    done = {(name, k): finished_result(folder, spec) for name, k, *_, folder, spec in plan}
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {name: [] for name in conditions}
    with progress_bars(console) as bars:
        runs_task = bars.add_task("runs", total=len(plan))
        for name, k, config, params, seed, folder, spec in plan:
            result = done[(name, k)]
            if result is None:
                bars.console.print(f"[bold]{name}[/] seed {k}: {conditions[name].describe()}")
                task = bars.add_task("  step", total=config.training.steps)
                try:
                    run_inner(
                        config,
                        params,
                        output_dir=folder,
                        seed=seed,
                        start_cache=out / "start_evaluation.json",
                        progress=lambda step, total, task=task: bars.update(
                            task, completed=step, total=total
                        ),
                    )
                finally:
                    bars.remove_task(task)
                result = finished_result(folder, spec)
            results[name].append(result)
            bars.advance(runs_task)
    _plot(results, out)
    return _write_table(results, conditions, out, base, command or "", notes)


def _paired(
    results: dict[str, list[dict]], read, *, name: str, reference_name: str = REFERENCE
) -> tuple[Interval, Interval | None]:
    """A condition's values and its paired differences with ``reference_name``'s, by seed."""
    own = [read(run) for run in results[name]]
    if name == reference_name:
        return bootstrap_mean(own), None
    reference = [read(run) for run in results[reference_name]]
    differences = [
        None if a is None or b is None else a - b for a, b in zip(own, reference, strict=False)
    ]
    return bootstrap_mean(own), bootstrap_mean(differences)


def _matched_table(results: dict[str, list[dict]], axis: str) -> list[str]:
    levels = matched_levels(results, axis)
    if not levels:
        return [f"No common {AXES[axis]} level: some condition never moved along it."]
    digits = 3 if axis == "kl" else 0
    header = "| condition | " + " | ".join(
        f"reward at {level:.{digits}f} | minus sparse at {level:.{digits}f}" for level in levels
    )
    rows = [header + " |", "|---|" + "---|---|" * len(levels)]
    for name in results:
        cells = []
        for level in levels:
            value, difference = _paired(
                results, lambda run, level=level: reward_at(path(run, axis), level), name=name
            )
            cells += [value.text(), "-" if difference is None else difference.text()]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def _sparse_family(
    results: dict[str, list[dict]], conditions: dict[str, Condition]
) -> dict[str, list[dict]]:
    """The plain sparse GRPO conditions (every learning rate): the reference frontier."""
    return {
        name: runs
        for name, runs in results.items()
        if conditions[name].weights == {REFERENCE: 1.0} and conditions[name].mode is None
    }


def _frontier_table(
    results: dict[str, list[dict]], conditions: dict[str, Condition], axis: str
) -> list[str]:
    """Each other condition against sparse GRPO's best learning rate at three of its own levels.

    A condition's levels go up to the lesser of its own reach and the farthest sparse learning
    rate's, so each condition is read as far as it goes rather than only as far as the slowest.
    """
    family = _sparse_family(results, conditions)
    frontier_reach = max(reach(runs, axis) for runs in family.values())
    digits = 3 if axis == "kl" else 0
    rows = [
        "| condition | at a third | at two thirds | at its last common level |",
        "|---|---|---|---|",
    ]
    for name, runs in results.items():
        if name in family:
            continue
        cells = []
        for level in levels_up_to(min(reach(runs, axis), frontier_reach)):
            best = best_at(family, axis, level)
            if best is None:
                cells.append(f"{level:.{digits}f}: no sparse rate reaches it on every seed")
                continue
            _, difference = _paired(
                results,
                lambda run, level=level: reward_at(path(run, axis), level),
                name=name,
                reference_name=best,
            )
            cells.append(f"{level:.{digits}f}: {difference.text()} vs {best}")
        cells += ["not reached"] * (3 - len(cells))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def _paired_p_value(own: list[float], reference: list[float]) -> float | None:
    """Two-sided paired t-test p-value; ``None`` below two seeds or without spread."""
    if len(own) < 2 or np.allclose(np.subtract(own, reference), np.subtract(own, reference)[0]):
        return None
    from scipy.stats import ttest_rel

    return float(ttest_rel(own, reference).pvalue)


def _final_table(results: dict[str, list[dict]]) -> list[str]:
    rows = [
        (
            "| condition | held-out reward, mean ± sem | minus sparse, same seed [95% CI] "
            "| paired t-test p | KL to start | wall s | RM rows + policy tokens |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    reference = [run["heldout_reward"] for run in results[REFERENCE]]
    for name, runs in results.items():
        finals = [run["heldout_reward"] for run in runs]
        _, difference = _paired(results, lambda run: run["heldout_reward"], name=name)
        p_value = None if name == REFERENCE else _paired_p_value(finals, reference)
        last = [run["checkpoints"][-1] for run in runs]
        rows.append(
            f"| {name} | {_mean_sem(finals)} | "
            f"{'-' if difference is None else difference.text()} | "
            f"{'-' if p_value is None else f'{p_value:.2f}'} | "
            f"{_mean_sem([run['kl_to_start'] for run in runs])} | "
            f"{statistics.fmean(c['wall_seconds'] for c in last):.0f} | "
            f"{statistics.fmean(c['reward_rows'] + c['policy_tokens'] for c in last):.0f} |"
        )
    return rows


def _mean_sem(values: list[float]) -> str:
    sem = statistics.stdev(values) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):.3f} ± {sem:.3f}"


def _write_table(
    results: dict[str, list[dict]],
    conditions: dict[str, Condition],
    out: Path,
    config: ExperimentConfig,
    command: str,
    notes: list[str],
) -> Path:
    seeds = len(results[REFERENCE])
    training = config.training
    source, first, stop = heldout_block(config)
    heldout_text = f"prompts {first}..{'' if stop is None else stop - 1} of {source}"
    start = results[REFERENCE][0]["start_reward"]
    lines = [
        f"# Comparison on `{config.name}`: the reward-KL-compute frontier",
        "",
        (
            f"{seeds} training seeds per condition; each run: {training.steps} GRPO steps of "
            f"{training.batch_size} completions ({training.num_generations} per prompt, at most "
            f"{training.max_completion_length} tokens), attribution budget "
            f"{config.attribution.budget} rows per completion, {training.checkpoints} held-out "
            f"checkpoints of {heldout_text} x {training.eval_samples} samples (sampled with "
            "top_k 0, top_p 1 at "
            f"temperature {training.temperature}; the same prompts and sampling seed for every "
            f"run). The starting policy scores {start:.3f} on them."
        ),
        "",
        "Conditions:",
        "",
        *(f"- `{name}`: {condition.describe()}" for name, condition in conditions.items()),
        *(f"- {note}" for note in notes),
        "",
        (
            "Rewards at a matched level are interpolated along each run's checkpoints (from the "
            "starting policy at 0); a run that never reaches a level has no value there. "
            "Intervals are percentile-bootstrap 95% intervals over seeds; differences are paired "
            "by seed with sparse GRPO (same training prompts and order)."
        ),
        "",
        f"## Held-out reward at matched KL ({AXES['kl']})",
        "",
        *_matched_table(results, "kl"),
        "",
        "## Against sparse GRPO's frontier: minus its best learning rate at the same level",
        "",
        (
            "Each condition is read at three levels up to where it and the farthest sparse "
            "learning rate both go; the reference at a level is the sparse learning rate with the "
            "highest mean reward there among those reaching it on every seed (picking the best of "
            "several noisy rates favours sparse GRPO). Differences paired by seed, 95% intervals."
        ),
        "",
        *(
            line
            for axis in AXES
            for line in (
                f"### Along {AXES[axis]}",
                "",
                *_frontier_table(results, conditions, axis),
                "",
            )
        ),
        f"## Held-out reward at matched compute: {AXES['wall_seconds']}",
        "",
        *_matched_table(results, "wall_seconds"),
        "",
        f"## Held-out reward at matched compute: {AXES['compute']}",
        "",
        *_matched_table(results, "compute"),
        "",
        "## At the final checkpoint (a fixed step count: favours conditions that move further)",
        "",
        *_final_table(results),
        "",
        "![held-out reward against KL and compute](frontier.png)",
        "",
        (
            f"Machine: {platform.machine()}, {cpu_model() or 'unknown CPU'} "
            f"({os.cpu_count()} cores), torch CPU with {torch.get_num_threads()} thread(s) in the "
            f"process that wrote this table. Regenerate: `{command}`"
        ),
        "",
    ]
    table = out / "results.md"
    table.write_text("\n".join(lines))
    return table


def _plot(results: dict[str, list[dict]], out: Path) -> None:
    """Held-out reward against KL, wall seconds and rows + tokens: mean and 95% band over seeds.

    Each condition's runs are read on a grid up to the level all its seeds reach; the band is the
    percentile-bootstrap 95% interval of the mean over seeds at each grid point.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_names = list(AXES)
    figure, axes = plt.subplots(1, len(axes_names), figsize=(6 * len(axes_names), 4.5))
    for ax, axis in zip(axes, axes_names):
        for name, runs in results.items():
            paths = [path(run, axis) for run in runs]
            reach = min(max(x for x, _ in p) for p in paths)
            if reach <= 0:
                continue
            grid = np.linspace(0.0, reach, 25)
            intervals = [bootstrap_mean([reward_at(p, x) for p in paths]) for x in grid]
            style = {"linestyle": "--"} if name.startswith(REFERENCE) else {}
            (line,) = ax.plot(grid, [i.mean for i in intervals], label=name, **style)
            ax.fill_between(
                grid,
                [i.low for i in intervals],
                [i.high for i in intervals],
                color=line.get_color(),
                alpha=0.15,
            )
        ax.set_xlabel(AXES[axis])
        ax.set_ylabel("held-out reward (mean over seeds, 95% band)")
    axes[0].legend(fontsize="small")
    figure.savefig(out / "frontier.png", dpi=110, bbox_inches="tight")
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="imdb_positive")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--study",
        type=Path,
        default=None,
        help="a finished study; adds its recommended blend (GP posterior mean) as bo_tuned",
    )
    parser.add_argument(
        "--conditions",
        default=DEFAULT_CONDITIONS,
        help="comma-separated: sparse, abc and attribution signals (kernel_shap, lime, ...)",
    )
    parser.add_argument(
        "--modes", default=",".join(MODES), help="modes each signal runs in, comma-separated"
    )
    parser.add_argument(
        "--learning-rates",
        default=DEFAULT_LEARNING_RATES,
        help="multipliers of the config's learning rate for sparse GRPO, comma-separated",
    )
    parser.add_argument("--steps", type=int, default=None, help="replaces training.steps")
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help="replaces training.learning_rate (the rate --learning-rates multiplies)",
    )
    parser.add_argument("--eval-prompts", type=int, default=None, help="replaces data.eval_prompts")
    parser.add_argument(
        "--checkpoints", type=int, default=None, help="replaces training.checkpoints"
    )
    parser.add_argument(
        "--eval-samples", type=int, default=None, help="replaces training.eval_samples"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    console = Console()
    out = args.out or Path("experiments/results") / Path(args.config).stem
    threads = os.environ.get("OMP_NUM_THREADS")
    command = ("" if threads is None else f"OMP_NUM_THREADS={threads} ") + (
        "python -m tokenshape.experiments.compare "
        + " ".join(sys.argv[1:] if argv is None else argv)
    )
    try:
        conditions = build_conditions(args.conditions, args.modes, args.learning_rates)
        with remembered_interrupts():
            table = run_comparison(
                args.config,
                args.seeds,
                args.study,
                out,
                console,
                conditions=conditions,
                steps=args.steps,
                learning_rate=args.learning_rate,
                eval_prompts=args.eval_prompts,
                checkpoints=args.checkpoints,
                eval_samples=args.eval_samples,
                command=command,
            )
    except TokenShapeError as error:
        console.print(f"[bold red]error:[/] {error}")
        return 2
    except KeyboardInterrupt:
        console.print(
            f"stopped: finished runs are kept in {out / 'runs'}; run the same command to continue"
        )
        return 130
    console.print(table.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
