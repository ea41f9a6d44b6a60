"""KernelSHAP: its coalition plan, its solver, and its accuracy against exact Shapley values."""

from __future__ import annotations

from math import comb

import pytest
import torch

import tokenshape
from tokenshape.attribution import KernelShapAttributor
from tokenshape.attribution.base import sequence_generator
from tokenshape.attribution.kernel_shap import shapley_kernel_size_mass

PROMPT = [2, 3]


def _plan(n_units, budget, seed=0):
    return KernelShapAttributor()._plan(n_units, budget, sequence_generator(seed))


@pytest.mark.parametrize("n_units", [2, 3, 7, 20])
def test_kernel_size_mass(n_units):
    mass = shapley_kernel_size_mass(n_units)
    assert mass.shape == (n_units - 1,)
    assert float(mass.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(mass, mass.flip(0))  # size s and M - s weigh the same
    raw = torch.tensor([(n_units - 1) / (s * (n_units - s)) for s in range(1, n_units)])
    torch.testing.assert_close(mass, (raw / raw.sum()).double())


@pytest.mark.parametrize("n_units,budget", [(3, 8), (5, 32), (5, 100)])
def test_plan_enumerates_every_coalition_when_the_budget_allows(n_units, budget):
    plan = _plan(n_units, budget)
    assert plan.coalitions.shape == (2**n_units - 2, n_units)
    codes = (plan.coalitions.long() * (2 ** torch.arange(n_units))).sum(1)
    assert sorted(codes.tolist()) == list(range(1, 2**n_units - 1))
    sizes = plan.coalitions.sum(1)
    # Each coalition carries the Shapley kernel weight of its size (normalised to sum 1).
    mass = shapley_kernel_size_mass(n_units)
    expected = torch.tensor([float(mass[s - 1]) / comb(n_units, s) for s in sizes.tolist()])
    torch.testing.assert_close(plan.weights, expected.double())


@pytest.mark.parametrize("n_units,budget", [(10, 60), (10, 257), (12, 64), (30, 101), (8, 3)])
def test_plan_at_a_partial_budget(n_units, budget):
    plan = _plan(n_units, budget)
    coalitions, weights = plan.coalitions, plan.weights
    assert coalitions.shape == (budget - 2, n_units)
    assert float(weights.sum()) == pytest.approx(1.0)
    assert bool((weights > 0).all())
    sizes = coalitions.sum(1)
    assert bool(((sizes >= 1) & (sizes <= n_units - 1)).all())  # the two ends are added apart
    # Enumerated sizes come first, complete, from the extremes inwards.
    enumerated = 0
    for low in range(1, n_units // 2 + 1):
        pair_count = comb(n_units, low) * (1 if 2 * low == n_units else 2)
        block = coalitions[enumerated : enumerated + pair_count]
        if block.shape[0] < pair_count or not bool(
            ((block.sum(1) == low) | (block.sum(1) == n_units - low)).all()
        ):
            break
        assert len({tuple(row.tolist()) for row in block}) == pair_count
        enumerated += pair_count
    # The rest is sampled in antithetic pairs (each coalition followed by its complement), no
    # coalition evaluated twice; a pair's two members share a draw count, hence a weight.
    sampled = coalitions[enumerated:]
    pairs = sampled.shape[0] // 2
    assert torch.equal(sampled[1 : 2 * pairs : 2], ~sampled[0 : 2 * pairs : 2])
    assert len({tuple(row.tolist()) for row in coalitions}) == coalitions.shape[0]
    sampled_weights = weights[enumerated:]
    assert torch.equal(sampled_weights[1 : 2 * pairs : 2], sampled_weights[0 : 2 * pairs : 2])


def test_plan_enumerates_the_extreme_sizes_first():
    # M = 10 at 60 rows: sizes 1 and 9 (20 coalitions) take 0.35 of the kernel mass, so the 58
    # free rows cover them; sizes 2 and 8 (90 coalitions) do not fit.
    plan = _plan(10, 60)
    sizes = plan.coalitions.sum(1)
    assert sorted(sizes[:20].tolist()) == [1] * 10 + [9] * 10
    assert not bool(((sizes[20:] == 1) | (sizes[20:] == 9)).any())


def test_plan_with_one_unit_is_empty():
    plan = _plan(1, 50)
    assert plan.coalitions.shape == (0, 1)


@pytest.mark.parametrize("budget", [2, 3, 4, 6])
def test_budget_below_the_number_of_units_is_efficient(interaction_game, games, budget):
    response = list(range(5, 15))
    game = interaction_game(1, response)
    ids, attention, response_mask = games.make_batch([(PROMPT, response)])
    result = tokenshape.attribute(
        game, ids, attention, response_mask, budget=budget, masking=games.MASK_ID
    )
    phi = result.unit_scores[0]
    assert bool(torch.isfinite(phi).all())
    gap = float(result.full_value[0] - result.base_value[0])
    assert float(phi.sum()) == pytest.approx(gap, abs=1e-9)
    assert game.rows == budget
    if budget == 2:  # nothing but the two ends: the gap is shared equally
        torch.testing.assert_close(phi, torch.full((10,), gap / 10, dtype=torch.float64))


def test_error_shrinks_as_the_budget_grows(interaction_game, games):
    response = list(range(5, 15))  # M = 10, 1024 coalitions
    errors = {64: [], 256: [], 1000: []}
    for game_seed in (100, 101, 102):
        game = interaction_game(game_seed, response)
        ids, attention, response_mask = games.make_batch([(PROMPT, response)])
        exact = tokenshape.attribute(
            game, ids, attention, response_mask, method="exact", masking=games.MASK_ID
        ).unit_scores[0]
        for budget, budget_errors in errors.items():
            for seed in range(3):
                phi = tokenshape.attribute(
                    game,
                    ids,
                    attention,
                    response_mask,
                    budget=budget,
                    seed=seed,
                    masking=games.MASK_ID,
                ).unit_scores[0]
                budget_errors.append(float((phi - exact).norm() / exact.norm()))
    mean = {budget: sum(e) / len(e) for budget, e in errors.items()}
    assert mean[64] > mean[256] > mean[1000]
    assert mean[256] < 0.1
    assert mean[1000] < 0.02
    assert mean[64] > 1e-3  # still an estimate below 2^M


def test_kernel_shap_beats_lime_against_exact(interaction_game, games):
    response = list(range(5, 15))
    game = interaction_game(100, response)
    ids, attention, response_mask = games.make_batch([(PROMPT, response)])

    def error(method):
        phi = tokenshape.attribute(
            game, ids, attention, response_mask, method=method, budget=256, masking=games.MASK_ID
        ).unit_scores[0]
        return float((phi - exact).norm() / exact.norm())

    exact = tokenshape.attribute(
        game, ids, attention, response_mask, method="exact", masking=games.MASK_ID
    ).unit_scores[0]
    assert error("kernel_shap") < error("lime") / 3


def test_solver_recovers_a_known_linear_model():
    # Values that are exactly linear in the coalition are fitted exactly from a partial plan.
    attributor = KernelShapAttributor()
    plan = attributor._plan(9, 40, sequence_generator(0))
    phi = torch.linspace(-1, 2, 9, dtype=torch.float64)
    values = 0.3 + plan.coalitions.double() @ phi
    solved = attributor._solve(
        plan,
        values,
        torch.tensor(0.3, dtype=torch.float64),
        torch.tensor(0.3 + float(phi.sum()), dtype=torch.float64),
    )
    torch.testing.assert_close(solved, phi)


def _solve_linear(n_units, budget, seed=0):
    """KernelSHAP's solution on an exactly linear game ``v(z) = 0.3 + z . beta``."""
    beta = torch.randn(n_units, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    plan = _plan(n_units, budget, seed)
    values = plan.coalitions.double() @ beta + 0.3
    v_empty = torch.tensor(0.3, dtype=torch.float64)
    phi = KernelShapAttributor()._solve(plan, values, v_empty, v_empty + beta.sum())
    return plan, beta, phi


def test_a_linear_game_is_recovered_at_budget_two_m():
    # M = 512, budget 1026: every singleton and its complement. The solve keeps every direction
    # (a pseudo-inverse of the KKT system lost one: 6% error) and efficiency is exact.
    _, beta, phi = _solve_linear(512, 1026)
    assert float((phi - beta).norm() / beta.norm()) < 1e-9
    assert abs(float(phi.sum() - beta.sum())) < 1e-12


@pytest.mark.parametrize("n_units,budget", [(12, 10), (40, 50), (64, 100)])
def test_underdetermined_budget_gives_the_efficient_fit_closest_to_the_equal_split(n_units, budget):
    # Below 2M rows the samples do not fix phi; the method returns, among efficient phi that fit
    # the samples best, the one with the smallest distance to gap / M: check with SVD least squares.
    plan, beta, phi = _solve_linear(n_units, budget)
    z = plan.coalitions.double()
    gap = float(beta.sum())
    centred = z - z.sum(1, keepdim=True) / n_units
    target = z @ beta - z.sum(1) * gap / n_units
    root = plan.weights.sqrt()[:, None]
    reference = torch.linalg.lstsq(root * centred, root * target[:, None], driver="gelsd")
    expected = gap / n_units + reference.solution[:, 0]
    torch.testing.assert_close(phi, expected, atol=1e-9, rtol=0)
    assert abs(float(phi.sum()) - gap) < 1e-12
    # Paired sampling: the data fix at most one direction per antithetic pair.
    assert int(reference.rank) <= (budget - 2) // 2 + 1 < n_units - 1
    # Every sampled coalition is fitted exactly (a linear game, fewer equations than unknowns).
    torch.testing.assert_close(z @ phi, z @ beta, atol=1e-9, rtol=0)
