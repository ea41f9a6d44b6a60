"""The reward manager's settings, read from verl's trainer config under ``reward.tokenshape``.

Set them with Hydra overrides (``+`` adds keys verl's schema does not have)::

    +reward.tokenshape.reward_model_path=/models/rm
    +reward.tokenshape.weights='{kernel_shap: 0.5, sparse: 0.5}'
    +reward.tokenshape.budget=64

Every key is checked before the reward model is loaded; an error names the key
(``reward.tokenshape.<key>``), the value and what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from tokenshape.completions import CompletionShaping
from tokenshape.errors import InvalidArgumentError
from tokenshape.shaping import ShapingParams

__all__ = ["CONFIG_KEY", "VerlShapingConfig"]

#: Where the settings live in verl's trainer config.
CONFIG_KEY = "reward.tokenshape"

_DEFAULT_WEIGHTS = {"kernel_shap": 0.5, "sparse": 0.5}


def _key(name: str) -> str:
    return f"{CONFIG_KEY}.{name}"


def _plain(value: Any) -> Any:
    """An OmegaConf container as plain dicts and lists; anything else unchanged."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf comes with verl
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _check_int(name: str, value: Any, minimum: int, *, optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        expected = f"an int >= {minimum}"
        raise InvalidArgumentError(
            _key(name), value, f"None or {expected}" if optional else expected
        )


@dataclass(frozen=True, kw_only=True)
class VerlShapingConfig:
    """How the ``tokenshape`` reward manager scores, explains and shapes each trajectory.

    Args:
        reward_model_path: a folder (or hub id) of a Hugging Face sequence classifier and its fast
            tokenizer; None falls back to ``reward.reward_model.model_path``.
        weights: signal -> weight on the simplex; a signal is an attribution method's name
            (``"kernel_shap"``, ``"attention"``, ...), a name from ``methods``, or ``"sparse"``.
            ``{"sparse": 1}`` reproduces verl's default assembly exactly.
        normalization: how signed attributions become shares (see
            :class:`~tokenshape.shaping.ShapingParams`).
        methods: extra signal name -> attribution method name.
        budget: reward-model rows per trajectory for each sampling method (None: its default).
        seed: the attribution seed.
        unit: the players of the attribution game, one of
            :data:`~tokenshape.completions.SHAPED_UNITS`.
        masking: how hidden units are hidden (see :func:`tokenshape.attribute`).
        max_rows: reward-model rows per forward at most (None: the device's default).
        max_length: reward-model tokens per row at most (None: the tokenizer's limit).
        label: the scored logit of the classifier.
        minus_label: a logit subtracted from it (e.g. negative from positive), or None.
        chat_template: render conversational prompts (verl's ``raw_prompt``) with the reward
            tokenizer's chat template when it has one.
    """

    reward_model_path: str | None = None
    weights: Mapping[str, float] = field(default_factory=lambda: dict(_DEFAULT_WEIGHTS))
    normalization: str = "sum"
    methods: Mapping[str, str] = field(default_factory=dict)
    budget: int | None = None
    seed: int = 0
    unit: str = "token"
    masking: str | int = "auto"
    max_rows: int | None = None
    max_length: int | None = None
    label: int = 0
    minus_label: int | None = None
    chat_template: bool = True

    def __post_init__(self) -> None:
        path = self.reward_model_path
        if path is not None and (not isinstance(path, str) or not path):
            raise InvalidArgumentError(_key("reward_model_path"), path, "a model folder or None")
        self.completion_shaping()
        _check_int("minus_label", self.minus_label, 0, optional=True)
        _check_int("label", self.label, 0, optional=False)

    def shaping_params(self) -> ShapingParams:
        """The weights and normalization as :class:`~tokenshape.shaping.ShapingParams`."""
        if not isinstance(self.weights, Mapping):
            raise InvalidArgumentError(
                _key("weights"), self.weights, "a dict of signal name -> weight"
            )
        try:
            return ShapingParams(dict(self.weights), normalization=self.normalization)
        except InvalidArgumentError as error:
            raise InvalidArgumentError(_key(error.name), error.value, error.expected) from error

    def completion_shaping(self) -> CompletionShaping:
        """The settings of the shared core, :class:`~tokenshape.completions.CompletionShaping`.

        Raises:
            InvalidArgumentError: a bad setting, named by its key (``reward.tokenshape.<key>``).
        """
        params = self.shaping_params()
        methods = self.methods
        try:
            return CompletionShaping(
                params=params,
                methods=dict(methods) if isinstance(methods, Mapping) else methods,
                budget=self.budget,
                seed=self.seed,
                unit=self.unit,
                masking=self.masking,
                max_rows=self.max_rows,
                max_length=self.max_length,
                chat_template=self.chat_template,
            )
        except InvalidArgumentError as error:
            raise InvalidArgumentError(
                _key(error.name.removeprefix("params.")), error.value, error.expected
            ) from error

    @classmethod
    def from_trainer_config(cls, config: Any) -> VerlShapingConfig:
        """Read ``reward.tokenshape`` from verl's trainer config (a DictConfig or a dict).

        An unset ``reward_model_path`` falls back to ``reward.reward_model.model_path``.

        Raises:
            InvalidArgumentError: an unknown key, a bad value, or no reward model path at all.
        """
        reward = _plain(_get(config, "reward")) or {}
        section = reward.get("tokenshape") or {}
        if not isinstance(section, Mapping):
            raise InvalidArgumentError(CONFIG_KEY, section, "a mapping of settings")
        known = [f.name for f in fields(cls)]
        for name in section:
            if name not in known:
                raise InvalidArgumentError(
                    _key(str(name)), section[name], f"a known setting, one of {known}"
                )
        settings = dict(section)
        if settings.get("reward_model_path") is None:
            settings["reward_model_path"] = (reward.get("reward_model") or {}).get("model_path")
        if settings["reward_model_path"] is None:
            raise InvalidArgumentError(
                _key("reward_model_path"),
                None,
                "the folder of a sequence-classifier reward model (or set "
                "reward.reward_model.model_path)",
            )
        return cls(**settings)


def _get(config: Any, name: str) -> Any:
    if isinstance(config, Mapping):
        return config.get(name)
    return getattr(config, name, None)
