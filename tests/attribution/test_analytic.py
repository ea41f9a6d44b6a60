"""Attributions of analytic games whose Shapley values are known in closed form."""

from __future__ import annotations

import pytest
import torch

import tokenshape
from tokenshape.attribution import LimeAttributor

PROMPT = [2, 3]
RESPONSE = [5, 6, 7, 8, 9, 10, 11]  # values 1, -2, 0.5, 3, 0, -0.75, 1.25


def _values(response, table):
    return torch.tensor([table[t] for t in response], dtype=torch.float64)


def _run(game, games, method, response=RESPONSE, prompt=PROMPT, **kwargs):
    ids, attention, response_mask = games.make_batch([(prompt, response)])
    kwargs.setdefault("masking", games.MASK_ID)
    return tokenshape.attribute(game, ids, attention, response_mask, method=method, **kwargs)


@pytest.mark.parametrize("method", ["kernel_shap", "exact", "occlusion"])
@pytest.mark.parametrize("budget", [16, 40, 128])
def test_additive_game_recovered_exactly(additive_game, games, method, budget):
    result = _run(additive_game, games, method, budget=budget)
    expected = _values(RESPONSE, games.additive_values)
    torch.testing.assert_close(result.unit_scores[0], expected, atol=1e-9, rtol=0)
    # Token scores sit on the response positions, zero on the prompt.
    assert result.scores[0, : len(PROMPT)].abs().max() == 0
    torch.testing.assert_close(
        result.scores[0, len(PROMPT) :].double(), expected, atol=1e-6, rtol=0
    )
    # base: offset + prompt; full: base + every token.
    assert float(result.base_value[0]) == pytest.approx(0.1 + 0.5 * len(PROMPT))
    assert float(result.full_value[0]) == pytest.approx(
        0.1 + 0.5 * len(PROMPT) + float(expected.sum())
    )


def test_additive_game_lime_near_exact_with_small_ridge(additive_game, games):
    result = _run(additive_game, games, LimeAttributor(alpha=1e-8), budget=64)
    torch.testing.assert_close(
        result.unit_scores[0], _values(RESPONSE, games.additive_values), atol=1e-5, rtol=0
    )


def test_additive_game_lime_default_is_approximate(additive_game, games):
    result = _run(additive_game, games, "lime", budget=256)
    expected = _values(RESPONSE, games.additive_values)
    error = (result.unit_scores[0] - expected).norm() / expected.norm()
    assert error < 0.1
    # The ridge shrinks every coefficient toward zero, so it is not exact.
    assert error > 1e-6
    nonzero = expected != 0
    assert torch.equal(result.unit_scores[0][nonzero].sign(), expected[nonzero].sign())


@pytest.mark.parametrize("method", ["exact", "kernel_shap"])
def test_pair_game_splits_each_bonus_equally(pair_game, pair_shapley, games, method):
    response = [5, 6, 7, 8, 11, 12, 9]
    result = _run(pair_game, games, method, response=response, budget=2 ** len(response))
    torch.testing.assert_close(result.unit_scores[0], pair_shapley(response), atol=1e-9, rtol=0)


def test_pair_game_occlusion_counts_each_bonus_fully(pair_game, games):
    # Leave-one-out gives each token of a present pair the whole bonus: not Shapley.
    response = [5, 8, 6]
    result = _run(pair_game, games, "occlusion", response=response)
    torch.testing.assert_close(
        result.unit_scores[0], torch.tensor([1.0 + 6.0, 3.0 + 6.0, -2.0], dtype=torch.float64)
    )


@pytest.mark.parametrize("method", ["exact", "kernel_shap"])
def test_glove_game(games, method):
    # One left glove (id 5), two right gloves (ids 6, 7), one glove-less token (id 8).
    game = games.AnalyticGame(games.linear_values(), [games.glove_term([5], [6, 7])])
    result = _run(game, games, method, response=[6, 5, 8, 7], budget=16)
    torch.testing.assert_close(
        result.unit_scores[0], torch.tensor([1 / 6, 2 / 3, 0.0, 1 / 6], dtype=torch.float64)
    )


@pytest.mark.parametrize("method", ["exact", "kernel_shap"])
def test_majority_game(games, method):
    # Three of five voters win; ids 10 and 11 are not voters.
    voters = [5, 6, 7, 8, 9]
    game = games.AnalyticGame(games.linear_values(), [games.majority_term(voters, 3)])
    response = [5, 10, 6, 7, 11, 8, 9]
    result = _run(game, games, method, response=response, budget=2**7)
    expected = torch.tensor([0.2, 0.0, 0.2, 0.2, 0.0, 0.2, 0.2], dtype=torch.float64)
    torch.testing.assert_close(result.unit_scores[0], expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_matches_brute_force_permutation_shapley(interaction_game, games, seed):
    response = [5, 6, 7, 8, 9, 10]
    game = interaction_game(seed, response)
    ids, attention, response_mask = games.make_batch([(PROMPT, response)])
    expected = games.brute_force_shapley(
        games.coalition_value(game, ids, attention, response_mask), len(response)
    )
    result = tokenshape.attribute(
        game, ids, attention, response_mask, method="exact", masking=games.MASK_ID
    )
    torch.testing.assert_close(result.unit_scores[0], expected, atol=1e-10, rtol=0)
    # The game has interactions, so the values are not simply the additive ones.
    assert (expected - game.linear[response]).abs().max() > 1e-3


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("n_players", [2, 3, 6])
def test_kernel_shap_with_full_budget_equals_exact(interaction_game, games, seed, n_players):
    response = list(range(5, 5 + n_players))
    game = interaction_game(seed, response)
    exact = _run(game, games, "exact", response=response)
    for budget in (2**n_players, 2**n_players + 7):
        kernel = _run(game, games, "kernel_shap", response=response, budget=budget, seed=seed + 11)
        torch.testing.assert_close(kernel.unit_scores[0], exact.unit_scores[0], atol=1e-6, rtol=0)
        assert int(kernel.rows[0]) == 2**n_players


def test_attention_on_analytic_game_distributes_full_value(additive_game, games):
    result = _run(additive_game, games, "attention")
    weights = 1.0 + _values(RESPONSE, games.additive_values).abs()
    expected = float(result.full_value[0]) * weights / weights.sum()
    torch.testing.assert_close(result.unit_scores[0], expected)
    assert float(result.base_value[0]) == 0.0
