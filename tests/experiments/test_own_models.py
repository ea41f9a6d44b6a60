"""A user's own policy, reward models and prompt files through `train`, `sweep`, `explain` and the
Python API (the inner run handed to tune_shaping)."""

from __future__ import annotations

import json
import sqlite3

import pytest
import torch
import yaml

from tokenshape.experiments.cli import main
from tokenshape.experiments.config import config_from_dict
from tokenshape.experiments.inner_run import InnerRun, run_inner
from tokenshape.shaping.params import ShapingParams

MINIMAL_YAML = """\
name: my_task
policy:
  model: {policy}
reward:
  model: {reward}
  label: 1
  minus_label: 0
data:
  train: {train}
  eval: {eval}
training:
  steps: 2
  batch_size: 4
  num_generations: 2
  max_completion_length: 8
  weights: {{kernel_shap: 0.5, sparse: 0.5}}
attribution:
  budget: 16
"""


def test_the_minimal_yaml_file_trains_as_it_is(user_files, tmp_path):
    config = tmp_path / "my_task.yaml"
    config.write_text(
        MINIMAL_YAML.format(
            policy=user_files.policy,
            reward=user_files.bert_reward,
            train=user_files.train,
            eval=user_files.eval,
        )
    )
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert len(result["learning_curve"]) == 2
    # Every held-out prompt of the eval file, in its order, scored by the user's reward model.
    assert [prompt for prompt, _, _ in result["samples"]] == user_files.eval_prompts
    assert result["weights"] == {"kernel_shap": 0.5, "sparse": 0.5}
    # The user's folder is the starting point; it is not trained in place.
    assert not (user_files.policy / "trainer").exists()
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["eval"] == str(user_files.eval)


def test_the_held_out_score_is_the_user_reward_model_on_the_samples(
    user_files, minimal_config, tmp_path
):
    from tokenshape.encoding import encode_pairs
    from tokenshape.experiments.sources import load_classifier_reward

    config = config_from_dict(
        {**minimal_config(), "reward": {"model": str(user_files.llama_reward), "label": 0}}
    )
    result = run_inner(config, ShapingParams({"sparse": 1.0}), output_dir=tmp_path)
    reward = load_classifier_reward(str(user_files.llama_reward), label=0)
    recorded = json.loads((tmp_path / "result.json").read_text())["samples"]
    prompts, texts, scores = zip(*recorded)
    batch = encode_pairs(reward.tokenizer, list(prompts), list(texts))
    expected = reward(batch.input_ids, batch.attention_mask)
    assert torch.allclose(torch.tensor(scores, dtype=torch.float64), expected.double(), atol=1e-5)
    assert result.info["heldout_reward"] == pytest.approx(float(expected.mean()), abs=1e-5)


def test_a_two_trial_sweep_on_chat_prompts_with_a_decoder_reward_model(
    user_files, minimal_config, tmp_path
):
    config = minimal_config()
    config["reward"] = {"model": str(user_files.llama_reward)}
    config["data"] = {"train": str(user_files.chat), "eval_fraction": 0.25}
    config["sweep"] = {"signals": ["sparse", "kernel_shap"], "n_initial": 1, "n_trials": 2}
    config["grpo"] = {"loss_type": "dr_grpo", "top_p": 0.95}
    path = tmp_path / "chat.yaml"
    path.write_text(yaml.safe_dump(config))
    study = tmp_path / "study"
    assert main(["sweep", "--config", str(path), "--study-dir", str(study)]) == 0
    with sqlite3.connect(study / "study.sqlite") as db:
        statuses = [status for (status,) in db.execute("SELECT status FROM trials ORDER BY id")]
    assert statuses == ["complete", "complete"]
    samples = json.loads((study / "trials" / "000" / "seed0" / "result.json").read_text())[
        "samples"
    ]
    # 2 of the 8 chat prompts are held out, written with the policy's chat template.
    assert len(samples) == 2
    for prompt, _, _ in samples:
        assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
        assert prompt.endswith("<|im_start|>assistant\n")
        assert prompt.split("user\n")[1].split("...")[0] in user_files.train_prompts


def test_a_python_reward_scores_the_prompt_and_completion_text(
    minimal_config, tmp_path, in_rewards_folder
):
    config = config_from_dict(
        {**minimal_config(), "reward": {"model": "python:user_rewards:letter_e_share"}}
    )
    run_inner(config, ShapingParams({"kernel_shap": 0.5, "sparse": 0.5}), output_dir=tmp_path)
    samples = json.loads((tmp_path / "result.json").read_text())["samples"]
    for prompt, completion, score in samples:
        text = prompt + completion
        assert score == pytest.approx(text.count("e") / len(text), abs=1e-6)


