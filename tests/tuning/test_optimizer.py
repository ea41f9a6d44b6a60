"""Tests of tokenshape.tuning.optimizer: BO on the simplex, failures, interruption and resuming."""

from __future__ import annotations

import json
import math
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from tokenshape.errors import InvalidArgumentError
from tokenshape.shaping.params import ShapingParams
from tokenshape.tuning import (
    ObjectiveResult,
    SimplexSpace,
    Trial,
    TrialStore,
    propose_candidates,
)
from tokenshape.tuning import tune_shaping as _tune_shaping
from tokenshape.tuning.optimizer import FAILED_DISTANCE, MIN_DISTANCE

SIGNALS = ["sparse", "attention", "kernel_shap", "lime"]
TARGET = torch.tensor([0.1, 0.55, 0.3, 0.05], dtype=torch.double)
#: Small acquisition optimisation, so a BO step costs well under a second on a busy CPU.
CHEAP = {"num_restarts": 2, "raw_samples": 32}


def tune_shaping(*args, **kwargs):
    return _tune_shaping(*args, **{**CHEAP, **kwargs})


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """GP fits on a handful of points are slowed down, not sped up, by intra-op threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def weights(params: ShapingParams) -> torch.Tensor:
    return torch.tensor([params.weights[s] for s in SIGNALS], dtype=torch.double)


def regret(w: torch.Tensor) -> torch.Tensor:
    """Distance to the optimum in objective value: the maximum of -|w - w*|^2 is 0."""
    return ((w - TARGET) ** 2).sum(-1)


class CountingObjective:
    """``-|w - w*|^2`` that records the params and the torch seed of every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[ShapingParams, int]] = []

    def __call__(self, params: ShapingParams) -> float:
        self.calls.append((params, torch.initial_seed()))
        return -float(regret(weights(params)))


def assert_on_simplex(x: torch.Tensor) -> None:
    assert bool((x >= 0).all()), x
    assert torch.allclose(x.sum(-1), torch.ones(x.shape[:-1], dtype=x.dtype), atol=1e-6), x


def test_bo_finds_a_known_optimum_faster_than_random_search(tmp_path: Path) -> None:
    """Median regret after 15 trials over 5 seeds, against 15 uniform random points and against
    the 15 first Sobol points (what BO would do without its model)."""
    n_trials, seeds = 15, range(5)
    bo, random_search, sobol = [], [], []
    for seed in seeds:
        result = tune_shaping(
            CountingObjective(),
            SIGNALS,
            n_initial=5,
            n_trials=n_trials,
            seed=seed,
            store=tmp_path / f"seed{seed}",
        )
        assert len(result.trials) == n_trials
        assert all(t.status == "complete" for t in result.trials)
        assert_on_simplex(torch.stack([weights(t.params) for t in result.trials]))
        bo.append(-result.best_value)
        exponential = -torch.log(
            torch.rand(
                n_trials, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.double
            )
        )
        uniform = exponential / exponential.sum(-1, keepdim=True)
        random_search.append(float(regret(uniform).min()))
        sobol.append(float(regret(SimplexSpace(SIGNALS).sobol(n_trials, seed=seed)).min()))
    medians = {
        "bo": statistics.median(bo),
        "random": statistics.median(random_search),
        "sobol": statistics.median(sobol),
    }
    print(f"median regret after {n_trials} trials over {len(seeds)} seeds: {medians}")
    assert medians["bo"] < medians["random"] / 5, medians
    assert medians["bo"] < medians["sobol"] / 2, medians


def test_batches_are_proposed_on_the_simplex_and_reproducible(tmp_path: Path) -> None:
    runs = []
    for name in ("first", "second"):
        objective = CountingObjective()
        result = tune_shaping(
            objective,
            SIGNALS,
            n_initial=3,
            n_trials=7,
            batch_size=3,
            seed=2,
            store=tmp_path / name,
        )
        runs.append(torch.stack([weights(t.params) for t in result.trials]))
        assert len(objective.calls) == 7
    first, second = runs
    assert torch.equal(first, second)
    assert_on_simplex(first)
    bo_batch = first[3:6]  # the first batch proposed jointly by qLogNEI
    assert torch.cdist(bo_batch, bo_batch).add(torch.eye(3)).min() > 1e-3
    other_seed = tune_shaping(
        CountingObjective(), SIGNALS, n_initial=3, n_trials=4, seed=3, store=tmp_path / "other"
    )
    assert not torch.equal(torch.stack([weights(t.params) for t in other_seed.trials]), first[:4])


