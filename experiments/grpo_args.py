"""The ``grpo:`` section of a config: further fields of TRL's ``GRPOConfig``, checked and applied.

tokenshape's own sections set some ``GRPOConfig`` fields (the steps, the batch, the learning rate,
...); those are refused in ``grpo:`` so a value is never set in two places. Every other field of
``GRPOConfig`` may be given; its value is checked against the field's type annotation here and then
by ``GRPOConfig`` itself when it is built. A few defaults differ from TRL's (``loss_type: dapo``,
no checkpoints, no progress bar of its own, no logging service) and may be overridden.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tokenshape.errors import InvalidArgumentError

__all__ = ["OWNED_FIELDS", "check_grpo_fields", "grpo_config"]

#: ``GRPOConfig`` fields set from tokenshape's sections, with the config field that sets them.
OWNED_FIELDS = {
    "output_dir": "the run folder (--out, --study-dir)",
    "use_cpu": "the CPU run of the experiment commands",
    "max_steps": "training.steps",
    "per_device_train_batch_size": "training.batch_size",
    "num_generations": "training.num_generations",
    "max_completion_length": "training.max_completion_length",
    "learning_rate": "training.learning_rate",
    "beta": "training.beta",
    "temperature": "training.temperature",
    "seed": "seed",
    "logging_steps": "the learning curve (one log entry per step)",
}

#: tokenshape's defaults for fields that ``grpo:`` may override. ``dapo`` normalises the loss by
#: the tokens of the whole batch, so token advantages that grow with length don't weigh long
#: completions more (DESIGN.md section 2).
DEFAULTS = {
    "loss_type": "dapo",
    "report_to": "none",
    "save_strategy": "no",
    "disable_tqdm": True,
}


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits a field annotation; annotations it cannot read are left to TRL."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, option) for option in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if origin is not None:
        return isinstance(origin, type) and isinstance(value, origin)
    if not isinstance(hint, type):
        return True
    if hint is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if hint is float:
        return isinstance(value, int | float)
    if issubclass(hint, enum.Enum):
        return isinstance(value, str | hint)
    return isinstance(value, hint)


def check_grpo_fields(grpo: Mapping[str, Any]) -> dict[str, Any]:
    """Check the ``grpo:`` section field by field; returns it with ints made floats where due.

    Raises:
        InvalidArgumentError: naming ``grpo.<field>`` for a field ``GRPOConfig`` does not have, one
            tokenshape's sections set, or a value of the wrong type.
    """
    from trl import GRPOConfig

    hints = typing.get_type_hints(GRPOConfig)
    known = {spec.name for spec in dataclasses.fields(GRPOConfig) if spec.init}
    checked = {}
    for name, value in grpo.items():
        path = f"grpo.{name}"
        if name in OWNED_FIELDS:
            raise InvalidArgumentError(
                path, value, f"no value here: it is set by {OWNED_FIELDS[name]}"
            )
        if name not in known:
            raise InvalidArgumentError(path, value, "a field of trl.GRPOConfig")
        hint = hints[name]
        if not _matches(value, hint):
            raise InvalidArgumentError(path, value, f"a value of type {hint} (trl.GRPOConfig)")
        floats = hint is float or float in typing.get_args(hint)
        is_int = isinstance(value, int) and not isinstance(value, bool)
        checked[name] = float(value) if floats and is_int else value
    return checked


def grpo_config(config, output_dir: str | Path, *, seed: int | None = None) -> Any:
    """TRL's ``GRPOConfig`` of one inner run of ``config`` (an ``ExperimentConfig``).

    ``seed`` is the run's training seed (``config.seed`` when ``None``).

    Raises:
        InvalidArgumentError: naming ``grpo`` when ``GRPOConfig`` refuses the combination.
    """
    from trl import GRPOConfig

    training = config.training
    owned = {
        "output_dir": str(output_dir),
        "use_cpu": True,
        "max_steps": training.steps,
        "per_device_train_batch_size": training.batch_size,
        "num_generations": training.num_generations,
        "max_completion_length": training.max_completion_length,
        "learning_rate": training.learning_rate,
        "beta": training.beta,
        "temperature": training.temperature,
        "seed": config.seed if seed is None else seed,
        "logging_steps": 1,
    }
    fields = {**DEFAULTS, **check_grpo_fields(config.grpo), **owned}
    try:
        return GRPOConfig(**fields)
    except (TypeError, ValueError) as error:
        raise InvalidArgumentError(
            "grpo", dict(config.grpo), f"fields trl.GRPOConfig accepts ({error})"
        ) from None
