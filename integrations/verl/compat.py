"""The verl releases the reward manager supports, checked when the integration is imported.

The manager hands verl ``B x T`` scores through ``RewardManagerBase.assemble_rm_scores``, a
classmethod that ``RewardLoopManager.compute_rm_score`` calls on the reward manager's class. Its
presence is checked on the installed class as well as the version number, since a release can
rename it.
"""

from __future__ import annotations

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from tokenshape.errors import TokenShapeError

__all__ = ["SUPPORTED_VERL", "UnsupportedVerlError", "check_verl_support"]

#: The verl releases whose reward loop the manager was built and tested against.
SUPPORTED_VERL = ">=0.9.1,<0.10"

_INSTALL_HINT = (
    f"install a supported release in an environment of its own: pip install 'verl{SUPPORTED_VERL}' "
    "(see the README's section 'PPO on verl')"
)


class UnsupportedVerlError(TokenShapeError, ImportError):
    """verl is missing, outside :data:`SUPPORTED_VERL`, or lacks the hook the manager needs."""


def check_verl_support(version: str | None = None, manager_base: type | None = None) -> None:
    """Raise unless the installed verl (or the given version and base class) is supported.

    Args:
        version: a verl version string (default: the installed ``verl.__version__``).
        manager_base: the reward-manager base class to inspect (default verl's
            ``RewardManagerBase``).

    Raises:
        UnsupportedVerlError: verl cannot be imported, its version is outside
            :data:`SUPPORTED_VERL`, or its reward-manager base has no ``assemble_rm_scores``.
            The message names the version found and the supported range.
    """
    if version is None:
        try:
            import verl
        except ImportError as error:
            raise UnsupportedVerlError(
                f"tokenshape.integrations.verl needs verl ({error}); {_INSTALL_HINT}"
            ) from error
        version = getattr(verl, "__version__", "unknown")
    try:
        supported = Version(version) in SpecifierSet(SUPPORTED_VERL)
    except InvalidVersion:
        supported = False
    if not supported:
        raise UnsupportedVerlError(
            f"verl {version!r} is installed: expected verl{SUPPORTED_VERL}; {_INSTALL_HINT}"
        )
    if manager_base is None:
        from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

        manager_base = RewardManagerBase
    if not callable(getattr(manager_base, "assemble_rm_scores", None)):
        raise UnsupportedVerlError(
            f"verl {version}: {manager_base.__name__} has no assemble_rm_scores, which the "
            f"tokenshape reward manager overrides to lay out token rewards; {_INSTALL_HINT}"
        )
