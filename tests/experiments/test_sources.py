"""Bad policy, reward, prompt and grpo inputs: each names its config field, the value and what was
expected, and is raised by the up-front check, before any model is loaded or trained."""

from __future__ import annotations

import pytest

from tokenshape.errors import InvalidArgumentError
from tokenshape.experiments.cli import main
from tokenshape.experiments.config import config_from_dict
from tokenshape.experiments.sources import check_sources, import_python_reward, load_reward


def _raised(config: dict) -> InvalidArgumentError:
    with pytest.raises(InvalidArgumentError) as raised:
        check_sources(config_from_dict(config))
    return raised.value


def test_the_minimal_config_passes_the_check(minimal_config):
    check_sources(config_from_dict(minimal_config()))


@pytest.mark.parametrize(
    "section, values, field, expected",
    [
        ("policy", {"model": "{root}/absent"}, "policy.model", "(no such folder)"),
        ("policy", {"model": "{root}/rewards"}, "policy.model", "holds no config.json"),
        ("policy", {"model": "{train}"}, "policy.model", "this is a file, not a folder"),
        ("policy", {"model": "{bert_reward}"}, "policy.model", "a Hugging Face causal LM"),
        ("reward", {"model": "{policy}"}, "reward.model", "a sequence classifier"),
        ("reward", {"model": "{root}/absent"}, "reward.model", "(no such folder)"),
        ("reward", {"label": 2}, "reward.label", "a logit index in [0, 2)"),
        ("reward", {"minus_label": 7}, "reward.minus_label", "a logit index in [0, 2)"),
        (
            "reward",
            {"model": "{llama_reward}", "label": 1, "minus_label": None},
            "reward.label",
            "[0, 1)",
        ),
        ("data", {"train": "{root}/absent.jsonl"}, "data.train", "an existing"),
        ("data", {"eval": "{root}/absent.csv"}, "data.eval", "an existing"),
        ("data", {"train": "{root}/rewards/user_rewards.py"}, "data.train", "a file ending in"),
        ("data", {"prompt_column": "text"}, "data.train", "prompt_column='text'"),
        ("grpo", {"lr_scheduler_type": "sideways"}, "grpo", "fields trl.GRPOConfig accepts"),
    ],
)
def test_bad_models_and_files_name_the_field(
    user_files, minimal_config, section, values, field, expected
):
    paths = {
        "root": user_files.root,
        "train": user_files.train,
        "policy": user_files.policy,
        "bert_reward": user_files.bert_reward,
        "llama_reward": user_files.llama_reward,
    }
    config = minimal_config()
    config.setdefault(section, {}).update(
        {k: v.format(**paths) if isinstance(v, str) else v for k, v in values.items()}
    )
    error = _raised(config)
    assert error.name == field
    assert expected in str(error)


@pytest.mark.parametrize(
    "content, expected",
    [
        ("", "at least one row"),
        ('{"prompt": "fine"}\n{"prompt": 3}\n', "row 2 holds 3"),
        ('{"prompt": "fine"}\n{"prompt": ""}\n', "a non-empty text"),
        ('{"prompt": [{"role": "user"}]}\n', "messages"),
        ('{"prompt": "fine"}\nnot json\n', "line 2 is not JSON"),
        ('["a list"]\n', "row 1 has list"),
    ],
)
def test_unusable_prompt_files_name_the_field(minimal_config, tmp_path, content, expected):
    path = tmp_path / "prompts.jsonl"
    path.write_text(content)
    config = minimal_config()
    config["data"]["eval"] = str(path)
    error = _raised(config)
    assert (error.name, error.value) == ("data.eval", str(path))
    assert expected in str(error)


def test_an_unreadable_parquet_file_names_the_field(minimal_config, tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    config = minimal_config()
    config["data"]["train"] = str(path)
    error = _raised(config)
    assert error.name == "data.train" and "a readable prompt source" in str(error)


@pytest.mark.parametrize(
    "target, expected",
    [
        ("python:no_such_module:f", "an importable module 'no_such_module'"),
        ("python:user_rewards:absent", "a function 'absent' in user_rewards"),
        ("python:user_rewards:not_a_function", "a callable"),
        ("python:user_rewards:wrong_count", "returning 2 finite numbers for 2 texts"),
        ("python:user_rewards:not_numbers", "it returned ['good', 'good']"),
        ("python:user_rewards:raises", "it raised RuntimeError: no scorer here"),
        ("python:user_rewards", "'python:package.module:function'"),
    ],
)
def test_bad_python_rewards_name_the_field(minimal_config, in_rewards_folder, target, expected):
    error = _raised({**minimal_config(), "reward": {"model": target}})
    assert (error.name, error.value) == ("reward.model", target)
    assert expected in str(error)


def test_a_python_reward_is_found_beside_the_config_and_reads_the_policy_tokens(
    minimal_config, in_rewards_folder
):
    from tokenshape.encoding import encode_pairs
    from tokenshape.models.policy import smollm2_tokenizer

    function = import_python_reward("python:user_rewards:letter_e_share")
    tokenizer = smollm2_tokenizer()
    config = config_from_dict(
        {**minimal_config(), "reward": {"model": "python:user_rewards:letter_e_share"}}
    )
    reward = load_reward(config, tokenizer)
    assert reward.tokenizer is tokenizer
    batch = encode_pairs(tokenizer, ["The movie"], [" was excellent"])
    expected = function(["The movie was excellent"])[0]
    assert float(reward(batch.input_ids, batch.attention_mask)[0]) == pytest.approx(expected)


def test_a_bad_config_fails_before_train_or_sweep_start(minimal_config, tmp_path, capsys):
    import yaml

    config = minimal_config()
    config["reward"]["label"] = 5
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    out, study = tmp_path / "run", tmp_path / "study"
    assert main(["train", "--config", str(path), "--out", str(out)]) == 2
    assert main(["sweep", "--config", str(path), "--study-dir", str(study)]) == 2
    assert not out.exists() and not study.exists()
    printed = " ".join(capsys.readouterr().out.split())
    assert printed.count("reward.label=5: expected a logit index in [0, 2)") == 2