def test_explain_a_user_reward_model_on_a_file_of_rows(user_files, write_jsonl, tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    write_jsonl(
        rows,
        [
            {"prompt": "The movie", "response": " was wonderful"},
            {"prompt": "I found it", "response": " dull and slow"},
        ],
    )
    page = tmp_path / "explain.html"
    code = main(
        [
            "explain",
            "--file",
            str(rows),
            "--reward-model",
            str(user_files.bert_reward),
            "--label",
            "1",
            "--minus-label",
            "0",
            "--method",
            "exact",
            "--html",
            str(page),
        ]
    )
    assert code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "reward = logit[1] - logit[0]" in out
    assert "wonderful" in out and "dull" in out
    html = page.read_text()
    assert "wonderful" in html and "slow" in html


def test_explain_text_with_a_decoder_reward_model(user_files, capsys):
    code = main(
        [
            "explain",
            " was wonderful",
            "--prompt",
            "The movie",
            "--reward-model",
            str(user_files.llama_reward),
        ]
    )
    assert code == 0
    assert "reward = logit[0]" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    "args, option, expected",
    [
        (["--reward-model", "{bert}", "--label", "2"], "--label", "a logit index in [0, 2)"),
        (["--reward-model", "{bert}", "--minus-label", "5"], "--minus-label", "[0, 2)"),
        (["--label", "1"], "--label", "no value without --reward-model"),
        (["--reward-model", "{policy}"], "--reward-model", "a sequence classifier"),
        (["--file", "{missing}"], "--file", "an existing"),
    ],
)
def test_explain_refuses_bad_options(user_files, tmp_path, capsys, args, option, expected):
    paths = {
        "bert": user_files.bert_reward,
        "policy": user_files.policy,
        "missing": tmp_path / "absent.jsonl",
    }
    filled = [arg.format(**paths) for arg in args]
    assert main(["explain", "--prompt", "The movie", *filled]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert f"{option}=" in out and expected in out


def test_the_inner_run_from_python_objects_is_an_objective_for_tune_shaping(user_files, tmp_path):
    from tokenshape.models.policy import smollm2_tokenizer
    from tokenshape.models.tiny import minilm_tokenizer, tiny_bert_reward_model, tiny_llama_policy
    from tokenshape.reward import SequenceClassifierReward
    from tokenshape.tuning import tune_shaping

    tokenizer = smollm2_tokenizer()
    policy = tiny_llama_policy(tokenizer, seed=7)
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    reward_tokenizer = minilm_tokenizer()
    reward = SequenceClassifierReward(
        tiny_bert_reward_model(reward_tokenizer), reward_tokenizer, label=1, minus_label=0
    )
    config = config_from_dict(
        {
            "training": {
                "steps": 2,
                "batch_size": 4,
                "num_generations": 2,
                "max_completion_length": 6,
            }
        }
    )
    run = InnerRun(
        config,
        policy=policy,
        tokenizer=tokenizer,
        reward=reward,
        train_prompts=user_files.train_prompts,
        eval_prompts=user_files.eval_prompts,
    )
    study = tune_shaping(run, ["sparse", "kernel_shap"], n_initial=2, n_trials=2, store=tmp_path)
    assert [trial.status for trial in study.trials] == ["complete", "complete"]
    assert all(len(trial.learning_curve) == 2 for trial in study.trials)
    # Each trial trained a copy: the object handed in is still the starting policy.
    assert all(torch.equal(p, before[name]) for name, p in policy.named_parameters())


def test_the_inner_run_refuses_bad_objects(user_files):
    from tokenshape.errors import InvalidArgumentError
    from tokenshape.models.policy import smollm2_tokenizer
    from tokenshape.reward import StringScorerReward

    config = config_from_dict({})
    tokenizer = smollm2_tokenizer()
    good = {
        "policy": user_files.policy,
        "tokenizer": tokenizer,
        "reward": StringScorerReward(len, tokenizer),
        "train_prompts": user_files.train_prompts,
        "eval_prompts": user_files.eval_prompts,
    }
    InnerRun(config, **good)
    for name, value in [
        ("policy", 3),
        ("reward", len),
        ("train_prompts", "one prompt"),
        ("eval_prompts", []),
        ("eval_prompts", [["chat"]]),
    ]:
        with pytest.raises(InvalidArgumentError) as raised:
            InnerRun(config, **{**good, name: value})
        assert raised.value.name == name


def test_the_readme_config_is_the_minimal_one(user_files):
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = readme.split("## Your own models")[1].split("```yaml\n")[1].split("```")[0]
    paths = {
        "/path/to/policy": user_files.policy,
        "/path/to/reward_model": user_files.bert_reward,
        "/path/to/train.jsonl": user_files.train,
        "/path/to/eval.jsonl": user_files.eval,
    }
    for placeholder, path in paths.items():
        block = block.replace(placeholder, str(path))
    minimal = MINIMAL_YAML.format(
        policy=user_files.policy,
        reward=user_files.bert_reward,
        train=user_files.train,
        eval=user_files.eval,
    )
    assert config_from_dict(yaml.safe_load(block)) == config_from_dict(yaml.safe_load(minimal))


def test_the_comparison_runs_on_the_same_file(user_files, minimal_config, tmp_path):
    from rich.console import Console

    from tokenshape.experiments.compare import Condition, run_comparison

    path = tmp_path / "my_task.yaml"
    path.write_text(yaml.safe_dump(minimal_config()))
    conditions = {
        "sparse": Condition({"sparse": 1.0}),
        "kernel_shap": Condition({"kernel_shap": 1.0}),
    }
    table = run_comparison(
        str(path), 1, None, tmp_path / "out", Console(quiet=True), conditions=conditions
    )
    assert "kernel_shap" in table.read_text()
    for name in conditions:
        run = json.loads((tmp_path / "out" / "runs" / f"{name}-seed0" / "result.json").read_text())
        assert [prompt for prompt, _, _ in run["samples"]] == user_files.eval_prompts