def test_propose_candidates_returns_q_points_on_the_simplex() -> None:
    space = SimplexSpace(SIGNALS)
    train_x = space.sobol(6, seed=0)
    candidates = propose_candidates(
        space, train_x, -regret(train_x).unsqueeze(-1), q=3, seed=0, **CHEAP
    )
    assert candidates.shape == (3, 4)
    assert_on_simplex(candidates)


def test_failed_trials_are_recorded_and_the_study_goes_on(tmp_path: Path) -> None:
    def objective(params: ShapingParams) -> float:
        call = len(calls)
        calls.append(params)
        if call == 1:
            return math.nan
        if call == 2:
            raise RuntimeError("inner run diverged")
        if call == 3:
            return "not a number"
        if call == 4:
            return ObjectiveResult(math.inf)
        return -float(regret(weights(params)))

    calls: list[ShapingParams] = []
    seen: list[Trial] = []
    result = tune_shaping(
        objective, SIGNALS, n_initial=6, n_trials=8, store=tmp_path, progress=seen.append
    )
    statuses = [t.status for t in result.trials]
    assert statuses == ["complete"] + ["failed"] * 4 + ["complete"] * 3
    assert [t.id for t in seen] == list(range(8))
    assert [t.status for t in seen] == statuses
    errors = [t.error for t in result.trials]
    assert "nan" in errors[1]
    assert "RuntimeError: inner run diverged" in errors[2] and "Traceback" in errors[2]
    assert "'not a number'" in errors[3]
    assert "inf" in errors[4]
    assert len(calls) == 8
    complete = [t for t in result.trials if t.status == "complete"]
    assert result.best_trial in complete
    assert result.best_value == result.best_trial.objective


def test_a_study_where_every_trial_fails_has_no_best(tmp_path: Path) -> None:
    def objective(params: ShapingParams) -> float:
        raise ValueError("no GPU")

    result = tune_shaping(objective, SIGNALS, n_initial=2, n_trials=4, store=tmp_path)
    assert [t.status for t in result.trials] == ["failed"] * 4
    assert result.best_params is None and result.best_value is None


def test_objective_result_curve_and_info_are_stored(tmp_path: Path) -> None:
    def objective(params: ShapingParams) -> ObjectiveResult:
        value = -float(regret(weights(params)))
        return ObjectiveResult(value, learning_curve=[value - 1, value], info={"kl": 0.1})

    result = tune_shaping(objective, SIGNALS, n_initial=2, n_trials=2, store=tmp_path)
    trial = result.trials[0]
    assert trial.learning_curve == (trial.objective - 1, trial.objective)
    assert trial.info == {"kl": 0.1}
    with TrialStore(tmp_path) as store:
        assert store.to_dataframe().loc[0, "info"] == {"kl": 0.1}


def test_trials_run_under_their_seed_and_global_generators_are_restored(tmp_path: Path) -> None:
    objective = CountingObjective()
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    tune_shaping(
        objective, SIGNALS, n_initial=2, n_trials=4, seed=10, seed_per_trial=True, store=tmp_path
    )
    after = (torch.rand(1), random.random(), np.random.rand())
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    assert after == (torch.rand(1), random.random(), np.random.rand())
    assert [seed for _, seed in objective.calls] == [10, 11, 12, 13]
    shared = CountingObjective()
    tune_shaping(shared, SIGNALS, n_initial=2, n_trials=2, seed=10, store=tmp_path / "shared")
    assert [seed for _, seed in shared.calls] == [10, 10]


