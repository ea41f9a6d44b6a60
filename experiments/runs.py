"""A run's full specification, recorded with its result, so a resumed job never mixes runs.

An inner run writes ``result.json`` with a ``spec``: the whole config, the exact blend weights
and the training seed. A resumed sweep or comparison reuses a finished run only when its recorded
spec equals the one it would run now; anything else (other steps, learning rate, weights,
evaluation prompts) is a different run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tokenshape.errors import TokenShapeError
from tokenshape.experiments.config import ExperimentConfig, config_to_dict
from tokenshape.shaping.params import ShapingParams

__all__ = ["RESULT_FILE", "RunMismatchError", "finished_result", "run_spec", "write_json"]

RESULT_FILE = "result.json"


class RunMismatchError(TokenShapeError):
    """A folder holds a finished run of another specification than the one asked for."""


def run_spec(config: ExperimentConfig, params: ShapingParams, seed: int) -> dict[str, Any]:
    """What determines an inner run: the config, the weights (exact floats) and the seed."""
    return {
        "config": config_to_dict(config),
        "weights": {name: float(w) for name, w in params.weights.items()},
        "normalization": params.normalization,
        "seed": int(seed),
    }


def _differences(recorded: Any, wanted: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two specs differ."""
    if isinstance(recorded, dict) and isinstance(wanted, dict):
        found = []
        for key in sorted(set(recorded) | set(wanted), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            found += _differences(recorded.get(key), wanted.get(key), path)
        return found
    return [] if recorded == wanted else [f"{prefix}: {recorded!r} -> {wanted!r}"]


def finished_result(folder: Path, spec: dict[str, Any]) -> dict[str, Any] | None:
    """The recorded result in ``folder`` if it is a finished run of ``spec``.

    Returns:
        The result, or ``None`` when the folder holds no finished run.

    Raises:
        RunMismatchError: the folder holds a finished run of another spec (or one without a
            spec); the message lists what differs.
    """
    path = Path(folder) / RESULT_FILE
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    recorded = result.get("spec")
    if recorded == spec:
        return result
    differences = (
        ["the run records no spec (made before specs were recorded)"]
        if recorded is None
        else _differences(recorded, spec)
    )
    raise RunMismatchError(
        f"{path} is a finished run of another specification: " + "; ".join(differences[:8])
    )


def write_json(path: Path, record: Any) -> None:
    """Write JSON beside ``path`` and move it into place: a killed write leaves no half file."""
    staging = path.with_name(path.name + ".writing")
    staging.write_text(json.dumps(record, indent=2))
    os.replace(staging, path)
