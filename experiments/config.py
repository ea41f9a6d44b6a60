"""Experiment configs: YAML files read into typed dataclasses, validated field by field.

A config has five sections (``policy``, ``reward``, ``data``, ``training``, ``attribution``),
for sweeps ``sweep``, and optionally ``grpo`` (further fields of TRL's ``GRPOConfig``). Every field has a type, a range or a set of choices, and a help text; an
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
    "BUILTIN_CONFIGS",
    "BUILTIN_POLICIES",
    "BUILTIN_PROMPTS",
    "BUILTIN_REWARDS",
    "PYTHON_PREFIX",
    "AttributionConfig",
    "DataConfig",
    "ExperimentConfig",
    "PolicyConfig",
    "RewardConfig",
    "SweepConfig",
    "TrainingConfig",
    "builtin_config_path",
    "config_from_dict",
    "config_to_dict",
    "load_config",
]

CONFIG_DIR = Path(__file__).parent / "configs"
BUILTIN_CONFIGS = ("imdb_positive", "tiny")
#: Names of ``policy.model``, ``reward.model`` and ``data.train`` that are not paths.
BUILTIN_POLICIES = ("smollm2", "tiny")
BUILTIN_REWARDS = ("minilm_sentiment", "vader")
BUILTIN_PROMPTS = ("imdb",)
#: ``reward.model`` starting with this names a Python function: ``python:package.module:function``.
PYTHON_PREFIX = "python:"


def _spec(
    help: str,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple | None = None,
) -> dict[str, Any]:
    """A field's metadata: its help text and the values it accepts."""
    return {"help": help, "low": low, "high": high, "choices": choices}


@dataclass
class PolicyConfig:
    """The policy being trained."""

    model: str = field(
        default="smollm2",
        metadata=_spec(
            "'smollm2' (SmolLM2-135M-Instruct, cached by `tokenshape prepare`), 'tiny' (a random "
            "tiny Llama with the SmolLM2 tokenizer), a folder holding a Hugging Face causal LM and "
            "its tokenizer, or a hub id where a hub is reachable"
        ),
    )


@dataclass
class RewardConfig:
    """The reward model that scores completions."""

    model: str = field(
        default="minilm_sentiment",
        metadata=_spec(
            "'minilm_sentiment' (the cached MiniLM IMDB classifier, positive minus negative "
            "logit), 'vader' (VADER compound score), a folder holding a sequence classifier "
            "(encoder or decoder) and its tokenizer, or 'python:package.module:function' (a "
            "function from a list of strings to a list of floats)"
        ),
    )
    label: int | None = field(
        default=None,
        metadata=_spec(
            "the classifier logit used as the reward (a classifier folder only; default 0)", low=0
        ),
    )
    minus_label: int | None = field(
        default=None,
        metadata=_spec(
            "a classifier logit subtracted from it, as for positive minus negative", low=0
        ),
    )


@dataclass
class DataConfig:
    """Prompts: IMDB review openings, or the user's own prompt files."""

    train: str = field(
        default="imdb",
        metadata=_spec(
            "training prompts: 'imdb' (openings of IMDB reviews), a .jsonl, .csv or .parquet "
            "file, or a folder written by datasets' save_to_disk"
        ),
    )
    eval: str | None = field(
        default=None,
        metadata=_spec(
            "held-out prompts, as data.train; without it, data.eval_fraction of the training "
            "prompts (IMDB: its own held-out split)"
        ),
    )
    prompt_column: str = field(
        default="prompt",
        metadata=_spec("the column holding each prompt: text, or a list of chat messages"),
    )
    eval_fraction: float = field(
        default=0.2,
        metadata=_spec("share of a prompt file held out when data.eval is not given, in (0, 1)"),
    )
    prompt_tokens: int = field(
        default=8,
        metadata=_spec("tokens of each IMDB review opening used as a prompt", low=1, high=256),
    )
    train_prompts: int | None = field(
        default=None,
        metadata=_spec(
            "training prompts used (default: every row of a file, 64 IMDB openings)",
            low=1,
            high=1_000_000,
        ),
    )
    eval_prompts: int | None = field(
        default=None,
        metadata=_spec(
            "held-out prompts the objective is measured on (default: every held-out row of a "
            "file, 16 IMDB openings)",
            low=1,
            high=100_000,
        ),
    )


