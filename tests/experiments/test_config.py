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
        ({"reward": {"model": "gpt"}}, "reward.model", "one of"),
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


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(InvalidArgumentError, match="an existing YAML file"):
        load_config(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("training: [unclosed\n")
    with pytest.raises(InvalidArgumentError, match="valid YAML"):
        load_config(broken)
