"""Chunked evaluation of many rows through a reward function, with a row counter.

Rows are built lazily chunk by chunk, so memory is bounded by the chunk, not by the number of
coalitions. On CUDA an out-of-memory error halves the chunk and retries the same rows (every
chunked path: coalition values and the attention method's forwards).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

from tokenshape.errors import InvalidArgumentError
from tokenshape.reward import RewardFn, check_reward_output

__all__ = ["ChunkedEvaluator", "default_chunk_rows"]

#: Rows per forward when none is given. On this project's reference CPU, batches of 8-16 rows
#: were faster per row than 64-128 (benchmarks/attribution.py measures it).
T = TypeVar("T")

_CPU_CHUNK_ROWS = 16
_CUDA_CHUNK_ROWS = 512


def default_chunk_rows(device: torch.device) -> int:
    """The default rows per forward on ``device``."""
    return _CUDA_CHUNK_ROWS if device.type == "cuda" else _CPU_CHUNK_ROWS


class ChunkedEvaluator:
    """Evaluates rows through ``reward_fn`` in bounded chunks and counts the rows it forwards.

    Args:
        reward_fn: ``(input_ids B x L, attention_mask B x L) -> B``.
        max_rows: rows per forward at most.
        max_tokens: rows x columns per forward at most (None: no token bound).
        name: the reward function's name in error messages.
    """

    def __init__(
        self,
        reward_fn: RewardFn,
        *,
        max_rows: int,
        max_tokens: int | None = None,
        name: str = "reward_fn",
    ) -> None:
        if not isinstance(max_rows, int) or max_rows < 1:
            raise InvalidArgumentError("max_rows", max_rows, "an int >= 1")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise InvalidArgumentError("max_tokens", max_tokens, "None or an int >= 1")
        self.reward_fn = reward_fn
        self.max_rows = max_rows
        self.max_tokens = max_tokens
        self.name = name
        self.rows = 0

    def chunk_rows(self, width: int) -> int:
        """Rows per forward for rows ``width`` tokens wide."""
        rows = self.max_rows
        if self.max_tokens is not None:
            rows = min(rows, max(1, self.max_tokens // max(width, 1)))
        return rows

    def map_chunks(self, n_rows: int, width: int, run: Callable[[int, int], T]) -> list[T]:
        """Run ``run(start, stop)`` over rows ``0..n_rows-1`` in chunks, counting the rows.

        On CUDA an out-of-memory error halves the chunk and retries the same rows; the cache is
        emptied after the error is handled, once its traceback no longer holds the failed
        forward's tensors.

        Args:
            n_rows: how many rows.
            width: the widest row, for the token bound.
            run: ``(start, stop) -> result`` of rows ``start..stop-1``.

        Returns:
            The results of the chunks, in order.
        """
        out: list[T] = []
        chunk = self.chunk_rows(width)
        start = 0
        while start < n_rows:
            stop = min(start + chunk, n_rows)
            out_of_memory = False
            try:
                out.append(run(start, stop))
            except torch.cuda.OutOfMemoryError:
                if stop - start == 1:
                    raise
                out_of_memory = True
            if out_of_memory:
                chunk = max(1, (stop - start) // 2)
                torch.cuda.empty_cache()
                continue
            self.rows += stop - start
            start = stop
        return out

    def evaluate(
        self,
        n_rows: int,
        width: int,
        build: Callable[[int, int], tuple[Tensor, Tensor]],
    ) -> Tensor:
        """Evaluate ``n_rows`` rows that ``build(start, stop)`` produces on demand.

        Args:
            n_rows: how many rows.
            width: the widest row, for the token bound.
            build: ``(start, stop) -> (input_ids, attention_mask)`` of rows ``start..stop-1``.

        Returns:
            Tensor[n_rows] float64: the reward of each row, on the reward function's device.
        """

        def run(start: int, stop: int) -> Tensor:
            values = self.reward_fn(*build(start, stop))
            return check_reward_output(values, stop - start, name=self.name)

        out = self.map_chunks(n_rows, width, run)
        if not out:
            return torch.zeros(0, dtype=torch.float64)
        return torch.cat(out)
