"""What a results file records about the machine and the code it measured."""

from __future__ import annotations

import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent


def package_version(name: str) -> str | None:
    """The installed version of ``name``, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_state() -> dict[str, Any]:
    """The commit the run measured and the library files that differed from it."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD").strip(),
        "modified": [
            line for line in git("status", "--porcelain", "--", "tokenshape").splitlines() if line
        ],
    }


def cpu_affinity() -> int | None:
    """Cores this process may run on, where the platform says."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
