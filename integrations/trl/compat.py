"""The TRL releases and hooks the shaped trainer relies on, checked when the integration is imported.

:class:`~tokenshape.integrations.trl.ShapedGRPOTrainer` depends on these parts of
``trl.GRPOTrainer``, each checked in the sources of trl 1.0 to 1.16 (a release of every minor
version):

- ``_compute_loss`` takes ``B x T`` advantages through its ``advantages.dim() == 1`` branch
  (present since 0.29);
- ``_generate`` returns the tool mask third, ``_calculate_rewards(inputs, prompts, completions,
  completion_ids_list)`` returns the gathered ``N x K`` rewards, and
  ``_generate_and_score_completions`` returns the ``B`` advantages it computed from them; the
  trainer overrides the three;
- those advantages follow the formula :func:`~tokenshape.integrations.trl.advantages.
  shaped_advantage_part` splits: the NaN-aware group mean and standard deviation, epsilon 1e-4,
  ``scale_rewards`` one of ``"group"``, ``"batch"``, ``"none"`` and ``multi_objective_aggregation``
  one of ``"sum_then_normalize"``, ``"normalize_then_sum"``. Releases before 1.6 centred with a
  plain mean, so :data:`SUPPORTED_TRL` starts at 1.6;
- the attributes ``num_generations``, ``num_generations_eval``, ``scale_rewards``,
  ``multi_objective_aggregation``, ``reward_weights`` and ``reward_funcs``.

From 1.6 to 1.13, ``use_liger_kernel=True`` sends the loss to ``compute_liger_loss``, which hands
``inputs["advantages"]`` to Liger's fused loss as one value per sequence;
:func:`check_trainer_settings` refuses that combination. From 1.14 Liger only computes the log
probabilities and the loss is ``_compute_loss``'s.
"""

from __future__ import annotations

import inspect

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from tokenshape.errors import InvalidArgumentError, TokenShapeError

__all__ = ["SUPPORTED_TRL", "UnsupportedTRLError", "check_trainer_settings", "check_trl_support"]

#: The TRL releases the shaped GRPO trainer supports.
SUPPORTED_TRL = ">=1.6,<2"

_DENSE_BRANCH = "advantages.dim()==1"
_OVERRIDDEN = ("_generate", "_calculate_rewards", "_generate_and_score_completions")
_ATTRIBUTES = (
    "num_generations",
    "num_generations_eval",
    "scale_rewards",
    "multi_objective_aggregation",
    "reward_weights",
    "reward_funcs",
)
_SETTINGS = {
    "scale_rewards": ("group", "batch", "none"),
    "multi_objective_aggregation": ("sum_then_normalize", "normalize_then_sum"),
}


class UnsupportedTRLError(TokenShapeError, ImportError):
    """The installed TRL is outside :data:`SUPPORTED_TRL` or lacks a hook the trainer needs."""


def _fail(trainer_cls: type, version: str, missing: str) -> UnsupportedTRLError:
    return UnsupportedTRLError(
        f"trl {version}: {trainer_cls.__name__} {missing}, which tokenshape's ShapedGRPOTrainer "
        f"needs; install a supported release: pip install 'trl{SUPPORTED_TRL}'"
    )


def check_trl_support(trainer_cls: type | None = None, *, version: str | None = None) -> None:
    """Raise unless TRL's version is in :data:`SUPPORTED_TRL` and ``trainer_cls`` has the hooks.

    Args:
        trainer_cls: the GRPO trainer class to inspect (default ``trl.GRPOTrainer``).
        version: the TRL version to compare (default ``trl.__version__``).

    Raises:
        UnsupportedTRLError: the version is outside the range, a method to override is missing,
            or the source of ``_compute_loss`` no longer has the branch that accepts ``B x T``
            advantages. The message names the version and :data:`SUPPORTED_TRL`.
    """
    import trl

    if trainer_cls is None:
        trainer_cls = trl.GRPOTrainer
    version = version if version is not None else getattr(trl, "__version__", "unknown")
    try:
        supported = Version(version) in SpecifierSet(SUPPORTED_TRL)
    except InvalidVersion:
        supported = False
    if not supported:
        raise _fail(trainer_cls, version, f"is not a release in {SUPPORTED_TRL}")
    for name in _OVERRIDDEN:
        if not callable(getattr(trainer_cls, name, None)):
            raise _fail(trainer_cls, version, f"has no method {name}")
    compute_loss = getattr(trainer_cls, "_compute_loss", None)
    try:
        source = inspect.getsource(inspect.unwrap(compute_loss))
    except (OSError, TypeError):
        raise _fail(trainer_cls, version, "has no readable _compute_loss") from None
    if _DENSE_BRANCH not in "".join(source.split()):
        raise _fail(
            trainer_cls, version, "has a _compute_loss without the branch for (B, T) advantages"
        )


def check_trainer_settings(trainer) -> None:
    """Raise unless a constructed GRPO trainer has the attributes and settings the shaped one reads.

    Args:
        trainer: a ``trl.GRPOTrainer`` after its ``__init__``.

    Raises:
        UnsupportedTRLError: an attribute is missing or has a value this integration does not know.
        InvalidArgumentError: ``use_liger_kernel=True`` on a release whose Liger loss reads one
            advantage per sequence.
    """
    import trl

    version = getattr(trl, "__version__", "unknown")
    for name in _ATTRIBUTES:
        if not hasattr(trainer, name):
            raise _fail(type(trainer), version, f"has no attribute {name}")
    for name, known in _SETTINGS.items():
        if getattr(trainer, name) not in known:
            raise _fail(
                type(trainer), version, f"has {name}={getattr(trainer, name)!r}, not one of {known}"
            )
    liger = getattr(getattr(trainer, "args", None), "use_liger_kernel", False)
    if liger and callable(getattr(trainer, "compute_liger_loss", None)):
        raise InvalidArgumentError(
            "use_liger_kernel",
            True,
            f"False with trl {version}, whose Liger GRPO loss takes one advantage per sequence "
            "(trl >= 1.14 computes the loss itself and accepts it)",
        )