@dataclass
class TrainingConfig:
    """One inner GRPO run."""

    steps: int = field(
        default=8, metadata=_spec("optimizer steps per inner run", low=1, high=100000)
    )
    batch_size: int = field(
        default=8, metadata=_spec("completions per step (prompts x generations)", low=2, high=4096)
    )
    num_generations: int = field(
        default=4, metadata=_spec("completions per prompt (the GRPO group)", low=2, high=64)
    )
    max_completion_length: int = field(
        default=24, metadata=_spec("new tokens per completion", low=1, high=4096)
    )
    learning_rate: float = field(
        default=1e-5, metadata=_spec("AdamW learning rate", low=0.0, high=1.0)
    )
    beta: float = field(
        default=0.0,
        metadata=_spec(
            "KL coefficient against the reference policy (GRPO puts it in the loss)",
            low=0.0,
            high=10.0,
        ),
    )
    mode: str = field(
        default="weight",
        metadata=_spec(
            "how shaped rewards become token advantages",
            choices=("weight", "reward_to_go", "hybrid"),
        ),
    )
    temperature: float = field(
        default=1.0, metadata=_spec("sampling temperature", low=0.0, high=10.0)
    )
    weights: dict = field(
        default_factory=lambda: {"sparse": 1.0},
        metadata=_spec("blend weights of a single `tokenshape train` run (a sweep tunes them)"),
    )
    checkpoints: int = field(
        default=4,
        metadata=_spec(
            "held-out evaluations along the run (reward and KL to the starting policy), evenly "
            "spaced in steps, the last at the final step; 1 evaluates only the final policy",
            low=1,
            high=1000,
        ),
    )
    eval_samples: int = field(
        default=1,
        metadata=_spec(
            "completions sampled per held-out prompt at each evaluation (top_k 0, top_p 1, the "
            "training temperature: the policy's own distribution)",
            low=1,
            high=256,
        ),
    )
    eval_seed: int = field(
        default=0,
        metadata=_spec(
            "seed of held-out sampling, the same for every trial, replicate and condition "
            "(common random numbers)",
            low=0,
            high=2**31 - 1,
        ),
    )
    eval_prompt_offset: int = field(
        default=0,
        metadata=_spec(
            "index of the first held-out prompt in the held-out split; the comparison scores on "
            "a block after the study's, so a blend is never scored on the prompts it was "
            "selected on",
            low=0,
            high=100000,
        ),
    )


@dataclass
class AttributionConfig:
    """How the reward model's score is explained."""

    budget: int = field(
        default=64,
        metadata=_spec("forward rows per completion for sampling methods", low=2, high=1_000_000),
    )
    unit: str = field(
        default="token",
        metadata=_spec("players of the game", choices=("token", "word", "sentence")),
    )
    masking: str = field(
        default="auto",
        metadata=_spec(
            "how hidden units are hidden", choices=("auto", "mask", "unk", "pad", "remove")
        ),
    )
    normalization: str = field(
        default="sum",
        metadata=_spec("how signed attributions become shares", choices=("sum", "abs", "positive")),
    )
    amortized_teacher: str = field(
        default="kernel_shap",
        metadata=_spec(
            "the Shapley method the 'amortized' signal's explainer learns from (at `budget` rows)",
            choices=("kernel_shap", "exact"),
        ),
    )
    amortized_audit_fraction: float = field(
        default=0.25,
        metadata=_spec(
            "share of completions the 'amortized' signal's teacher explains, in (0, 1]",
            low=0.0,
            high=1.0,
        ),
    )
    amortized_min_pearson: float = field(
        default=0.7,
        metadata=_spec(
            "running Pearson of the amortised explainer against its teacher below which the "
            "teacher explains every completion",
            low=-1.0,
            high=1.0,
        ),
    )


@dataclass
class SweepConfig:
    """The Bayesian-optimisation study over the blend weights."""

    signals: list = field(
        default_factory=lambda: ["sparse", "kernel_shap", "attention"],
        metadata=_spec("signals blended (weights on the simplex)"),
    )
    n_initial: int = field(
        default=4,
        metadata=_spec("Sobol trials before the Gaussian process takes over", low=1, high=1000),
    )
    n_trials: int = field(
        default=8, metadata=_spec("trials in the study, the Sobol ones included", low=1, high=10000)
    )
    batch_size: int = field(default=1, metadata=_spec("trials proposed at once", low=1, high=64))
    objective: str = field(
        default="reward_at_kl",
        metadata=_spec(
            "what a trial maximises. reward_at_kl (default): the held-out reward where the run's "
            "KL to the starting policy reaches sweep.kl_budget, interpolated between "
            "checkpoints along their KL estimates made non-decreasing (isotonic least squares: "
            "single estimates are noisy) (a run that never reaches it uses its last checkpoint "
            "and is flagged); "
            "it needs training.checkpoints >= 2. It is the default because a blend that only "
            "moves the policy further per step (kernel_shap credit did: 2.7 times sparse GRPO's "
            "KL after 24 steps at the same learning rate, experiments/results/imdb_positive) "
            "scores higher on a fixed step count for that reason alone. reward_minus_kl: the "
            "final held-out reward minus sweep.kl_penalty times its KL. heldout_reward: the "
            "final held-out reward. curve_mean: the mean training reward over all steps",
            choices=("reward_at_kl", "reward_minus_kl", "heldout_reward", "curve_mean"),
        ),
    )
    kl_budget: float = field(
        default=0.1,
        metadata=_spec(
            "KL to the starting policy (nats per completion) at which reward_at_kl reads the "
            "held-out reward, > 0",
            low=0.0,
            high=1000.0,
        ),
    )
    kl_penalty: float = field(
        default=1.0,
        metadata=_spec("lambda of reward_minus_kl (reward - lambda * KL)", low=0.0, high=1000.0),
    )
    replicates: int = field(
        default=1,
        metadata=_spec(
            "training seeds per trial (seed, seed + 1, ...: the same for every trial); the "
            "trial's objective is their mean and their spread its noise, given to the GP",
            low=1,
            high=100,
        ),
    )


