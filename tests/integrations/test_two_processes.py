"""ShapedGRPOTrainer in two CPU processes, each prompt group straddling both of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("two_process_run.py")


def test_two_processes_share_group_statistics_and_weights(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*command, str(SCRIPT), str(tmp_path)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert all(r["all_changed"] for r in ranks)
    # Gradients were averaged across the processes: both hold the same weights.
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-12)
    for step in range(2):
        batches = [r["batches"][step] for r in ranks]
        assert all(b["zero_off_mask"] and b["shape"][0] == 2 for b in batches)
        # One group of four completions, two rows on each process: its advantages, normalised
        # over the whole group, sum to zero only when both halves are counted.
        means = batches[0]["row_means"] + batches[1]["row_means"]
        assert sum(means) == pytest.approx(0.0, abs=1e-5)
        assert abs(sum(batches[0]["row_means"])) > 1e-4
