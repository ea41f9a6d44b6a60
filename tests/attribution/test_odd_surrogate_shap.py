"""odd_surrogate_shap: its closed-form surrogate Shapley values, exactness, efficiency, budget,
seeds and batching, on analytic games with known Shapley values."""

from __future__ import annotations

import pytest
import torch

import tokenshape
from tests.conftest import (
    FIRST_PLAYER_ID,
    AnalyticGame,
    brute_force_shapley,
    coalition_value,
    linear_values,
    make_batch,
    triple_term,
)
from tokenshape.attribution import OddSurrogateShapAttributor
from tokenshape.attribution.exact import shapley_from_values
from tokenshape.attribution.odd_surrogate_shap import _odd_kernel, odd_kernel_shapley
from tokenshape.errors import InvalidArgumentError

PROMPT = [2, 3]


def _attribute(game, rows, **kwargs):
    ids, attention, response = make_batch(rows)
    return tokenshape.attribute(
        game, ids, attention, response, method="odd_surrogate_shap", masking=1, **kwargs
    )


def _rel_l2(phi, exact):
    return float((phi - exact).norm() / exact.norm())


def _saturating_game(n_players: int, seed: int) -> AnalyticGame:
    """2 tanh(x / 2) of an additive score with three-way interactions: odd terms of every order."""
    generator = torch.Generator().manual_seed(seed)
    ids = list(range(FIRST_PLAYER_ID, FIRST_PLAYER_ID + n_players))
    weights = torch.randn(n_players, generator=generator, dtype=torch.float64)
    triples = [
        (
            torch.randperm(n_players, generator=generator)[:3].tolist(),
            float(torch.randn(1, generator=generator)),
        )
        for _ in range(n_players)
    ]

    def term(present):
        score = present[:, ids] @ weights
        for members, bonus in triples:
            score = score + triple_term(*(ids[m] for m in members), bonus)(present)
        return 2.0 * torch.tanh(score / 2.0)

    return AnalyticGame(linear_values(), [term])


@pytest.mark.parametrize("n_units,gamma", [(5, 0.5), (7, 2.0), (9, 16.0)])
def test_surrogate_shapley_values_match_enumeration(n_units, gamma):
    generator = torch.Generator().manual_seed(n_units)
    centers = torch.rand(6, n_units, generator=generator) < 0.5
    alpha = torch.randn(6, generator=generator, dtype=torch.float64)
    codes = torch.arange(2**n_units)
    every = ((codes[:, None] >> torch.arange(n_units)) & 1).bool()
    values = _odd_kernel(2.0 * every.double() - 1, 2.0 * centers.double() - 1, gamma) @ alpha
    torch.testing.assert_close(
        odd_kernel_shapley(centers, alpha, gamma), shapley_from_values(values)
    )


@pytest.mark.parametrize("budget", [24, 40, 100])
def test_exact_on_additive_games(budget):
    values = {FIRST_PLAYER_ID + i: float(v) for i, v in enumerate(torch.linspace(-2, 3, 10))}
    game = AnalyticGame(linear_values(values))
    result = _attribute(game, [(PROMPT, list(values))], budget=budget)
    torch.testing.assert_close(
        result.unit_scores[0], torch.tensor(list(values.values()), dtype=torch.float64)
    )


@pytest.mark.parametrize("budget", [10, 30, 64, 200])
def test_efficiency_is_exact(interaction_game, budget):
    response = list(range(FIRST_PLAYER_ID, FIRST_PLAYER_ID + 11))
    result = _attribute(interaction_game(3, response), [(PROMPT, response)], budget=budget)
    total = result.unit_scores[0].sum()
    assert float(total) == pytest.approx(float(result.full_value - result.base_value), abs=1e-10)


