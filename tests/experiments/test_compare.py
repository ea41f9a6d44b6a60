"""The comparison on the frontier: conditions parsed, matched-level reading, paired bootstrap
tables, a frontier figure, resumption by spec, and a tuned blend chosen by posterior mean."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from tokenshape.errors import InvalidArgumentError
from tokenshape.experiments import compare, frontier
from tokenshape.experiments.compare import Condition, build_conditions, run_comparison
from tokenshape.experiments.config import config_to_dict, load_config
from tokenshape.experiments.frontier import (
    best_at,
    bootstrap_mean,
    kl_path,
    matched_levels,
    path,
    reward_at,
)
from tokenshape.experiments.runs import RunMismatchError, run_spec, write_json
from tokenshape.shaping.params import ShapingParams
from tokenshape.tuning.store import TrialStore


def test_default_conditions_cover_the_sparse_frontier_and_every_mode():
    built = build_conditions()
    assert list(built)[:3] == ["sparse_lr0.5", "sparse", "sparse_lr2"]
    assert built["sparse_lr2"].learning_rate_scale == 2.0
    assert built["abc"].weights == {"attention": 0.5, "sparse": 0.5}
    for signal in ("kernel_shap", "lime"):
        for mode in ("weight", "reward_to_go", "hybrid"):
            assert built[f"{signal}.{mode}"] == Condition({signal: 1.0}, mode=mode)


@pytest.mark.parametrize(
    "arguments, field",
    [
        (("sparse,shapley",), "--conditions"),
        (("kernel_shap",), "--conditions"),
        (("sparse,sparse",), "--conditions"),
        (("sparse", "weight,dense"), "--modes"),
        (("sparse", "weight", "1,fast"), "--learning-rates"),
        (("sparse", "weight", "1,-2"), "--learning-rates"),
        (("sparse", "weight", "0.5,2"), "--learning-rates"),
        (("sparse", "weight", ""), "--learning-rates"),
    ],
)
def test_conditions_that_do_not_parse_name_the_field(arguments, field):
    with pytest.raises(InvalidArgumentError) as raised:
        build_conditions(*arguments)
    assert raised.value.name == field


def _run(start, points):
    """A run record from (kl, wall, rows, tokens, reward) checkpoints."""
    return {
        "start_reward": start,
        "checkpoints": [
            {
                "kl": kl,
                "wall_seconds": wall,
                "reward_rows": rows,
                "policy_tokens": tokens,
                "reward_mean": reward,
            }
            for kl, wall, rows, tokens, reward in points
        ],
    }


def test_reward_is_read_at_a_level_by_interpolation_and_never_extrapolated():
    run = _run(1.0, [(0.2, 10.0, 8, 100, 2.0), (0.4, 20.0, 16, 200, 4.0)])
    assert reward_at(path(run, "kl"), 0.1) == pytest.approx(1.5)
    assert reward_at(path(run, "kl"), 0.3) == pytest.approx(3.0)
    assert reward_at(path(run, "kl"), 0.5) is None
    assert reward_at(path(run, "wall_seconds"), 15.0) == pytest.approx(3.0)
    assert reward_at(path(run, "compute"), 54.0) == pytest.approx(1.5)
    with pytest.raises(InvalidArgumentError, match="axis"):
        path(run, "steps")


def test_the_kl_path_is_the_non_decreasing_fit_of_the_estimates():
    assert doctest.testmod(frontier, raise_on_error=True).attempted >= 1
    # Already non-decreasing: unchanged.
    assert kl_path(0.5, [0.1, 0.3], [1.0, 2.0]) == [(0.0, 0.5), (0.1, 1.0), (0.3, 2.0)]
    # A dip pools with its neighbour (mean KL and mean reward); the path never goes back.
    points = kl_path(0.0, [0.4, 0.2, 0.9], [1.0, 3.0, 5.0])
    assert points == [(0.0, 0.0), (pytest.approx(0.3), 2.0), (0.9, 5.0)]
    # All estimates at or below 0: the start alone.
    assert kl_path(0.7, [-0.1, 0.0], [1.0, 2.0]) == [(0.0, 0.7)]
    run = _run(0.0, [(0.4, 1, 1, 1, 1.0), (0.2, 2, 2, 2, 3.0), (0.9, 3, 3, 3, 5.0)])
    assert path(run, "kl") == points
    assert [x for x, _ in path(run, "wall_seconds")] == [0.0, 1.0, 2.0, 3.0]


def test_matched_levels_are_reached_by_every_condition_on_most_seeds():
    fast = [_run(0.0, [(1.0, 1, 1, 1, 1.0)]), _run(0.0, [(3.0, 1, 1, 1, 1.0)])]
    slow = [_run(0.0, [(0.6, 1, 1, 1, 1.0)]), _run(0.0, [(0.6, 1, 1, 1, 1.0)])]
    assert matched_levels({"a": fast, "b": slow}, "kl") == pytest.approx([0.2, 0.4, 0.6])


def test_the_best_reference_at_a_level_is_the_highest_mean_among_those_reaching_it():
    # Rewards against KL: "slow" lies above "fast" where both go, but stops at KL 0.5.
    slow = [_run(0.0, [(0.5, 1, 1, 1, 2.0)]), _run(0.0, [(0.5, 1, 1, 1, 1.0)])]
    fast = [_run(0.0, [(2.0, 1, 1, 1, 2.0)]), _run(0.0, [(2.0, 1, 1, 1, 2.0)])]
    family = {"slow": slow, "fast": fast}
    assert best_at(family, "kl", 0.25) == "slow"  # 1.5 x 0.5 against 0.25
    assert best_at(family, "kl", 1.0) == "fast"
    assert best_at(family, "kl", 3.0) is None
    # A member counts only where every one of its seeds reaches the level.
    uneven = {"uneven": [_run(0.0, [(4.0, 1, 1, 1, 9.0)]), _run(0.0, [(0.1, 1, 1, 1, 9.0)])]}
    assert best_at({**family, **uneven}, "kl", 1.0) == "fast"


def test_each_condition_is_read_against_sparse_frontier_as_far_as_it_goes():
    """Sparse GRPO at two rates; a dense condition 0.1 above the better rate at every KL."""

    def line(slope, top, seeds=(0.0, 0.02)):
        return [
            _run(0.0, [(top / 2, 1, 1, 1, slope * top / 2 + s), (top, 1, 1, 1, slope * top + s)])
            for s in seeds
        ]

    results = {
        "sparse": line(1.0, 0.3),
        "sparse_lr2": line(2.0, 0.9),
        "dense": [
            _run(0.0, [(0.6, 1, 1, 1, 1.3 + s), (1.2, 1, 1, 1, 2.5 + s)]) for s in (0.0, 0.02)
        ],
    }
    conditions = {
        "sparse": Condition({"sparse": 1.0}),
        "sparse_lr2": Condition({"sparse": 1.0}, learning_rate_scale=2.0),
        "dense": Condition({"kernel_shap": 1.0}, mode="weight"),
    }
    rows = compare._frontier_table(results, conditions, "kl")
    (dense,) = [row for row in rows if row.startswith("| dense |")]
    cells = dense.split(" | ")[1:]
    # Levels up to min(1.2, 0.9): 0.3, 0.6, 0.9, each against sparse_lr2 (above sparse there).
    assert [cell.split(":")[0] for cell in cells] == ["0.300", "0.600", "0.900"]
    assert all("vs sparse_lr2" in cell for cell in cells)
    # At 0.3, interpolated from the start, seed offset s: dense 0.65 + s/2, sparse_lr2
    # 0.6 + 2s/3, so 0.05 - s/6 (mean over s = 0, 0.02: 0.0483); at 0.6 and 0.9: +0.1.
    assert [cell.split(": ")[1].split(" [")[0] for cell in cells] == ["+0.048", "+0.100", "+0.100"]
    assert not any(row.startswith("| sparse") for row in rows[2:])


def test_bootstrap_interval_brackets_the_mean_and_counts_missing_values():
    interval = bootstrap_mean([1.0, 2.0, None, 3.0, 6.0])
    assert interval.mean == pytest.approx(3.0)
    assert interval.low < 3.0 < interval.high
    assert interval.low >= 1.0 and interval.high <= 6.0
    assert (interval.n, interval.total) == (4, 5)
    assert "4/5 seeds" in interval.text()
    assert bootstrap_mean([None, None]).text() == "not reached (0/2)"
    single = bootstrap_mean([2.5])
    assert (single.low, single.mean, single.high) == (2.5, 2.5, 2.5)


class FakeInnerRun:
    """Writes a run as the real inner run does; a condition's reward is 5 x its KL, which grows
    with the learning rate and with dense credit. Raises KeyboardInterrupt at call
    ``interrupt_at``."""

    def __init__(self, interrupt_at=None):
        self.calls = []
        self.interrupt_at = interrupt_at

    def __call__(self, config, params, *, output_dir, seed, start_cache, progress=None):
        output_dir = Path(output_dir)
        self.calls.append(output_dir.name)
        if len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        output_dir.mkdir(parents=True, exist_ok=True)
        speed = config.training.learning_rate / 1e-3 * (1.0 if "sparse" in params.weights else 2)
        steps = config.training.steps
        checkpoints = [
            {
                "step": s,
                "kl": 0.1 * speed * s,
                "wall_seconds": 2.0 * s,
                "reward_rows": 4 * s,
                "policy_tokens": 30 * s,
                "reward_mean": 0.5 * speed * s,
                "reward_sem": 0.1,
                "kl_sem": 0.01,
            }
            for s in range(1, steps + 1)
        ]
        write_json(
            output_dir / "result.json",
            {
                "spec": run_spec(config, params, seed),
                "objective": checkpoints[-1]["reward_mean"],
                "heldout_reward": checkpoints[-1]["reward_mean"],
                "start_reward": 0.0,
                "kl_to_start": checkpoints[-1]["kl"],
                "checkpoints": checkpoints,
                "learning_rate": config.training.learning_rate,
                "mode": config.training.mode,
                "eval_offset": config.training.eval_prompt_offset,
                "seed": seed,
            },
        )


CONDITIONS = {
    "sparse": Condition({"sparse": 1.0}),
    "sparse_lr2": Condition({"sparse": 1.0}, learning_rate_scale=2.0),
    "kernel_shap.hybrid": Condition({"kernel_shap": 1.0}, mode="hybrid"),
}


def test_tables_figure_and_a_balanced_resume(tmp_path, monkeypatch):
    first = FakeInnerRun(interrupt_at=2)
    monkeypatch.setattr(compare, "run_inner", first)
    with pytest.raises(KeyboardInterrupt):
        run_comparison(
            "tiny", 2, None, tmp_path, Console(quiet=True), conditions=CONDITIONS, steps=4
        )
    second = FakeInnerRun()
    monkeypatch.setattr(compare, "run_inner", second)
    table = run_comparison(
        "tiny", 2, None, tmp_path, Console(quiet=True), conditions=CONDITIONS, steps=4
    )
    # Seed by seed; the finished sparse run of seed 0 is kept.
    assert second.calls == [
        "sparse_lr2-seed0",
        "kernel_shap.hybrid-seed0",
        "sparse-seed1",
        "sparse_lr2-seed1",
        "kernel_shap.hybrid-seed1",
    ]
    runs = {p.parent.name: json.loads(p.read_text()) for p in tmp_path.glob("runs/*/result.json")}
    assert runs["sparse_lr2-seed0"]["learning_rate"] == pytest.approx(2e-3)
    assert runs["kernel_shap.hybrid-seed0"]["mode"] == "hybrid"
    assert runs["sparse-seed0"]["mode"] == "weight"
    assert {r["eval_offset"] for r in runs.values()} == {compare.FINAL_EVAL_OFFSET}
    assert runs["sparse-seed1"]["seed"] == runs["sparse-seed0"]["seed"] + 1 >= 1000
    text = table.read_text()
    for heading in ("matched KL", "training wall-clock seconds", "reward-model rows + policy"):
        assert heading in text
    # At matched KL every condition here lies on one line (reward = 5 x KL):
    # no difference to sparse, whatever its speed. At matched compute the faster ones lead.
    kl_section = text.split("## Held-out reward at matched KL")[1].split("##")[0]
    row = next(line for line in kl_section.splitlines() if line.startswith("| kernel_shap."))
    assert row.count("+0.000 [+0.000, +0.000]") == 3
    wall_section = text.split("matched compute: training wall-clock seconds")[1].split("##")[0]
    row = next(line for line in wall_section.splitlines() if line.startswith("| sparse_lr2 |"))
    assert "minus" not in row and row.count("+0.") >= 3 and "+0.000 [" not in row
    assert (tmp_path / "frontier.png").stat().st_size > 1000
    assert "paired t-test p" in text and "Machine:" in text
    frontier = text.split("## Against sparse GRPO's frontier")[1].split("## Held-out")[0]
    assert frontier.count("| kernel_shap.hybrid |") == 3  # one row per axis
    kl_row = next(line for line in frontier.splitlines() if line.startswith("| kernel_shap."))
    assert kl_row.count("+0.000 [+0.000, +0.000] vs sparse") == 3


def test_the_learning_rate_replaces_the_config_rate_before_the_multipliers(tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "run_inner", FakeInnerRun())
    run_comparison(
        "tiny",
        1,
        None,
        tmp_path,
        Console(quiet=True),
        conditions=CONDITIONS,
        steps=2,
        learning_rate=4e-3,
    )
    rates = {
        p.parent.name: json.loads(p.read_text())["learning_rate"]
        for p in tmp_path.glob("runs/*/result.json")
    }
    assert rates == {
        "sparse-seed0": 4e-3,
        "sparse_lr2-seed0": 8e-3,
        "kernel_shap.hybrid-seed0": 4e-3,
    }


def test_a_finished_run_of_another_spec_is_refused_before_training(tmp_path, monkeypatch):
    fake = FakeInnerRun()
    monkeypatch.setattr(compare, "run_inner", fake)
    run_comparison("tiny", 1, None, tmp_path, Console(quiet=True), conditions=CONDITIONS, steps=3)
    assert len(fake.calls) == 3
    with pytest.raises(RunMismatchError, match="training.steps: 3 -> 4"):
        run_comparison(
            "tiny", 2, None, tmp_path, Console(quiet=True), conditions=CONDITIONS, steps=4
        )
    assert len(fake.calls) == 3


def test_main_reports_bad_input_before_training(tmp_path, capsys, monkeypatch):
    fake = FakeInnerRun()
    monkeypatch.setattr(compare, "run_inner", fake)
    argv = ["--config", "tiny", "--out", str(tmp_path), "--learning-rates", "1,x"]
    assert compare.main(argv) == 2
    assert "--learning-rates" in capsys.readouterr().out
    assert compare.main(["--config", "tiny", "--out", str(tmp_path), "--seeds", "0"]) == 2
    assert compare.main(["--config", "tiny", "--out", str(tmp_path), "--checkpoints", "1"]) == 2
    assert compare.main(["--config", "tiny", "--out", str(tmp_path), "--learning-rate", "-1"]) == 2
    assert "training.learning_rate" in capsys.readouterr().out
    assert fake.calls == [] and not (tmp_path / "runs").exists()


def _study(folder: Path, *, offset: int = 0):
    """A study whose luckiest observation is not its recommendation (see test_surrogate)."""
    data = config_to_dict(load_config("tiny"))
    data["training"]["mode"] = "reward_to_go"
    data["training"]["eval_prompt_offset"] = offset
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(data))
    values = {w: [w - 0.6, w, w + 0.6] for w in (0.0, 0.1, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)}
    values[0.2] = [0.7, 1.3, 1.9]
    with TrialStore(folder) as store:
        store.define_study(signals=["sparse", "kernel_shap"], seed=0)
        for w, replicates in values.items():
            params = ShapingParams({"sparse": 1.0 - w, "kernel_shap": w})
            (trial,) = store.add_trials([params], seeds=[0])
            store.start_trial(trial.id)
            store.complete_trial(
                trial.id, objective=sum(replicates) / 3, replicate_values=replicates
            )


def test_the_tuned_blend_is_the_posterior_mean_recommendation_in_the_study_mode(
    tmp_path, monkeypatch
):
    _study(tmp_path / "study")
    fake = FakeInnerRun()
    monkeypatch.setattr(compare, "run_inner", fake)
    table = run_comparison(
        "tiny",
        1,
        tmp_path / "study",
        tmp_path / "out",
        Console(quiet=True),
        conditions={"sparse": Condition({"sparse": 1.0})},
        steps=2,
    )
    tuned = json.loads((tmp_path / "out/runs/bo_tuned-seed0/result.json").read_text())
    assert tuned["spec"]["weights"]["kernel_shap"] >= 0.7  # not the lucky 0.2
    assert tuned["mode"] == "reward_to_go"
    assert "highest GP posterior mean" in table.read_text()


def test_a_study_scored_on_the_final_prompts_is_refused(tmp_path):
    _study(tmp_path / "study", offset=compare.FINAL_EVAL_OFFSET + 3)
    with pytest.raises(InvalidArgumentError, match="--study"):
        run_comparison(
            "tiny", 1, tmp_path / "study", tmp_path / "out", Console(quiet=True), steps=2
        )


def test_a_real_tiny_comparison_end_to_end(tmp_path):
    conditions = {
        "sparse": Condition({"sparse": 1.0}),
        "kernel_shap.reward_to_go": Condition({"kernel_shap": 1.0}, mode="reward_to_go"),
    }
    table = run_comparison(
        "tiny",
        1,
        None,
        tmp_path,
        Console(quiet=True),
        conditions=conditions,
        steps=2,
        eval_prompts=3,
    )
    text = table.read_text()
    assert "| sparse |" in text and "| kernel_shap.reward_to_go |" in text
    runs = [json.loads(p.read_text()) for p in tmp_path.glob("runs/*/result.json")]
    assert len(runs) == 2
    assert all(len(run["checkpoints"]) == 2 for run in runs)
    shaped = next(run for run in runs if "kernel_shap" in run["weights"])
    # 16 attribution rows per completion, 4 completions per step.
    assert [c["reward_rows"] for c in shaped["checkpoints"]] == [64, 128]
    assert (tmp_path / "start_evaluation.json").exists()
    assert (tmp_path / "frontier.png").stat().st_size > 1000
