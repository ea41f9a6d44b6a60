"""The policy and the reward of an experiment: built-in models, the user's folders, a Python function.

``policy.model`` is ``smollm2``, ``tiny``, a folder holding a Hugging Face causal LM and its
tokenizer, or a hub id (where a hub is reachable). ``reward.model`` is ``minilm_sentiment``,
``vader``, a folder holding an ``AutoModelForSequenceClassification`` (encoder or decoder) and its
tokenizer, scored as ``logits[:, reward.label] - logits[:, reward.minus_label]``, or
``python:package.module:function``, a function from a list of strings to a list of floats that
reads the policy's tokens. The reward tokenizer may differ from the policy's.

:func:`check_sources` reads what can be checked without loading weights (configs, tokenizers,
prompt files, the Python function on two texts, TRL's ``GRPOConfig``), so a bad config fails in
seconds, before any model trains.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Callable
from numbers import Real
from pathlib import Path
from typing import Any

from tokenshape.errors import InvalidArgumentError, MissingModelError
from tokenshape.experiments.config import (
    BUILTIN_POLICIES,
    BUILTIN_REWARDS,
    PYTHON_PREFIX,
    ExperimentConfig,
)
from tokenshape.reward import RewardFn, SequenceClassifierReward, StringScorerReward

__all__ = [
    "check_sources",
    "import_python_reward",
    "load_classifier_reward",
    "load_policy_source",
    "load_reward",
]

#: The texts a ``python:`` reward is tried on before anything is loaded.
PROBE_TEXTS = ("The movie was wonderful.", "I did not like it")

_CAUSAL_LM = "a Hugging Face causal LM (AutoModelForCausalLM)"
_CLASSIFIER = "a sequence classifier (AutoModelForSequenceClassification)"
#: Above this, a tokenizer's ``model_max_length`` is transformers' "no limit" sentinel.
_NO_LENGTH_LIMIT = 2**40


def _where(source: str) -> str:
    """What ``from_pretrained`` is given: the folder (``~`` expanded), else the hub id."""
    path = Path(source).expanduser()
    return str(path) if path.is_dir() else source


def _architecture_names(mapping_names: dict) -> set[str]:
    names: set[str] = set()
    for value in mapping_names.values():
        names.update(value if isinstance(value, tuple | list) else (value,))
    return names


def _model_config(source: str, field: str, kind: str, builtins: tuple[str, ...]) -> Any:
    """The ``config.json`` of a model folder or hub id, or an error naming ``field``."""
    from transformers import AutoConfig

    expected = f"one of {builtins}, a folder holding {kind} and its tokenizer, or a hub id"
    path = Path(source).expanduser()
    if path.exists() and not path.is_dir():
        raise InvalidArgumentError(field, source, f"{expected} (this is a file, not a folder)")
    if path.is_dir() and not (path / "config.json").is_file():
        raise InvalidArgumentError(field, source, f"{expected} (the folder holds no config.json)")
    looks_like_path = source.startswith((".", "/", "~")) or source.count("/") > 1
    if not path.exists() and looks_like_path:
        raise InvalidArgumentError(field, source, f"{expected} (no such folder)")
    try:
        return AutoConfig.from_pretrained(_where(source))
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InvalidArgumentError(field, source, f"{expected} ({reason})") from None


def _check_architecture(config: Any, source: str, field: str, kind: str, names: set[str]) -> None:
    architectures = list(getattr(config, "architectures", None) or [])
    if not any(name in names for name in architectures):
        raise InvalidArgumentError(
            field,
            source,
            f"a folder holding {kind} (its config.json names architectures {architectures})",
        )


def _tokenizer(source: str, field: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(_where(source))
    except (OSError, ValueError, TypeError) as error:
        raise InvalidArgumentError(
            field, source, f"a folder holding a tokenizer beside the model ({error})"
        ) from None


def _with_pad_token(tokenizer: Any, field: str, source: str) -> Any:
    """Padding is told apart by the attention mask; a tokenizer without pad pads with eos."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise InvalidArgumentError(
                field, source, "a model whose tokenizer has a pad or an eos token"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _with_length_limit(tokenizer: Any, model_config: Any) -> Any:
    """A tokenizer that declares no maximum length gets its model's position limit.

    Tokenizers saved without one report a sentinel of about 1e30, which truncation can't take.
    """
    limit = getattr(model_config, "max_position_embeddings", None)
    if limit is not None and getattr(tokenizer, "model_max_length", 0) > _NO_LENGTH_LIMIT:
        tokenizer.model_max_length = limit
    return tokenizer


