"""benchmarks/gpu_check.sh on a machine without a CUDA device: a clear message, nothing run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_without_a_gpu_it_exits_with_a_clear_message():
    done = subprocess.run(
        ["bash", str(SCRIPT)],
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "no CUDA device" in done.stderr
    assert "Nothing was installed or run" in done.stderr


def test_an_unknown_option_is_refused():
    done = subprocess.run(
        ["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 64
    assert "usage" in done.stderr
