"""The TRL hooks the shaped trainer relies on, checked when the integration is imported.

:class:`~tokenshape.integrations.trl.ShapedGRPOTrainer` hands ``B x T`` advantages to
``GRPOTrainer._compute_loss``, which accepts them through its ``advantages.dim() == 1`` branch, and
overrides ``_generate_and_score_completions`` and ``_calculate_rewards``. Those are private
methods: a TRL release can change them without notice, so their presence is checked from the
installed source rather than from the version number alone.
"""

from __future__ import annotations

import inspect

from tokenshape.errors import TokenShapeError

__all__ = ["SUPPORTED_TRL", "UnsupportedTRLError", "check_trl_support"]

#: The TRL releases whose GRPO trainer has the hooks (its override has kept its signature since
#: trl 0.29).
SUPPORTED_TRL = ">=0.29,<2"

_DENSE_BRANCH = "advantages.dim()==1"
_OVERRIDDEN = ("_generate_and_score_completions", "_calculate_rewards")


class UnsupportedTRLError(TokenShapeError, ImportError):
    """The installed TRL lacks a hook the shaped GRPO trainer needs."""


def _fail(trainer_cls: type, version: str, missing: str) -> UnsupportedTRLError:
    return UnsupportedTRLError(
        f"trl {version}: {trainer_cls.__name__} {missing}, which tokenshape's ShapedGRPOTrainer "
        f"needs; install a supported release: pip install 'trl{SUPPORTED_TRL}'"
    )


def check_trl_support(trainer_cls: type | None = None) -> None:
    """Raise unless ``trainer_cls`` (default ``trl.GRPOTrainer``) has the hooks the shaped trainer uses.

    Args:
        trainer_cls: the GRPO trainer class to inspect.

    Raises:
        UnsupportedTRLError: a method to override is missing, or the source of ``_compute_loss``
            no longer has the branch that accepts ``B x T`` advantages. The message names the
            installed version and :data:`SUPPORTED_TRL`.
    """
    import trl

    if trainer_cls is None:
        trainer_cls = trl.GRPOTrainer
    version = getattr(trl, "__version__", "unknown")
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
