"""A small study run as its own process, for the tests that kill a study or lock it.

Usage: ``python study_process.py FOLDER CALL_LOG HANG_AT N_INITIAL N_TRIALS SEED``

The objective appends one JSON line per call to CALL_LOG (its weights and the seed it ran under),
and on call number HANG_AT (counted from 0 over the whole log) it creates ``CALL_LOG.hanging`` and
sleeps until killed. Pass ``-1`` to never hang. The process prints the ids of the trials it found
interrupted, as JSON, before it starts. Trial ``i`` runs under seed ``SEED + i``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from tokenshape.shaping.params import ShapingParams
from tokenshape.tuning import TrialStore, tune_shaping

SIGNALS = ["sparse", "attention", "kernel_shap"]
TARGET = {"sparse": 0.2, "attention": 0.5, "kernel_shap": 0.3}


def main(
    folder: str, call_log: str, hang_at: int, n_initial: int, n_trials: int, seed: int
) -> None:
    torch.set_num_threads(1)
    log = Path(call_log)

    def objective(params: ShapingParams) -> float:
        call = len(log.read_text().splitlines()) if log.exists() else 0
        entry = {"weights": params.weights, "seed": torch.initial_seed()}
        with open(log, "a") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if call == hang_at:
            Path(f"{call_log}.hanging").touch()
            time.sleep(600)
        return -sum((params.weights[name] - TARGET[name]) ** 2 for name in SIGNALS)

    with TrialStore(folder) as store:
        print(json.dumps({"interrupted": list(store.interrupted)}), flush=True)
        tune_shaping(
            objective,
            SIGNALS,
            n_initial=n_initial,
            n_trials=n_trials,
            seed=seed,
            seed_per_trial=True,
            store=store,
            num_restarts=2,
            raw_samples=32,
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:]))
