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


#: The sweep fields that change what a run records, by objective (the rest shape a study).
_OBJECTIVE_FIELDS = {"reward_at_kl": ("kl_budget",), "reward_minus_kl": ("kl_penalty",)}


def _run_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict with its ``sweep`` section cut to what one run's result depends on."""
    sweep = config.get("sweep")
    if not isinstance(sweep, dict) or "objective" not in sweep:
        return config
    objective = sweep["objective"]
    kept = {"objective": objective}
    kept.update({key: sweep.get(key) for key in _OBJECTIVE_FIELDS.get(objective, ())})
    return {**config, "sweep": kept}


def run_spec(config: ExperimentConfig, params: ShapingParams, seed: int) -> dict[str, Any]:
    """What determines an inner run: the config (of its ``sweep`` section only the objective and
    its KL budget or penalty), the weights (exact floats) and the seed."""
    return {
        "config": _run_settings(config_to_dict(config)),
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
    if isinstance(recorded, dict) and isinstance(recorded.get("config"), dict):
        recorded = {**recorded, "config": _run_settings(recorded["config"])}
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
