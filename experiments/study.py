"""``tokenshape train`` and ``tokenshape sweep``: inner runs and studies on disk, with progress.

A study's first trial is plain sparse GRPO (all weight on ``sparse``) when ``sparse`` is among the
signals, so the report always shows the shaped runs against it. Each trial trains
``sweep.replicates`` seeds (``seed``, ``seed + 1``, ...: the same for every trial); its objective
is their mean, and their spread is the noise the GP is given. A study lives in one folder:
``config.yaml`` (the config it was started with), ``study.sqlite`` (the trials), ``study.log``
(what happened), ``start_evaluation.json`` (the starting policy's held-out evaluation, made once),
``trials/<id>/seed<k>/`` (each replicate's files) and, once written, ``report.html``. Running the
same sweep again continues the study, keeping every finished replicate of an interrupted trial; a
different config in an existing study folder is refused, so one study never mixes two
experiments.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import yaml
from rich.console import Console

from tokenshape.errors import InvalidArgumentError
from tokenshape.experiments.config import ExperimentConfig, config_from_dict, config_to_dict
from tokenshape.experiments.inner_run import run_inner
from tokenshape.experiments.progress import progress_bars
from tokenshape.experiments.runs import RunMismatchError, finished_result, run_spec
from tokenshape.shaping.params import ShapingParams
from tokenshape.tuning.optimizer import ObjectiveResult

__all__ = ["CONFIG_FILE", "LOG_FILE", "START_FILE", "run_replicates", "run_sweep", "run_train"]

CONFIG_FILE = "config.yaml"
LOG_FILE = "study.log"
START_FILE = "start_evaluation.json"
#: What a trial keeps of each replicate's result in its ``info``.
_REPLICATE_KEYS = (
    "seed",
    "objective",
    "heldout_reward",
    "heldout_reward_sem",
    "start_reward",
    "kl_to_start",
    "kl_sem",
    "kl_budget_reached",
    "train_seconds",
    "reward_rows",
    "policy_tokens",
    "checkpoints",
)


def _file_logger(folder: Path) -> logging.Logger:
    logger = logging.getLogger(f"tokenshape.study.{folder.resolve()}")
    if not logger.handlers:
        handler = logging.FileHandler(folder / LOG_FILE)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return logger


def _pin_config(folder: Path, config: ExperimentConfig) -> None:
    """Write the study's config, or check that a resumed study was started with the same one."""
    path = folder / CONFIG_FILE
    wanted = config_to_dict(config)
    if path.exists():
        stored = config_from_dict(yaml.safe_load(path.read_text()) or {})
        if config_to_dict(stored) != wanted:
            raise InvalidArgumentError(
                "config",
                config.name,
                f"the config the study in {folder} was started with ({path}); "
                "use another --study-dir for a different experiment",
            )
        return
    path.write_text(yaml.safe_dump(wanted, sort_keys=False))


def _add_sparse_baseline(store, config: ExperimentConfig) -> None:
    """Make plain sparse GRPO the study's first trial, so every report compares against it."""
    signals = config.sweep.signals
    normalization = config.attribution.normalization
    store.define_study(signals=signals, seed=config.seed, normalization=normalization)
    if "sparse" in signals and not store.trials():
        weights = {name: 1.0 if name == "sparse" else 0.0 for name in signals}
        store.add_trials([ShapingParams(weights, normalization=normalization)], seeds=[config.seed])


def run_train(config: ExperimentConfig, folder: Path, console: Console) -> float:
    """One inner run with ``training.weights``; returns the held-out mean reward."""
    params = ShapingParams(config.training.weights, normalization=config.attribution.normalization)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    console.print(
        f"training with weights {params.weights} for {config.training.steps} steps -> {folder}"
    )
    with progress_bars(console) as bars:
        task = bars.add_task("step", total=config.training.steps)
        result = run_inner(
            config,
            params,
            output_dir=folder,
            progress=lambda step, total: bars.update(task, completed=step, total=total),
        )
    info = result.info
    console.print(
        f"held-out mean reward {info['heldout_reward']:.4f} ± {info['heldout_reward_sem']:.4f} "
        f"(starting policy {info['start_reward']:.4f}), KL to the start "
        f"{info['kl_to_start']:.4f} ± {info['kl_sem']:.4f}, {info['seconds']:.0f} s; details in "
        f"{folder / 'result.json'}"
    )
    return info["heldout_reward"]


