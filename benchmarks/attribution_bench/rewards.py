"""The reward every method calls: a counting wrapper, a lookup of recorded rows, a synthetic game."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import torch
from torch import Tensor

from attribution_bench.sequences import Sequence


def row_keys(input_ids: Tensor, attention_mask: Tensor) -> list[bytes]:
    """One key per row: its attended token ids (a row's value depends on nothing else)."""
    ids = input_ids.detach().cpu().long()
    keep = attention_mask.detach().cpu().bool()
    return [row[row_keep].numpy().tobytes() for row, row_keep in zip(ids, keep)]


class CountingReward:
    """A reward function that counts the rows and forwards through it and times them.

    Args:
        inner: ``(input_ids B x L, attention_mask B x L) -> B``; its ``scoring_attention`` is
            passed on when it has one.
        synchronize: wait for CUDA before stopping the clock.

    Attributes:
        rows, calls: rows and forwards since :meth:`reset`.
        seconds: time spent inside ``inner``.
        shapes: ``(rows, width) -> number of forwards`` of that shape.
        record: when a dict, every row's value is stored in it under :func:`row_keys`.
    """

    def __init__(self, inner: Any, *, synchronize: bool = False) -> None:
        self.inner = inner
        self.tokenizer = getattr(inner, "tokenizer", None)
        self.__name__ = getattr(inner, "__name__", type(inner).__name__)
        self.synchronize = synchronize
        self.record: dict[bytes, float] | None = None
        self.reset()

    @property
    def device(self) -> torch.device:
        return torch.device(getattr(self.inner, "device", "cpu"))

    def reset(self) -> None:
        self.rows = 0
        self.calls = 0
        self.seconds = 0.0
        self.shapes: Counter[tuple[int, int]] = Counter()

    def _tally(self, input_ids: Tensor, start: float) -> None:
        if self.synchronize:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        self.rows += input_ids.shape[0]
        self.calls += 1
        self.shapes[(int(input_ids.shape[0]), int(input_ids.shape[1]))] += 1

    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        start = time.perf_counter()
        values = self.inner(input_ids, attention_mask)
        self._tally(input_ids, start)
        if self.record is not None:
            for key, value in zip(row_keys(input_ids, attention_mask), values.tolist()):
                self.record[key] = value
        return values

    def scoring_attention(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        start = time.perf_counter()
        values, attention = self.inner.scoring_attention(input_ids, attention_mask)
        self._tally(input_ids, start)
        return values, attention


class TableReward:
    """Values of rows the model has already scored, looked up by their tokens.

    Args:
        table: :func:`row_keys` key -> reward.
        model_reward: answers ``scoring_attention`` (the attention method needs the model itself).
    """

    def __init__(self, table: dict[bytes, float], model_reward: Any) -> None:
        self.table = table
        self.model_reward = model_reward
        self.tokenizer = model_reward.tokenizer
        self.__name__ = "table"
        self.device = torch.device("cpu")

    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        keys = row_keys(input_ids, attention_mask)
        try:
            return torch.tensor([self.table[key] for key in keys], dtype=torch.float64)
        except KeyError as error:
            raise RuntimeError(
                "a row outside the evaluated coalitions reached the table"
            ) from error

    def scoring_attention(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        values, attention = self.model_reward.scoring_attention(input_ids, attention_mask)
        return values.cpu(), attention.cpu()


class AdditiveReward:
    """A synthetic game, one weight per shown response token: warms methods up at no model cost."""

    def __init__(self, sequence: Sequence, mask_id: int, tokenizer: Any) -> None:
        self.positions = sequence.response_positions
        self.weights = torch.linspace(-1.0, 1.0, self.positions.shape[0], dtype=torch.float64)
        self.mask_id = mask_id
        self.tokenizer = tokenizer
        self.__name__ = "additive"
        self.device = torch.device("cpu")

    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        shown = (input_ids.cpu()[:, self.positions] != self.mask_id).double()
        return shown @ self.weights


class LookupReward:
    """Games given by every coalition's value, played on token rows.

    Row ``[g, t_0, ..., t_{M-1}]`` plays game ``g`` (its first token, never hidden); position
    ``1 + i`` is player ``i``, shown unless it holds ``mask_id``. Coalition ``c`` holds player
    ``i`` when bit ``i`` of ``c`` is set, as in :mod:`attribution_bench.lookup_games`.

    Args:
        values: ``G x 2^M`` float64, game ``g``'s coalition values.
        mask_id: the hidden token.
    """

    def __init__(self, values: Tensor, mask_id: int) -> None:
        self.values = values.to(torch.float64)
        self.mask_id = mask_id
        n_players = int(values.shape[1]).bit_length() - 1
        self.bits = 2 ** torch.arange(n_players)
        self.tokenizer = None
        self.__name__ = "lookup"
        self.device = torch.device("cpu")

    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        ids = input_ids.cpu()
        shown = (ids[:, 1:] != self.mask_id).long()
        return self.values[ids[:, 0], shown @ self.bits]