def test_exact_shapley_when_every_coalition_fits(interaction_game):
    response = list(range(FIRST_PLAYER_ID, FIRST_PLAYER_ID + 6))
    game = interaction_game(4, response)
    result = _attribute(game, [(PROMPT, response)], budget=64)
    ids, attention, mask = make_batch([(PROMPT, response)])
    exact = brute_force_shapley(coalition_value(game, ids, attention, mask), 6)
    torch.testing.assert_close(result.unit_scores[0], exact)


@pytest.mark.parametrize("seed", [0, 1])
def test_known_shapley_values_of_interaction_games(interaction_game, seed):
    """Pairwise and three-way bonuses over 12 tokens: within 5% of the exact values at 256 rows."""
    response = list(range(FIRST_PLAYER_ID, FIRST_PLAYER_ID + 12))
    game = interaction_game(20 + seed, response)
    ids, attention, mask = make_batch([(PROMPT, response)])
    exact = tokenshape.attribute(game, ids, attention, mask, method="exact", masking=1)
    result = _attribute(game, [(PROMPT, response)], budget=256, seed=seed)
    assert _rel_l2(result.unit_scores[0], exact.unit_scores[0]) <= 0.05


def test_closer_than_kernel_shap_on_saturating_games():
    """Mean relative L2 over games and seeds: the surrogate removes part of KernelSHAP's error."""
    response = list(range(FIRST_PLAYER_ID, FIRST_PLAYER_ID + 12))
    ids, attention, mask = make_batch([(PROMPT, response)])
    errors = {"kernel_shap": [], "odd_surrogate_shap": []}
    for game_seed in range(4):
        game = _saturating_game(12, game_seed)
        exact = tokenshape.attribute(game, ids, attention, mask, method="exact", masking=1)
        for method, found in errors.items():
            for seed in range(3):
                phi = tokenshape.attribute(
                    game, ids, attention, mask, method=method, budget=160, seed=seed, masking=1
                ).unit_scores[0]
                found.append(_rel_l2(phi, exact.unit_scores[0]))
    mean = {method: sum(e) / len(e) for method, e in errors.items()}
    assert mean["odd_surrogate_shap"] < mean["kernel_shap"]


@pytest.mark.parametrize("budget", [12, 50, 129])
def test_budget_is_respected(interaction_game, budget):
    response = list(range(FIRST_PLAYER_ID, FIRST_PLAYER_ID + 10))
    game = interaction_game(5, response)
    result = _attribute(game, [(PROMPT, response)], budget=budget)
    assert game.rows == budget
    assert int(result.rows[0]) == budget


def test_deterministic_per_seed(interaction_game):
    response = list(range(FIRST_PLAYER_ID, FIRST_PLAYER_ID + 12))
    game = interaction_game(6, response)
    first = _attribute(game, [(PROMPT, response)], budget=80, seed=7).unit_scores[0]
    again = _attribute(game, [(PROMPT, response)], budget=80, seed=7).unit_scores[0]
    other = _attribute(game, [(PROMPT, response)], budget=80, seed=8).unit_scores[0]
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first, other)


def test_batched_equals_per_example(interaction_game):
    rows = [
        (PROMPT, list(range(FIRST_PLAYER_ID, FIRST_PLAYER_ID + 12))),
        (PROMPT, list(range(FIRST_PLAYER_ID + 3, FIRST_PLAYER_ID + 12))),
        ([4], list(range(FIRST_PLAYER_ID + 1, FIRST_PLAYER_ID + 11))),
    ]
    game = interaction_game(7, list(range(FIRST_PLAYER_ID, FIRST_PLAYER_ID + 12)))
    batched = _attribute(game, rows, budget=90, seed=3).unit_scores
    for row, phi in zip(rows, batched):
        alone = _attribute(game, [row], budget=90, seed=3).unit_scores[0]
        torch.testing.assert_close(phi, alone)


@pytest.mark.parametrize("min_pairs", [1, 2.5, True, "8"])
def test_min_pairs_is_validated(min_pairs):
    with pytest.raises(InvalidArgumentError, match="min_pairs"):
        OddSurrogateShapAttributor(min_pairs=min_pairs)
