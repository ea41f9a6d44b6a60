"""Experiment configs: the built-in ones load, and every kind of bad value names its field."""

from __future__ import annotations

import pytest

from tokenshape.errors import InvalidArgumentError
from tokenshape.experiments.config import (
    BUILTIN_CONFIGS,
    config_from_dict,
    config_to_dict,
    load_config,
)


@pytest.mark.parametrize("name", BUILTIN_CONFIGS)
def test_builtin_configs_load_and_round_trip(name):
    config = load_config(name)
    assert config.name == name
    assert config_from_dict(config_to_dict(config)) == config


def test_imdb_positive_is_the_embedded_task():
    config = load_config("imdb_positive")
    assert config.policy.model == "smollm2"
    assert config.reward.model == "minilm_sentiment"
    assert config.data.prompt_tokens == 8


@pytest.mark.parametrize(
    "data, field, expected",
    [
        ({"trainig": {}}, "trainig", "a known field"),
        ({"training": {"stepz": 3}}, "training.stepz", "a known field of training"),
        ({"training": {"steps": 0}}, "training.steps", "a value in [1, 100000]"),
        ({"training": {"steps": "many"}}, "training.steps", "a int"),
        ({"training": {"steps": True}}, "training.steps", "a int"),
        ({"training": {"learning_rate": -1.0}}, "training.learning_rate", "a value in"),
        ({"training": {"mode": "dense"}}, "training.mode", "one of"),
        ({"reward": {"label": 1}}, "reward.label", "only a classifier folder"),
        ({"reward": {"model": "python:m:f", "minus_label": 0}}, "reward.minus_label", "no value"),
        ({"reward": {"model": "/rm", "label": -1}}, "reward.label", "a value in [0,"),
        ({"data": {"eval_fraction": 1.0}}, "data.eval_fraction", "a share in (0, 1)"),
        ({"data": {"eval_fraction": 0}}, "data.eval_fraction", "a share in (0, 1)"),
        ({"data": {"eval_prompts": 0}}, "data.eval_prompts", "a value in [1,"),
        ({"grpo": {"top_q": 0.9}}, "grpo.top_q", "a field of trl.GRPOConfig"),
        ({"grpo": {"temperature": 0.7}}, "grpo.temperature", "set by training.temperature"),
        ({"grpo": {"max_steps": 3}}, "grpo.max_steps", "set by training.steps"),
        ({"grpo": {"top_p": "high"}}, "grpo.top_p", "a value of type <class 'float'>"),
        ({"grpo": {"mask_truncated_completions": 1}}, "grpo.mask_truncated_completions", "bool"),
        ({"grpo": [1]}, "grpo", "a dict"),
        ({"sweep": {"objective": "auc"}}, "sweep.objective", "one of"),
        ({"attribution": {"budget": 1}}, "attribution.budget", "a value in [2,"),
        ({"sweep": {"n_initial": 5, "n_trials": 3}}, "sweep.n_initial", "at most sweep.n_trials=3"),
        (
            {"training": {"batch_size": 6, "num_generations": 4}},
            "training.batch_size",
            "a multiple",
        ),
        ({"training": [1, 2]}, "training", "a mapping"),
    ],
)
def test_bad_values_name_the_field(data, field, expected):
    with pytest.raises(InvalidArgumentError) as raised:
        config_from_dict(data)
    assert raised.value.name == field
    assert expected in str(raised.value)


def test_integers_are_accepted_for_floats():
    assert config_from_dict({"training": {"learning_rate": 1}}).training.learning_rate == 1.0
    assert config_from_dict({"grpo": {"top_p": 1}}).grpo == {"top_p": 1.0}


def test_optional_fields_take_none_and_a_grpo_section_round_trips():
    data = {
        "reward": {"model": "/models/rm", "label": 1, "minus_label": None},
        "data": {"train": "train.jsonl", "eval": None, "eval_prompts": None},
        "grpo": {"loss_type": "dr_grpo", "top_p": 0.9, "gradient_accumulation_steps": 2},
    }
    config = config_from_dict(data)
    assert config.reward.label == 1 and config.reward.minus_label is None
    assert config.data.eval is None and config.data.eval_prompts is None
    assert config_from_dict(config_to_dict(config)) == config


def test_grpo_fields_reach_trl_and_trl_itself_refuses_bad_values(tmp_path):
    from tokenshape.experiments.grpo_args import grpo_config

    config = config_from_dict(
        {
            "training": {"steps": 3, "temperature": 0.5},
            "grpo": {"loss_type": "dr_grpo", "top_p": 0.9},
        }
    )
    args = grpo_config(config, tmp_path)
    assert (args.loss_type, args.top_p, args.temperature, args.max_steps) == (
        "dr_grpo",
        0.9,
        0.5,
        3,
    )
    assert grpo_config(config_from_dict({}), tmp_path).loss_type == "dapo"
    bad = config_from_dict({"grpo": {"lr_scheduler_type": "sideways"}})
    with pytest.raises(InvalidArgumentError) as raised:
        grpo_config(bad, tmp_path)
    assert raised.value.name == "grpo" and "sideways" in str(raised.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(InvalidArgumentError, match="an existing YAML file"):
        load_config(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("training: [unclosed\n")
    with pytest.raises(InvalidArgumentError, match="valid YAML"):
        load_config(broken)
