"""verl finds the manager by name in a fresh process through the ``verl.plugins`` entry point,
and by module path with ``reward.reward_manager.source=importlib``."""

from __future__ import annotations

import os
import subprocess
import sys

from omegaconf import OmegaConf
from verl.trainer.ppo.reward import resolve_reward_manager_cls

from tokenshape.integrations.verl import TokenShapeRewardManager

_RESOLVE = (
    "from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls\n"
    "try:\n"
    "    cls = get_reward_manager_cls('tokenshape')\n"
    "    print(cls.__module__ + '.' + cls.__qualname__)\n"
    "except ValueError as error:\n"
    "    print(error)\n"
)


def resolve_in_fresh_process(**environment: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", _RESOLVE],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **environment},
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


def test_the_entry_point_registers_the_manager_in_a_fresh_process():
    assert resolve_in_fresh_process() == (
        "tokenshape.integrations.verl.manager.TokenShapeRewardManager"
    )
    # With verl's plugin loading switched off nothing registers it: the entry point does.
    assert resolve_in_fresh_process(VERL_USE_EXTERNAL_PLUGINS="none") == (
        "Unknown reward manager: tokenshape"
    )


def test_source_importlib_resolves_the_manager_by_module_path():
    config = OmegaConf.create(
        {
            "reward": {
                "reward_manager": {
                    "source": "importlib",
                    "name": "TokenShapeRewardManager",
                    "module": {"path": "pkg://tokenshape.integrations.verl"},
                }
            }
        }
    )
    assert resolve_reward_manager_cls(config) is TokenShapeRewardManager


def test_importing_under_an_unsupported_verl_fails_naming_the_range():
    script = (
        "import verl\n"
        "verl.__version__ = '0.8.5'\n"
        "try:\n"
        "    import tokenshape.integrations.verl\n"
        "except ImportError as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "VERL_USE_EXTERNAL_PLUGINS": "none"},
        check=True,
    )
    message = result.stdout.strip().splitlines()[-1]
    assert message.startswith("UnsupportedVerlError verl '0.8.5' is installed")
    assert "verl>=0.9.1,<0.10" in message
