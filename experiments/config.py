"""Experiment configs: YAML files read into typed dataclasses, validated field by field.

A config has five sections (``policy``, ``reward``, ``data``, ``training``, ``attribution``) and,
for sweeps, ``sweep``. Every field has a type, a range or a set of choices, and a help text; an
unknown key, a wrong type or a value out of range is an error that names the field's full path
(``training.steps``), the value and what was expected.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tokenshape.errors import InvalidArgumentError

__all__ = [
    "ExperimentConfig",
    "PolicyConfig",
    "RewardConfig",
    "DataConfig",
    "TrainingConfig",
    "AttributionConfig",
    "SweepConfig",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "builtin_config_path",
    "BUILTIN_CONFIGS",
]

CONFIG_DIR = Path(__file__).parent / "configs"
BUILTIN_CONFIGS = ("imdb_positive", "tiny")


def _field(default: Any, help: str, *, low: float | None = None, high: float | None = None,
           choices: tuple | None = None) -> Any:
    meta = {"help": help, "low": low, "high": high, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class PolicyConfig:
    """The policy being trained."""

    model: str = _field("smollm2", "'smollm2' (SmolLM2-135M-Instruct, cached by `tokenshape prepare`) or 'tiny' (a random tiny Llama with the SmolLM2 tokenizer)", choices=("smollm2", "tiny"))


@dataclass
class RewardConfig:
    """The reward model that scores completions."""

    model: str = _field("minilm_sentiment", "'minilm_sentiment' (the cached MiniLM IMDB classifier, positive minus negative logit) or 'vader' (VADER compound score)", choices=("minilm_sentiment", "vader"))


@dataclass
class DataConfig:
    """Prompts: openings of IMDB reviews."""

    prompt_tokens: int = _field(8, "tokens of each review opening used as a prompt", low=1, high=256)
    train_prompts: int = _field(64, "training prompts", low=1, high=20000)
    eval_prompts: int = _field(16, "held-out prompts the objective is measured on", low=1, high=5000)


@dataclass
class TrainingConfig:
    """One inner GRPO run."""

    steps: int = _field(8, "optimizer steps per inner run", low=1, high=100000)
    batch_size: int = _field(8, "completions per step (prompts x generations)", low=2, high=4096)
    num_generations: int = _field(4, "completions per prompt (the GRPO group)", low=2, high=64)
    max_completion_length: int = _field(24, "new tokens per completion", low=1, high=4096)
    learning_rate: float = _field(1e-5, "AdamW learning rate", low=0.0, high=1.0)
    beta: float = _field(0.0, "KL coefficient against the reference policy (GRPO puts it in the loss)", low=0.0, high=10.0)
    mode: str = _field("weight", "how shaped rewards become token advantages", choices=("weight", "reward_to_go", "hybrid"))
    temperature: float = _field(1.0, "sampling temperature", low=0.0, high=10.0)
    weights: dict = _field({"sparse": 1.0}, "blend weights of a single `tokenshape train` run (a sweep tunes them)")
    eval_every: int = _field(0, "steps between learning-curve evaluations (0: only at the end)", low=0, high=100000)


@dataclass
class AttributionConfig:
    """How the reward model's score is explained."""

    budget: int = _field(64, "forward rows per completion for sampling methods", low=2, high=1_000_000)
    unit: str = _field("token", "players of the game", choices=("token", "word", "sentence"))
    masking: str = _field("auto", "how hidden units are hidden", choices=("auto", "mask", "unk", "pad", "remove"))
    normalization: str = _field("sum", "how signed attributions become shares", choices=("sum", "abs", "positive"))


@dataclass
class SweepConfig:
    """The Bayesian-optimisation study over the blend weights."""

    signals: list = _field(["sparse", "kernel_shap", "attention"], "signals blended (weights on the simplex)")
    n_initial: int = _field(4, "Sobol trials before the Gaussian process takes over", low=1, high=1000)
    n_trials: int = _field(8, "trials in the study, the Sobol ones included", low=1, high=10000)
    batch_size: int = _field(1, "trials proposed at once", low=1, high=64)


