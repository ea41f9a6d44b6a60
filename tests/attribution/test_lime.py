"""LIME on the reward game: its sampler, kernel and ridge fit."""

from __future__ import annotations

import math

import pytest
import torch

import tokenshape
from tokenshape.attribution import LimeAttributor
from tokenshape.attribution.base import sequence_generator
from tokenshape.attribution.lime import lime_kernel
from tokenshape.errors import InvalidArgumentError

PROMPT = [2, 3]


def test_kernel_weights():
    coalitions = torch.tensor(
        [[1, 1, 1, 1], [1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool
    )
    weights = lime_kernel(coalitions, 0.25)
    distance = 1 - torch.sqrt(torch.tensor([4, 3, 1, 0], dtype=torch.float64) / 4)
    torch.testing.assert_close(weights, torch.exp(-(distance**2) / (2 * 0.25**2)))
    assert float(weights[0]) == 1.0
    assert bool((weights[:-1] > weights[1:]).all())


def test_sampler_hides_between_one_and_m_minus_one_units():
    plan = LimeAttributor()._plan(6, 2002, sequence_generator(0))
    assert plan.coalitions.shape == (2000, 6)
    hidden = (~plan.coalitions).sum(1)
    assert int(hidden.min()) == 1 and int(hidden.max()) == 5
    # Uniform number of hidden units: each of the 5 counts takes about a fifth of the draws.
    counts = torch.bincount(hidden, minlength=6)[1:].double()
    assert bool(((counts / 2000 - 0.2).abs() < 0.04).all())


def test_fit_matches_a_weighted_ridge_with_intercept(interaction_game, games):
    sklearn = pytest.importorskip("sklearn.linear_model")
    response = [5, 6, 7, 8, 9, 10]
    game = interaction_game(0, response)
    ids, attention, response_mask = games.make_batch([(PROMPT, response)])
    attributor = LimeAttributor(kernel_width=0.4, alpha=0.5)
    result = tokenshape.attribute(
        game,
        ids,
        attention,
        response_mask,
        method=attributor,
        budget=50,
        seed=7,
        masking=games.MASK_ID,
    )
    # Rebuild the same coalitions and fit them with scikit-learn.
    plan = attributor._plan(6, 50, sequence_generator(7))
    z = torch.cat(
        [torch.ones(1, 6, dtype=torch.bool), torch.zeros(1, 6, dtype=torch.bool), plan.coalitions]
    )
    v = games.coalition_value(game, ids, attention, response_mask)
    y = [v(frozenset(row.nonzero().flatten().tolist())) for row in z]
    weights = lime_kernel(z, 0.4)
    ridge = sklearn.Ridge(alpha=0.5 * float(weights.sum()), fit_intercept=True)
    ridge.fit(z.double().numpy(), y, sample_weight=weights.numpy())
    torch.testing.assert_close(result.unit_scores[0], torch.from_numpy(ridge.coef_).double())


def test_lime_is_not_efficient(interaction_game, games):
    response = [5, 6, 7, 8, 9, 10]
    game = interaction_game(1, response)
    ids, attention, response_mask = games.make_batch([(PROMPT, response)])
    result = tokenshape.attribute(
        game, ids, attention, response_mask, method="lime", budget=64, masking=games.MASK_ID
    )
    assert float(result.efficiency_error[0]) > 1e-3


@pytest.mark.parametrize("alpha", [0, -1.0, math.nan, "1", None, True])
def test_bad_alpha(alpha):
    with pytest.raises(InvalidArgumentError, match="alpha"):
        LimeAttributor(alpha=alpha)


@pytest.mark.parametrize("width", [0, -0.5, math.nan, "wide"])
def test_bad_kernel_width(width):
    with pytest.raises(InvalidArgumentError, match="kernel_width"):
        LimeAttributor(kernel_width=width)


def test_one_unit_uses_only_the_two_ends(additive_game, games):
    ids, attention, response_mask = games.make_batch([(PROMPT, [8])])
    result = tokenshape.attribute(
        additive_game,
        ids,
        attention,
        response_mask,
        method="lime",
        budget=30,
        masking=games.MASK_ID,
    )
    assert additive_game.rows == 2
    assert torch.isfinite(result.unit_scores[0]).all()
    # Two points, one coefficient: the ridge slope is shrunk below the true value 3.
    assert 0 < float(result.unit_scores[0][0]) < 3.0


def test_shrinkage_does_not_depend_on_the_budget(games):
    # An exactly linear game of 12 players: the ridge's coefficients over the true ones are the
    # same fraction at every budget that determines the fit (the penalty scales with the total
    # kernel weight), and close to 1 at the default penalty.
    values = {5 + i: float(v) for i, v in enumerate(torch.linspace(-2.0, 3.0, 12))}
    game = games.AnalyticGame(games.linear_values(values))
    response = list(values)
    ids, attention, response_mask = games.make_batch([(PROMPT, response)])
    truth = torch.tensor(list(values.values()), dtype=torch.float64)
    ratios = []
    for budget in (32, 64, 256):
        result = tokenshape.attribute(
            game, ids, attention, response_mask, method="lime", budget=budget, masking=games.MASK_ID
        )
        phi = result.unit_scores[0]
        ratios.append(float(phi @ truth / (truth @ truth)))
    assert min(ratios) > 0.95 and max(ratios) - min(ratios) < 0.03
