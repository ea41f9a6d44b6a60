"""Every coalition's value of the fidelity sequences, as arrays a process without torch can read.

Coalition ``c`` (an integer in ``[0, 2^M)``) keeps response unit ``i`` when bit ``i`` of ``c`` is
set. The arrays come from the row tables the exact passes record (:func:`row_key` of each row),
so they hold the reward model's own values; they are saved next to the results
(``attribution_games.npz``) and are what the estimators of another environment play on
(:mod:`attribution_bench.peers.shapiq_current`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attribution_bench.lookup_games import coalition_keep
from attribution_bench.sequences import Sequence


def row_key(sequence: Sequence, keep: np.ndarray, *, mask_id: int, remove: bool) -> bytes:
    """The recorded-table key of the row that shows the kept response units.

    Matches :func:`attribution_bench.rewards.row_keys`: the attended token ids as int64 bytes.
    Hidden units become ``mask_id``, or are deleted when ``remove``.
    """
    ids = sequence.input_ids.numpy().astype(np.int64)
    positions = sequence.response_positions.numpy()
    hidden = positions[~keep]
    if remove:
        return np.delete(ids, hidden).tobytes()
    shown = ids.copy()
    shown[hidden] = mask_id
    return shown.tobytes()


def coalition_values(
    table: dict[bytes, float], sequence: Sequence, *, mask_id: int, remove: bool
) -> np.ndarray:
    """``2^M`` float64: every coalition's value, read from a recorded row table."""
    keep = coalition_keep(int(sequence.response_positions.shape[0]))
    try:
        return np.array(
            [table[row_key(sequence, k, mask_id=mask_id, remove=remove)] for k in keep],
            dtype=np.float64,
        )
    except KeyError as error:
        raise RuntimeError("a coalition of the fidelity set is missing from the table") from error


def row_table(
    values: np.ndarray, sequences: list[Sequence], *, mask_id: int, remove: bool
) -> dict[bytes, float]:
    """The recorded row table again, from ``values`` (``R x 2^M``) of ``sequences``."""
    table: dict[bytes, float] = {}
    for sequence, row in zip(sequences, values):
        keep = coalition_keep(int(sequence.response_positions.shape[0]))
        for k, value in zip(keep, row.tolist()):
            table[row_key(sequence, k, mask_id=mask_id, remove=remove)] = value
    return table


def save_games(path: Path, **arrays: np.ndarray) -> None:
    """Write the arrays (e.g. ``values_mask``, ``exact_mask``, ``reviews``) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def load_games(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {name: data[name] for name in data.files}