def run_replicates(
    config: ExperimentConfig,
    params: ShapingParams,
    folder: Path,
    *,
    start_cache: Path,
    progress=None,
    log: logging.Logger | None = None,
) -> ObjectiveResult:
    """Train ``sweep.replicates`` seeds of one trial in ``folder/seed<k>``; their mean and values.

    A replicate whose folder holds a finished run of the same spec is kept, not run again; one
    of another spec (left by an older version) is run again.

    Args:
        progress: called as ``progress(replicate, step, total_steps)``.
    """
    values, curves, replicates = [], [], []
    for k in range(config.sweep.replicates):
        seed = config.seed + k
        run_folder = folder / f"seed{k}"
        try:
            result = finished_result(run_folder, run_spec(config, params, seed))
        except RunMismatchError as mismatch:
            if log is not None:
                log.info("replicate run again: %s", mismatch)
            result = None
        if result is None:
            run_inner(
                config,
                params,
                output_dir=run_folder,
                seed=seed,
                start_cache=start_cache,
                progress=None if progress is None else lambda s, t, k=k: progress(k, s, t),
            )
            result = finished_result(run_folder, run_spec(config, params, seed))
        values.append(result["objective"])
        curves.append(result["learning_curve"])
        replicates.append({key: result.get(key) for key in _REPLICATE_KEYS})
    length = min(len(curve) for curve in curves)
    return ObjectiveResult(
        value=statistics.fmean(values),
        replicate_values=values,
        learning_curve=[statistics.fmean(c[i] for c in curves) for i in range(length)],
        info={
            "replicates": replicates,
            "start_reward": replicates[0]["start_reward"],
            "kl_to_start": statistics.fmean(r["kl_to_start"] for r in replicates),
            "heldout_reward": statistics.fmean(r["heldout_reward"] for r in replicates),
        },
    )


def run_sweep(config: ExperimentConfig, folder: Path, console: Console) -> Path:
    """Run (or continue) the study of ``config`` in ``folder``; returns the folder."""
    from tokenshape.tuning import TrialStore, tune_shaping

    folder.mkdir(parents=True, exist_ok=True)
    sweep = config.sweep
    log = _file_logger(folder)
    with TrialStore(folder) as store:
        _pin_config(folder, config)
        _add_sparse_baseline(store, config)
        finished = sum(t.is_finished for t in store.trials())
        if store.interrupted:
            console.print(
                f"[yellow]resuming[/]: trial(s) {list(store.interrupted)} were interrupted and run again"
            )
        console.print(
            f"study {folder}: {finished} of {sweep.n_trials} trials finished; signals {sweep.signals}, "
            f"{config.training.steps} GRPO steps per trial"
        )
        log.info("study opened with %d of %d trials finished", finished, sweep.n_trials)
        steps, replicates = config.training.steps, sweep.replicates
        with progress_bars(console) as bars:
            trials_task = bars.add_task("trials", total=sweep.n_trials, completed=finished)
            steps_task = bars.add_task("steps of this trial", total=steps * replicates)

            def objective(params: ShapingParams):
                (trial_id,) = [t.id for t in store.trials(status="running")]
                weights = ", ".join(f"{k}={v:.2f}" for k, v in params.weights.items())
                bars.update(
                    steps_task,
                    completed=0,
                    description=f"trial {trial_id + 1}/{sweep.n_trials} ({weights})",
                )
                log.info("trial started: %s", weights)
                started = time.perf_counter()
                result = run_replicates(
                    config,
                    params,
                    folder / "trials" / f"{trial_id:03d}",
                    start_cache=folder / START_FILE,
                    log=log,
                    progress=lambda k, step, total: bars.update(
                        steps_task, completed=k * steps + step
                    ),
                )
                log.info(
                    "trial finished in %.0f s: objective %.4f (replicates %s)",
                    time.perf_counter() - started,
                    result.value,
                    [round(v, 4) for v in result.replicate_values],
                )
                return result

            def finished_trial(trial) -> None:
                bars.advance(trials_task)
                if trial.status == "complete":
                    message = f"objective {trial.objective:.4f}"
                    if trial.objective_sem is not None:
                        message += f" ± {trial.objective_sem:.4f} (sem of {replicates} seeds)"
                else:
                    message = f"failed: {(trial.error or '').strip().splitlines()[-1:]}"
                bars.console.print(f"trial {trial.id}: {message}")
                log.info("trial %d %s: %s", trial.id, trial.status, message)

            result = tune_shaping(
                objective,
                sweep.signals,
                n_initial=sweep.n_initial,
                n_trials=sweep.n_trials,
                batch_size=sweep.batch_size,
                seed=config.seed,
                normalization=config.attribution.normalization,
                store=store,
                progress=finished_trial,
            )
    recommendation = result.recommendation
    if recommendation is not None:
        weights = {k: round(v, 3) for k, v in recommendation.trial.params.weights.items()}
        console.print(
            f"recommended (highest GP posterior mean): trial {recommendation.trial.id}, "
            f"{recommendation.mean:.4f} ± {recommendation.sd:.4f} with {weights}; "
            "the report says how far the study can tell its blends apart"
        )
    elif result.best_params is not None:
        console.print(
            f"best observed: objective {result.best_value:.4f} with {result.best_params.weights} "
            "(too few trials for a GP; one observation is one noisy draw)"
        )
    return folder
