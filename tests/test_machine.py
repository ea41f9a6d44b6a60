"""The machine description written into benchmark and experiment records."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenshape.machine import cpu_model


def test_cpu_model_is_the_model_name_line_of_cpuinfo():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo on this system")
    names = [line for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
    if not names:
        pytest.skip("/proc/cpuinfo names no model")
    assert cpu_model() == names[0].split(":", 1)[1].strip()
