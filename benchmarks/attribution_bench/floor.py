"""The floor: seconds per row of the reward model alone under ``torch.inference_mode``."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attribution_bench.sequences import Sequence
from attribution_bench.settings import Settings


@dataclass
class Floor:
    """Per-row seconds of the reward model alone.

    Attributes:
        sweep: ``width -> {batch size: seconds per row}``.
        best: ``width -> (best batch size, seconds per row)``.
        grid: ``(width, seconds per row at the best batch size)``, sorted, for interpolation.
    """

    sweep: dict[int, dict[int, float]] = field(default_factory=dict)
    best: dict[int, tuple[int, float]] = field(default_factory=dict)
    grid: list[tuple[int, float]] = field(default_factory=list)

    def row_seconds(self, width: int) -> float:
        widths, seconds = zip(*self.grid)
        if width in self.best:
            return self.best[width][1]
        return float(np.interp(width, widths, seconds))

    def best_batch(self, width: int) -> int:
        nearest = min(self.best, key=lambda w: abs(w - width))
        return self.best[nearest][0]

    def seconds_of(self, shapes: Counter) -> float:
        """Floor time of forwards ``(rows, width) -> count``."""
        return sum(
            rows * count * self.row_seconds(width) for (rows, width), count in shapes.items()
        )


def timed_rows(model: Any, ids: Tensor, batch: int, n_rows: int, synchronize: bool) -> float:
    """Seconds per row for ``n_rows`` (rounded up to whole batches) rows in batches of ``batch``."""
    mask = torch.ones_like(ids[:batch])
    n_batches = max(1, math.ceil(n_rows / batch))
    with torch.inference_mode():
        model(input_ids=ids[:batch], attention_mask=mask)  # warm-up
        if synchronize:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for k in range(n_batches):
            chunk = ids[(k * batch) % ids.shape[0] :][:batch]
            if chunk.shape[0] < batch:
                chunk = ids[:batch]
            model(input_ids=chunk, attention_mask=mask).logits.float().cpu()
        if synchronize:
            torch.cuda.synchronize()
    return (time.perf_counter() - start) / (n_batches * batch)


def masked_rows(sequence: Sequence, n_rows: int, mask_id: int, width: int, seed: int = 0) -> Tensor:
    """``n_rows x width`` rows of a real sequence with random response tokens masked."""
    generator = torch.Generator().manual_seed(seed)
    ids = sequence.input_ids
    if width < ids.shape[0]:  # a shorter row, as the deletion game builds: keep the ends
        ids = torch.cat([ids[: width - 1], ids[-1:]])
    rows = ids.expand(n_rows, -1).clone()
    positions = sequence.response_positions[sequence.response_positions < width - 1]
    hide = torch.rand(n_rows, positions.shape[0], generator=generator) < 0.5
    rows[:, positions] = torch.where(hide, mask_id, rows[:, positions])
    return rows


def measure_floor(
    model: Any,
    sequences: dict[int, Sequence],
    settings: Settings,
    mask_id: int,
    device: torch.device,
    batch_sizes: tuple[int, ...],
    log: Callable[[str], None],
) -> Floor:
    """Time the batch-size sweep at each main width, then a grid of widths at the best size.

    Args:
        sequences: ``width -> a sequence of that width`` (the widths the runs use).
    """
    synchronize = device.type == "cuda"
    floor = Floor()
    pool = max(batch_sizes) * 2
    for width, sequence in sorted(sequences.items()):
        ids = masked_rows(sequence, pool, mask_id, width).to(device)
        floor.sweep[width] = {}
        for batch in batch_sizes:
            times = [
                timed_rows(model, ids, batch, settings.floor_rows, synchronize)
                for _ in range(settings.floor_repeats)
            ]
            floor.sweep[width][batch] = float(np.median(times))
        batch, seconds = min(floor.sweep[width].items(), key=lambda item: item[1])
        floor.best[width] = (batch, seconds)
        log(
            f"floor width {width}: "
            + ", ".join(f"{b}:{s * 1e3:.2f}" for b, s in floor.sweep[width].items())
            + f" ms/row; best {batch}"
        )
    grid = {width: seconds for width, (_, seconds) in floor.best.items()}
    longest = max(sequences)
    widest_sequence = sequences[longest]
    shortest = settings.prompt_tokens + 2
    for width in range(shortest, longest, settings.floor_width_step):
        if width in grid:
            continue
        batch = floor.best_batch(width)
        ids = masked_rows(widest_sequence, pool, mask_id, width).to(device)
        times = [
            timed_rows(model, ids, batch, settings.floor_rows, synchronize)
            for _ in range(settings.floor_repeats)
        ]
        grid[width] = float(np.median(times))
    floor.grid = sorted(grid.items())
    log("floor grid: " + ", ".join(f"{w}:{s * 1e3:.2f}" for w, s in floor.grid) + " ms/row")
    return floor


def recheck_floor(
    model: Any,
    floor: Floor,
    records: list[dict[str, Any]],
    sequence: Sequence,
    width: int,
    *,
    settings: Settings,
    mask_id: int,
    device: torch.device,
) -> float:
    """The floor at ``width`` again, after a section: the machine's drift while it ran.

    Adds ``floor_ratio_after`` (the ratio against the re-measured floor) to ``records``.

    Returns:
        Seconds per row re-measured.
    """
    batch = floor.best_batch(width)
    ids = masked_rows(sequence, 2 * batch, mask_id, width).to(device)
    again = [
        timed_rows(model, ids, batch, settings.floor_rows, device.type == "cuda")
        for _ in range(settings.floor_repeats)
    ]
    after = float(np.median(again))
    for record in records:
        record["floor_ratio_after"] = record["floor_ratio"] * floor.row_seconds(width) / after
    return after
