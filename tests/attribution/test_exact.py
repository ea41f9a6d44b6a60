"""Exact Shapley values and leave-one-out occlusion."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenshape
from tokenshape.attribution import shapley_from_values
from tokenshape.attribution.exact import MAX_EXACT_UNITS
from tokenshape.errors import InvalidArgumentError

PROMPT = [2, 3]


@settings(max_examples=30, deadline=None)
@given(
    n_players=st.integers(min_value=1, max_value=5),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_shapley_from_values_matches_the_permutation_definition(games, n_players, seed):
    values = torch.randn(
        2**n_players, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )

    def v(coalition):
        return float(values[sum(1 << i for i in coalition)])

    torch.testing.assert_close(shapley_from_values(values), games.brute_force_shapley(v, n_players))


def test_shapley_from_values_of_a_dictator_game():
    # v(S) = 1 when player 2 is in S: player 2 gets everything.
    codes = torch.arange(16)
    values = ((codes >> 2) & 1).double()
    torch.testing.assert_close(
        shapley_from_values(values), torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    )


def test_exact_ignores_the_budget(interaction_game, games):
    response = [5, 6, 7, 8, 9]
    game = interaction_game(0, response)
    ids, attention, response_mask = games.make_batch([(PROMPT, response)])
    low = tokenshape.attribute(
        game, ids, attention, response_mask, method="exact", budget=2, masking=games.MASK_ID
    )
    assert game.rows == 32
    high = tokenshape.attribute(
        game, ids, attention, response_mask, method="exact", budget=500, masking=games.MASK_ID
    )
    torch.testing.assert_close(low.unit_scores[0], high.unit_scores[0], atol=0, rtol=0)


def test_exact_at_the_unit_limit(additive_game, games):
    response = list(range(5, 5 + MAX_EXACT_UNITS))
    ids, attention, response_mask = games.make_batch([(PROMPT, response)])
    result = tokenshape.attribute(
        additive_game,
        ids,
        attention,
        response_mask,
        method="exact",
        masking=games.MASK_ID,
        max_rows=2**MAX_EXACT_UNITS,
    )
    assert int(result.rows[0]) == 2**MAX_EXACT_UNITS
    expected = torch.tensor([games.additive_values[t] for t in response], dtype=torch.float64)
    torch.testing.assert_close(result.unit_scores[0], expected)


def test_exact_beyond_the_unit_limit_is_refused_before_any_row(additive_game, games):
    response = list(range(5, 5 + MAX_EXACT_UNITS)) + [5]
    ids, attention, response_mask = games.make_batch([(PROMPT, response)])
    with pytest.raises(InvalidArgumentError, match=r"method='exact'.*at most 16 units.*got 17"):
        tokenshape.attribute(
            additive_game, ids, attention, response_mask, method="exact", masking=games.MASK_ID
        )
    assert additive_game.rows == 0


def test_exact_with_coarse_units_beyond_the_token_limit(additive_game, games):
    # 20 tokens in 4 units: the limit is on units, not tokens.
    response = list(range(5, 20)) + [5, 6, 7, 8, 9]
    ids, attention, response_mask = games.make_batch([(PROMPT, response)])
    units = torch.full_like(ids, -1)
    units[response_mask] = torch.arange(20) // 5
    result = tokenshape.attribute(
        additive_game,
        ids,
        attention,
        response_mask,
        method="exact",
        unit=units,
        masking=games.MASK_ID,
    )
    expected = torch.tensor([games.additive_values[t] for t in response], dtype=torch.float64)
    torch.testing.assert_close(result.unit_scores[0], expected.reshape(4, 5).sum(1))
    assert int(result.rows[0]) == 16


def test_occlusion_is_leave_one_out(interaction_game, games):
    response = [5, 6, 7, 8]
    game = interaction_game(2, response)
    ids, attention, response_mask = games.make_batch([(PROMPT, response)])
    result = tokenshape.attribute(
        game, ids, attention, response_mask, method="occlusion", masking=games.MASK_ID
    )
    v = games.coalition_value(game, ids, attention, response_mask)
    everyone = frozenset(range(4))
    expected = torch.tensor(
        [v(everyone) - v(everyone - {i}) for i in range(4)], dtype=torch.float64
    )
    torch.testing.assert_close(result.unit_scores[0], expected)