def test_keyboard_interrupt_puts_the_trial_back_and_resuming_reruns_it(tmp_path: Path) -> None:
    calls: list[tuple[ShapingParams, int]] = []

    def objective(params: ShapingParams) -> float:
        calls.append((params, torch.initial_seed()))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return -float(regret(weights(params)))

    options = {"n_initial": 5, "n_trials": 5, "seed": 1, "seed_per_trial": True, "store": tmp_path}
    with pytest.raises(KeyboardInterrupt):
        tune_shaping(objective, SIGNALS, **options)
    with TrialStore(tmp_path) as store:
        assert [t.status for t in store.trials()] == ["complete", "complete", "interrupted"]
    result = tune_shaping(objective, SIGNALS, **options)
    assert [t.status for t in result.trials] == ["complete"] * 5
    assert len(calls) == 6
    assert calls[3] == calls[2]  # the interrupted trial again: same params, same seed
    assert [p for p, _ in calls[:3]] + [p for p, _ in calls[4:]] == [
        t.params for t in result.trials
    ]
    assert [t.attempts for t in result.trials] == [1, 1, 2, 1, 1]


def test_resuming_continues_up_to_n_trials(tmp_path: Path) -> None:
    objective = CountingObjective()
    first = tune_shaping(objective, SIGNALS, n_initial=4, n_trials=3, store=tmp_path)
    again = tune_shaping(objective, SIGNALS, n_initial=4, n_trials=3, store=tmp_path)
    assert again.trials == first.trials and len(objective.calls) == 3
    more = tune_shaping(objective, SIGNALS, n_initial=4, n_trials=5, store=tmp_path)
    assert more.trials[:3] == first.trials and len(more.trials) == 5
    assert len(objective.calls) == 5
    with pytest.raises(InvalidArgumentError) as raised:
        tune_shaping(objective, SIGNALS[:3], n_initial=4, n_trials=6, store=tmp_path)
    assert raised.value.name == "signals"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("n_initial", 0),
        ("n_trials", 0),
        ("batch_size", 0),
        ("seed", -1),
        ("num_restarts", 0),
        ("raw_samples", 1),
        ("n_trials", 2.0),
        ("progress", "print"),
        ("store", 3),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, name: str, value: object) -> None:
    options = {"n_initial": 2, "n_trials": 3, "store": tmp_path, **CHEAP, name: value}
    with pytest.raises(InvalidArgumentError) as raised:
        _tune_shaping(CountingObjective(), SIGNALS, **options)
    assert raised.value.name == name