@dataclass
class ExperimentConfig:
    """A whole experiment."""

    name: str = field(
        default="experiment", metadata=_spec("the study's name (its folder under runs/)")
    )
    seed: int = field(
        default=0,
        metadata=_spec("seed of the inner runs, shared by all trials", low=0, high=2**31 - 1),
    )
    policy: PolicyConfig = field(default_factory=PolicyConfig, metadata={"help": "the policy"})
    reward: RewardConfig = field(
        default_factory=RewardConfig, metadata={"help": "the reward model"}
    )
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "the prompts"})
    training: TrainingConfig = field(
        default_factory=TrainingConfig, metadata={"help": "the inner run"}
    )
    attribution: AttributionConfig = field(
        default_factory=AttributionConfig, metadata={"help": "the explanation"}
    )
    sweep: SweepConfig = field(default_factory=SweepConfig, metadata={"help": "the study"})
    grpo: dict = field(
        default_factory=dict,
        metadata=_spec(
            "further fields of TRL's GRPOConfig (top_p, loss_type, gradient_accumulation_steps, "
            "...), validated by GRPOConfig; fields the sections above set are refused"
        ),
    )


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", str(kind))


def _check_value(path: str, value: Any, spec: dataclasses.Field, kind: Any) -> Any:
    meta = spec.metadata
    options = typing.get_args(kind)
    if type(None) in options:
        if value is None:
            return None
        (kind,) = [option for option in options if option is not type(None)]
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
        raise InvalidArgumentError(
            where,
            data[unknown[0]],
            f"a known field of {prefix or 'the config'}: one of {sorted(fields)}",
        )
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
    if not 0.0 < config.data.eval_fraction < 1.0:
        raise InvalidArgumentError(
            "data.eval_fraction", config.data.eval_fraction, "a share in (0, 1), both ends excluded"
        )
    for name in ("label", "minus_label"):
        value = getattr(config.reward, name)
        if value is not None and (
            config.reward.model in BUILTIN_REWARDS or config.reward.model.startswith(PYTHON_PREFIX)
        ):
            raise InvalidArgumentError(
                f"reward.{name}",
                value,
                f"no value with reward.model={config.reward.model!r}: only a classifier folder "
                "has logits to choose from",
            )
    if config.grpo:
        from tokenshape.experiments.grpo_args import check_grpo_fields

        config.grpo = check_grpo_fields(config.grpo)
    if not config.sweep.kl_budget > 0:
        raise InvalidArgumentError(
            "sweep.kl_budget", config.sweep.kl_budget, "a KL budget > 0 (nats per completion)"
        )
    if config.sweep.objective == "reward_at_kl" and config.training.checkpoints < 2:
        raise InvalidArgumentError(
            "sweep.objective",
            config.sweep.objective,
            f"an objective that needs no checkpoints (training.checkpoints="
            f"{config.training.checkpoints}; reward_at_kl reads the reward along the run and "
            "needs training.checkpoints >= 2)",
        )
    if config.attribution.amortized_audit_fraction <= 0:
        raise InvalidArgumentError(
            "attribution.amortized_audit_fraction",
            config.attribution.amortized_audit_fraction,
            "a value in (0, 1]",
        )
    if config.sweep.n_initial > config.sweep.n_trials:
        raise InvalidArgumentError(
            "sweep.n_initial",
            config.sweep.n_initial,
            f"at most sweep.n_trials={config.sweep.n_trials}",
        )
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
            raise InvalidArgumentError(
                "config", str(path_or_name), f"an existing YAML file or one of {BUILTIN_CONFIGS}"
            )
        path = builtin_config_path(str(path_or_name))
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise InvalidArgumentError("config", str(path), f"valid YAML ({error})") from None
    return config_from_dict(data)