def _check_policy_source(source: str) -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = _model_config(source, "policy.model", _CAUSAL_LM, BUILTIN_POLICIES)
    names = _architecture_names(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    _check_architecture(config, source, "policy.model", _CAUSAL_LM, names)
    _tokenizer(source, "policy.model")


def _check_classifier(
    source: str,
    label: int,
    minus_label: int | None,
    *,
    field: str,
    label_fields: tuple[str, str],
) -> None:
    """Raise unless ``source`` holds a sequence classifier with the two logits asked for."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    config = _model_config(source, field, _CLASSIFIER, BUILTIN_REWARDS)
    names = _architecture_names(MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES)
    _check_architecture(config, source, field, _CLASSIFIER, names)
    for name, value in ((label_fields[0], label), (label_fields[1], minus_label)):
        if value is not None and not 0 <= value < config.num_labels:
            raise InvalidArgumentError(
                name,
                value,
                f"a logit index in [0, {config.num_labels}) of the classifier in {source}",
            )
    _tokenizer(source, field)


def load_classifier_reward(
    source: str,
    *,
    label: int = 0,
    minus_label: int | None = None,
    field: str = "reward.model",
    label_fields: tuple[str, str] = ("reward.label", "reward.minus_label"),
) -> SequenceClassifierReward:
    """A sequence classifier folder (or hub id) and its tokenizer as a reward function.

    The reward is ``logits[:, label]``, minus ``logits[:, minus_label]`` when given. A decoder
    classifier whose tokenizer has no pad token pads with eos, and its config is told so (it reads
    each row at the last token that is not padding).

    Args:
        source: the folder or hub id.
        label: the scored logit.
        minus_label: a logit subtracted, or None.
        field: the config field or option that named ``source``, for errors.
        label_fields: the fields or options that named ``label`` and ``minus_label``.

    Raises:
        InvalidArgumentError: naming the field at fault, before any weight is loaded.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    _check_classifier(source, label, minus_label, field=field, label_fields=label_fields)
    tokenizer = _with_pad_token(_tokenizer(source, field), field, source)
    model = AutoModelForSequenceClassification.from_pretrained(
        _where(source), dtype=torch.float32
    ).eval()
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    tokenizer = _with_length_limit(tokenizer, model.config)
    return SequenceClassifierReward(model, tokenizer, label=label, minus_label=minus_label)


def import_python_reward(target: str, *, field: str = "reward.model") -> Callable:
    """The function named by ``python:package.module:function``, tried on two texts.

    The module is imported with the current folder first on ``sys.path``, so a file beside the
    config (``python:my_rewards:score``) is found.

    Raises:
        InvalidArgumentError: naming ``field`` when the module can't be imported, the name is
            missing or not callable, or calling it on two texts does not return two finite
            numbers.
    """
    spec = target.removeprefix(PYTHON_PREFIX)
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise InvalidArgumentError(field, target, "'python:package.module:function'")
    added = os.getcwd() not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - any import failure is reported the same way
        raise InvalidArgumentError(
            field, target, f"an importable module {module_name!r} ({type(error).__name__}: {error})"
        ) from None
    finally:
        if added:
            sys.path.remove(os.getcwd())
    function = getattr(module, function_name, None)
    if function is None:
        raise InvalidArgumentError(field, target, f"a function {function_name!r} in {module_name}")
    if not callable(function):
        raise InvalidArgumentError(
            field, target, f"a callable (list[str] -> list[float]); found {type(function).__name__}"
        )
    expected = (
        f"a function returning {len(PROBE_TEXTS)} finite numbers for {len(PROBE_TEXTS)} texts"
    )
    try:
        values = function(list(PROBE_TEXTS))
    except Exception as error:  # noqa: BLE001 - the user's function failing is a config error
        raise InvalidArgumentError(
            field, target, f"{expected} (it raised {type(error).__name__}: {error})"
        ) from None
    if hasattr(values, "tolist"):
        values = values.tolist()
    if not isinstance(values, list | tuple) or len(values) != len(PROBE_TEXTS):
        raise InvalidArgumentError(field, target, f"{expected}; it returned {values!r:.100}")
    if not all(
        isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        raise InvalidArgumentError(field, target, f"{expected}; it returned {values!r:.100}")
    return function


def check_sources(config: ExperimentConfig) -> None:
    """Check the policy, reward, prompts and ``grpo:`` fields of ``config`` without loading weights.

    Built-in names are not checked here (a missing cached model says to run ``tokenshape
    prepare`` when it is loaded).

    Raises:
        InvalidArgumentError: naming the config field at fault.
    """
    from tokenshape.experiments.config import BUILTIN_PROMPTS
    from tokenshape.experiments.grpo_args import grpo_config
    from tokenshape.experiments.prompts import read_prompt_rows

    if config.policy.model not in BUILTIN_POLICIES:
        _check_policy_source(config.policy.model)
    reward = config.reward
    if reward.model.startswith(PYTHON_PREFIX):
        import_python_reward(reward.model)
    elif reward.model not in BUILTIN_REWARDS:
        _check_classifier(
            reward.model,
            reward.label or 0,
            reward.minus_label,
            field="reward.model",
            label_fields=("reward.label", "reward.minus_label"),
        )
    for field, source in (("data.train", config.data.train), ("data.eval", config.data.eval)):
        if source is not None and source not in BUILTIN_PROMPTS:
            read_prompt_rows(source, column=config.data.prompt_column, field=field)
    if config.grpo:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            grpo_config(config, folder)


def load_reward(config: ExperimentConfig, policy_tokenizer: Any) -> RewardFn:
    """The reward function the config names; a ``python:`` reward reads ``policy_tokenizer``'s
    tokens (its units are the policy's tokens)."""
    model = config.reward.model
    if model == "minilm_sentiment":
        from tokenshape.models.sentiment import SENTIMENT_LABELS, load_sentiment_reward_model

        classifier, tokenizer = load_sentiment_reward_model()
        positive = SENTIMENT_LABELS.index("positive")
        return SequenceClassifierReward(
            classifier, tokenizer, label=positive, minus_label=1 - positive
        )
    if model == "vader":
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        from tokenshape.models.tiny import minilm_tokenizer

        analyzer = SentimentIntensityAnalyzer()

        def vader(text: str) -> float:
            return analyzer.polarity_scores(text)["compound"]

        return StringScorerReward(vader, minilm_tokenizer(), name="vader")
    if model.startswith(PYTHON_PREFIX):
        function = import_python_reward(model)
        name = getattr(function, "__name__", "python_reward")
        return StringScorerReward(function, policy_tokenizer, batched=True, name=name)
    return load_classifier_reward(
        model, label=config.reward.label or 0, minus_label=config.reward.minus_label
    )


def load_policy_source(config: ExperimentConfig) -> tuple[Any, Any]:
    """The starting policy of ``config`` and its tokenizer (with a pad token).

    The policy is the folder or hub id it is loaded from, or, for ``tiny``, the model itself
    (built in memory with ``config.seed``).

    Raises:
        MissingModelError: ``smollm2`` has not been built by ``tokenshape prepare``.
        InvalidArgumentError: naming ``policy.model`` when it holds no causal LM and tokenizer.
    """
    from transformers import AutoConfig

    from tokenshape.models.policy import policy_path, smollm2_tokenizer

    source = config.policy.model
    if source == "tiny":
        from tokenshape.models.tiny import tiny_llama_policy

        tokenizer = smollm2_tokenizer()
        model = tiny_llama_policy(tokenizer, seed=config.seed)
        return model, _with_length_limit(tokenizer, model.config)
    if source == "smollm2":
        if not (policy_path() / "config.json").is_file():
            raise MissingModelError(
                f"no SmolLM2 policy at {policy_path()}; run `tokenshape prepare` to build it"
            )
        source = str(policy_path())
    else:
        _check_policy_source(source)
    tokenizer = _with_pad_token(_tokenizer(source, "policy.model"), "policy.model", source)
    return _where(source), _with_length_limit(tokenizer, AutoConfig.from_pretrained(_where(source)))