def test_sigkill_mid_trial_then_rerun_completes_without_repeating_trials(tmp_path: Path) -> None:
    """Kill a study process (tests/tuning/study_process.py) inside trial ``hang_at``, the first
    one the GP proposes; run it again; check the call log: every trial ran once except the killed
    one, which ran again with its params and seed."""
    folder, log = tmp_path / "study", tmp_path / "calls.jsonl"
    hang_at, n_initial, n_trials, seed = 4, 4, 7, 5
    script = Path(__file__).with_name("study_process.py")

    def command(hang: int) -> list[str]:
        numbers = (hang, n_initial, n_trials, seed)
        return [sys.executable, str(script), str(folder), str(log), *map(str, numbers)]

    killed = subprocess.Popen(command(hang_at), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not Path(f"{log}.hanging").exists():
            assert killed.poll() is None, killed.communicate()
            assert time.monotonic() < deadline, "the study never reached the trial to kill"
            time.sleep(0.05)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.communicate()
    assert killed.returncode == -signal.SIGKILL

    rerun = subprocess.run(command(-1), capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout.splitlines()[0]) == {"interrupted": [hang_at]}

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    with TrialStore(folder) as store:
        trials = store.trials()
    assert [t.status for t in trials] == ["complete"] * n_trials
    assert len(calls) == n_trials + 1
    assert calls[hang_at] == calls[hang_at + 1]
    assert calls[hang_at]["seed"] == seed + hang_at
    once = calls[: hang_at + 1] + calls[hang_at + 2 :]
    assert [c["weights"] for c in once] == [t.params.weights for t in trials]
    assert [c["seed"] for c in once] == [t.seed for t in trials]
    assert [t.attempts for t in trials] == [2 if t.id == hang_at else 1 for t in trials]


def test_a_vertex_optimum_is_not_proposed_twice(tmp_path: Path) -> None:
    """The objective peaks at the sparse vertex; the GP keeps wanting it, but gets it once."""

    def objective(params: ShapingParams) -> float:
        return params.weights["sparse"]

    result = tune_shaping(objective, SIGNALS, n_initial=3, n_trials=9, store=tmp_path)
    points = torch.stack([weights(t.params) for t in result.trials])
    distances = torch.cdist(points, points) + 10 * torch.eye(len(points))
    assert float(distances.min()) >= MIN_DISTANCE, distances.min()


def test_no_proposal_comes_near_a_failed_trial(tmp_path: Path) -> None:
    """Where the objective fails deterministically, it is tried once, not again and again."""
    bad = torch.tensor([0.1, 0.55, 0.3, 0.05], dtype=torch.double)

    def objective(params: ShapingParams) -> float:
        w = weights(params)
        if float((w - bad).norm()) < 0.3:
            raise RuntimeError("diverged")
        return -float(regret(w))

    result = tune_shaping(objective, SIGNALS, n_initial=4, n_trials=12, store=tmp_path)
    failed = [weights(t.params) for t in result.trials if t.status == "failed"]
    assert failed, "the test needs a failure"
    for trial in result.trials:
        later_than_all_failures = all(
            f.id < trial.id for f in result.trials if f.status == "failed"
        )
        if trial.id >= 4 and later_than_all_failures:
            gaps = [float((weights(trial.params) - f).norm()) for f in failed]
            assert min(gaps) >= FAILED_DISTANCE


def test_propose_candidates_keeps_away_from_the_given_points() -> None:
    space = SimplexSpace(SIGNALS)
    train_x = space.sobol(6, seed=0)
    train_y = -regret(train_x).unsqueeze(-1)
    free = propose_candidates(space, train_x, train_y, q=1, seed=0, **CHEAP)
    kept = propose_candidates(
        space,
        train_x,
        train_y,
        q=2,
        seed=0,
        avoid=free,
        avoid_radius=torch.tensor([0.2], dtype=torch.double),
        **CHEAP,
    )
    assert_on_simplex(kept)
    assert float(torch.cdist(kept, free).min()) >= 0.2
    assert float(torch.dist(kept[0], kept[1])) >= MIN_DISTANCE


def test_a_gp_that_cannot_be_fitted_falls_back_to_sobol_and_the_study_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botorch.exceptions.errors import ModelFittingError

    from tokenshape.tuning import surrogate

    def broken(*args, **kwargs):
        raise ModelFittingError("all attempts to fit the model have failed")

    monkeypatch.setattr(surrogate, "fit_gpytorch_mll", broken)
    result = tune_shaping(CountingObjective(), SIGNALS, n_initial=2, n_trials=4, store=tmp_path)
    assert [t.status for t in result.trials] == ["complete"] * 4
    sobol = SimplexSpace(SIGNALS).sobol(4, seed=0)
    assert torch.allclose(torch.stack([weights(t.params) for t in result.trials]), sobol)
    # Without a GP the recommendation is the best observation.
    assert result.best_value == max(t.objective for t in result.trials)


def test_replicates_are_stored_and_their_noise_reaches_the_gp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenshape.tuning import surrogate

    seen_yvar: list[torch.Tensor | None] = []
    fit = surrogate.fit_surrogate

    def spy(train_x, train_y, *, train_yvar=None, seed):
        seen_yvar.append(train_yvar)
        return fit(train_x, train_y, train_yvar=train_yvar, seed=seed)

    monkeypatch.setattr("tokenshape.tuning.optimizer.fit_surrogate", spy)

    def objective(params: ShapingParams) -> ObjectiveResult:
        value = -float(regret(weights(params)))
        values = [value - 0.1, value, value + 0.1]
        return ObjectiveResult(statistics.fmean(values), replicate_values=values)

    result = tune_shaping(objective, SIGNALS, n_initial=2, n_trials=3, store=tmp_path)
    assert all(t.replicate_values is not None for t in result.trials)
    assert result.trials[0].objective_sem == pytest.approx(0.1 / math.sqrt(3))
    # Every trial's sample variance is 0.01, so the pooled one is too: 0.01 / 3 per mean.
    assert seen_yvar and torch.allclose(seen_yvar[0], torch.full((2, 1), 0.01 / 3).double())