@dataclass
class ExperimentConfig:
    """A whole experiment."""

    name: str = _field("experiment", "the study's name (its folder under runs/)")
    seed: int = _field(0, "seed of the inner runs, shared by all trials", low=0, high=2**31 - 1)
    policy: PolicyConfig = field(default_factory=PolicyConfig, metadata={"help": "the policy"})
    reward: RewardConfig = field(default_factory=RewardConfig, metadata={"help": "the reward model"})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "the prompts"})
    training: TrainingConfig = field(default_factory=TrainingConfig, metadata={"help": "the inner run"})
    attribution: AttributionConfig = field(default_factory=AttributionConfig, metadata={"help": "the explanation"})
    sweep: SweepConfig = field(default_factory=SweepConfig, metadata={"help": "the study"})


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", str(kind))


def _check_value(path: str, value: Any, spec: dataclasses.Field, kind: Any) -> Any:
    meta = spec.metadata
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    origin = typing.get_origin(kind) or kind
    if isinstance(value, bool) and origin is not bool or not isinstance(value, origin):
        raise InvalidArgumentError(path, value, f"a {_type_name(origin)} ({meta['help']})")
    if meta.get("choices") and value not in meta["choices"]:
        raise InvalidArgumentError(path, value, f"one of {meta['choices']}")
    low, high = meta.get("low"), meta.get("high")
    if low is not None and value < low or high is not None and value > high:
        raise InvalidArgumentError(path, value, f"a value in [{low}, {high}] ({meta['help']})")
    return value


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise InvalidArgumentError(prefix or "config", data, "a mapping of fields")
    hints = typing.get_type_hints(cls)
    fields = {spec.name: spec for spec in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise InvalidArgumentError(where, data[unknown[0]], f"a known field of {prefix or 'the config'}: one of {sorted(fields)}")
    values = {}
    for name, value in data.items():
        path = f"{prefix}.{name}" if prefix else name
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = _build(kind, value, path)
        else:
            values[name] = _check_value(path, value, fields[name], kind)
    return cls(**values)


def config_from_dict(data: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a parsed config; unknown keys and bad values raise :class:`InvalidArgumentError`."""
    config = _build(ExperimentConfig, data, "")
    if config.training.batch_size % config.training.num_generations:
        raise InvalidArgumentError(
            "training.batch_size",
            config.training.batch_size,
            f"a multiple of training.num_generations={config.training.num_generations}",
        )
    if config.sweep.n_initial > config.sweep.n_trials:
        raise InvalidArgumentError("sweep.n_initial", config.sweep.n_initial, f"at most sweep.n_trials={config.sweep.n_trials}")
    return config


def config_to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """The config as plain data (what :func:`config_from_dict` reads back)."""
    return dataclasses.asdict(config)


def builtin_config_path(name: str) -> Path:
    """The YAML file of a built-in config (``imdb_positive``, ``tiny``)."""
    if name not in BUILTIN_CONFIGS:
        raise InvalidArgumentError("config", name, f"a YAML file or one of {BUILTIN_CONFIGS}")
    return CONFIG_DIR / f"{name}.yaml"


def load_config(path_or_name: str | Path) -> ExperimentConfig:
    """Read and validate a YAML config file, or a built-in config by name."""
    path = Path(path_or_name)
    if not path.exists():
        if path.suffix or str(path_or_name) not in BUILTIN_CONFIGS:
            raise InvalidArgumentError("config", str(path_or_name), f"an existing YAML file or one of {BUILTIN_CONFIGS}")
        path = builtin_config_path(str(path_or_name))
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise InvalidArgumentError("config", str(path), f"valid YAML ({error})") from None
    return config_from_dict(data)

