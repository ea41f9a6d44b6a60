"""Chunked evaluation and its row counter."""

from __future__ import annotations

import math

import pytest
import torch

from tokenshape.errors import InvalidArgumentError, RewardFunctionError
from tokenshape.evaluation import ChunkedEvaluator, default_chunk_rows


class _Rows:
    """``n`` rows of width ``width``; row r holds the value r in its first column."""

    def __init__(self, n, width):
        self.ids = torch.zeros(n, width, dtype=torch.long)
        self.ids[:, 0] = torch.arange(n)
        self.built: list[tuple[int, int]] = []

    def build(self, start, stop):
        self.built.append((start, stop))
        return self.ids[start:stop], torch.ones(stop - start, self.ids.shape[1], dtype=torch.long)


def _first_column(input_ids, attention_mask):
    return input_ids[:, 0].double() * 0.5


@pytest.mark.parametrize(
    "max_rows,max_tokens,width,expected_chunk",
    [(4, None, 10, 4), (100, None, 10, 100), (4, 25, 10, 2), (4, 5, 10, 1), (4, 1000, 10, 4)],
)
def test_chunks_respect_rows_and_tokens(max_rows, max_tokens, width, expected_chunk):
    rows = _Rows(11, width)
    evaluator = ChunkedEvaluator(_first_column, max_rows=max_rows, max_tokens=max_tokens)
    assert evaluator.chunk_rows(width) == expected_chunk
    values = evaluator.evaluate(11, width, rows.build)
    torch.testing.assert_close(values, torch.arange(11, dtype=torch.float64) * 0.5)
    assert values.dtype == torch.float64
    assert all(stop - start <= expected_chunk for start, stop in rows.built)
    assert rows.built[0][0] == 0 and rows.built[-1][1] == 11
    assert all(a[1] == b[0] for a, b in zip(rows.built, rows.built[1:]))  # contiguous, in order
    assert evaluator.rows == 11


def test_counter_accumulates_and_zero_rows():
    evaluator = ChunkedEvaluator(_first_column, max_rows=3)
    evaluator.evaluate(5, 2, _Rows(5, 2).build)
    evaluator.evaluate(4, 2, _Rows(4, 2).build)
    assert evaluator.rows == 9
    empty = evaluator.evaluate(0, 2, _Rows(0, 2).build)
    assert empty.shape == (0,) and evaluator.rows == 9


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("max_rows", {"max_rows": 0}),
        ("max_rows", {"max_rows": -2}),
        ("max_rows", {"max_rows": 1.5}),
        ("max_tokens", {"max_rows": 4, "max_tokens": 0}),
        ("max_tokens", {"max_rows": 4, "max_tokens": 2.0}),
    ],
)
def test_bad_limits(name, kwargs):
    with pytest.raises(InvalidArgumentError, match=rf"{name}=.*expected"):
        ChunkedEvaluator(_first_column, **kwargs)


def test_default_chunk_rows():
    assert default_chunk_rows(torch.device("cpu")) == 16
    assert default_chunk_rows(torch.device("cuda")) > 16


def test_out_of_memory_halves_the_chunk_and_retries():
    seen = []

    def fussy(input_ids, attention_mask):
        seen.append(input_ids.shape[0])
        if input_ids.shape[0] > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return _first_column(input_ids, attention_mask)

    # 10 rows under a chunk of 16: the retry halves the rows tried, not the nominal chunk.
    evaluator = ChunkedEvaluator(fussy, max_rows=16)
    values = evaluator.evaluate(10, 2, _Rows(10, 2).build)
    torch.testing.assert_close(values, torch.arange(10, dtype=torch.float64) * 0.5)
    assert seen == [10, 5, 2, 2, 2, 2, 2]  # failed rows are not counted
    assert evaluator.rows == 10


def test_out_of_memory_at_one_row_is_raised():
    def never(input_ids, attention_mask):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    evaluator = ChunkedEvaluator(never, max_rows=4)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        evaluator.evaluate(3, 2, _Rows(3, 2).build)
    assert evaluator.rows == 0


def test_bad_output_names_the_reward_function():
    def nan_at_four(input_ids, attention_mask):
        values = input_ids[:, 0].double()
        return torch.where(values == 4, math.nan, values)

    evaluator = ChunkedEvaluator(nan_at_four, max_rows=3, name="my_reward")
    with pytest.raises(
        RewardFunctionError, match=r"my_reward returned non-finite values \[nan\] at rows \[1\]"
    ):
        evaluator.evaluate(6, 2, _Rows(6, 2).build)
    assert evaluator.rows == 3  # the first chunk was fine


def test_the_cache_is_emptied_after_the_out_of_memory_handler(monkeypatch):
    # Inside the except block the traceback still holds the failed forward's tensors.
    import sys

    states = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: states.append(sys.exc_info()[0]))

    def fussy(input_ids, attention_mask):
        if input_ids.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return _first_column(input_ids, attention_mask)

    values = ChunkedEvaluator(fussy, max_rows=8).evaluate(4, 2, _Rows(4, 2).build)
    torch.testing.assert_close(values, torch.arange(4, dtype=torch.float64) * 0.5)
    assert states == [None]


def test_attention_halves_its_chunk_on_out_of_memory(games, additive_game):
    import tokenshape

    seen = []

    class Fussy:
        def __call__(self, input_ids, attention_mask):
            return additive_game(input_ids, attention_mask)

        def scoring_attention(self, input_ids, attention_mask):
            seen.append(input_ids.shape[0])
            if input_ids.shape[0] > 1:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
            return additive_game.scoring_attention(input_ids, attention_mask)

    rows = [([2, 3], [5, 6]), ([2], [7, 8, 9]), ([4], [10])]
    ids, attention, response_mask = games.make_batch(rows)
    result = tokenshape.attribute(
        Fussy(), ids, attention, response_mask, method="attention", max_rows=4
    )
    reference = tokenshape.attribute(
        additive_game, ids, attention, response_mask, method="attention"
    )
    assert seen == [3, 1, 1, 1]
    torch.testing.assert_close(result.scores, reference.scores)
    assert result.total_rows == 3
