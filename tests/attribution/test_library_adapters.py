"""tokenshape's kernel_shap and lime against the shap and lime packages on the same reward games.

The games are rewards over token ids whose Shapley values are known by hand: an additive reward
(phi_i = the weight of token i) and one with pairwise interactions (each interaction is split
equally between its two tokens). Hidden tokens become id 0, whose weight is 0.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from tokenshape import attribute
from tokenshape.attribution.lime_library import LimeLibraryAttributor
from tokenshape.errors import InvalidArgumentError

VOCAB = 40
PROMPT = 3
#: Response lengths of the batch's rows: 12 is above the 10 units shap's default l1_reg keeps.
LENGTHS = (8, 10, 12)
#: The far interaction joins the first response token and the one FAR positions later.
FAR = 7

_generator = torch.Generator().manual_seed(1234)
TOKEN_WEIGHT = torch.randn(VOCAB, generator=_generator, dtype=torch.float64)
TOKEN_WEIGHT[0] = 0.0
PAIR_WEIGHT = 0.7 * torch.randn(VOCAB, VOCAB, generator=_generator, dtype=torch.float64)


def additive_reward(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """``B x L`` -> ``B``: the sum of the attended tokens' weights (hidden tokens weigh 0)."""
    return (TOKEN_WEIGHT[input_ids] * attention_mask).sum(dim=1)


def pairwise_reward(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """``B x L`` -> ``B``: the additive reward, plus an interaction for every two neighbouring
    present tokens, plus one between the first response token and the one ``FAR`` after it."""
    present = (input_ids != 0) & attention_mask.bool()
    neighbours = present[:, :-1] & present[:, 1:]
    pairs = (PAIR_WEIGHT[input_ids[:, :-1], input_ids[:, 1:]] * neighbours).sum(dim=1)
    first, far = input_ids[:, PROMPT], input_ids[:, PROMPT + FAR]
    far_pair = PAIR_WEIGHT[first, far] * (present[:, PROMPT] & present[:, PROMPT + FAR])
    return additive_reward(input_ids, attention_mask) + pairs + far_pair


def shapley_by_hand(reward, ids: Tensor, n_units: int) -> Tensor:
    """The Shapley values of one row's response tokens: ``ids`` ``PROMPT + M`` -> ``M``."""
    response = ids[PROMPT : PROMPT + n_units]
    phi = TOKEN_WEIGHT[response].clone()
    if reward is pairwise_reward:
        # The prompt is always present: its pair with the first response token is additive.
        phi[0] += PAIR_WEIGHT[ids[PROMPT - 1], response[0]]
        for i in range(n_units - 1):
            share = PAIR_WEIGHT[response[i], response[i + 1]] / 2
            phi[i] += share
            phi[i + 1] += share
        far_share = PAIR_WEIGHT[response[0], response[FAR]] / 2
        phi[0] += far_share
        phi[FAR] += far_share
    return phi


class CountingReward:
    """A reward function that counts the rows it scores."""

    def __init__(self, reward) -> None:
        self.reward = reward
        self.rows = 0

    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        self.rows += input_ids.shape[0]
        return self.reward(input_ids, attention_mask)


@pytest.fixture(scope="module")
def batch() -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded rows with a 3-token prompt and responses of ``LENGTHS`` tokens, ids >= 1."""
    generator = torch.Generator().manual_seed(7)
    width = PROMPT + max(LENGTHS)
    input_ids = torch.zeros(len(LENGTHS), width, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    response_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    for row, length in enumerate(LENGTHS):
        input_ids[row, : PROMPT + length] = torch.randint(
            1, VOCAB, (PROMPT + length,), generator=generator
        )
        attention_mask[row, : PROMPT + length] = 1
        response_mask[row, PROMPT : PROMPT + length] = True
    return input_ids, attention_mask, response_mask


def game_as_numpy_model(reward, ids: Tensor, n_units: int):
    """One row's game as shap and lime see it: ``N x M`` 0/1 -> ``N`` rewards."""

    def model(z: np.ndarray) -> np.ndarray:
        rows = ids[: PROMPT + n_units].repeat(z.shape[0], 1)
        keep = torch.from_numpy(np.asarray(z) > 0.5)
        rows[:, PROMPT:] = torch.where(keep, rows[:, PROMPT:], 0)
        return reward(rows, torch.ones_like(rows)).numpy()

    return model


def relative_error(estimate: Tensor, reference: Tensor) -> float:
    return float((estimate - reference).norm() / reference.norm())


@pytest.mark.parametrize("reward", [additive_reward, pairwise_reward])
def test_shap_library_and_kernel_shap_give_exact_shapley_values_when_enumerating(reward, batch):
    input_ids, attention_mask, response_mask = batch
    budget = 2 ** max(LENGTHS)  # every coalition of every row
    counting = CountingReward(reward)
    library = attribute(
        counting,
        input_ids,
        attention_mask,
        response_mask,
        method="shap_library",
        budget=budget,
        masking=0,
    )
    ours = attribute(
        reward,
        input_ids,
        attention_mask,
        response_mask,
        method="kernel_shap",
        budget=budget,
        masking=0,
    )

    assert library.rows.tolist() == [2**m for m in LENGTHS]
    assert counting.rows == library.total_rows
    hidden = torch.where(response_mask, 0, input_ids)
    torch.testing.assert_close(
        library.base_value, reward(hidden, attention_mask), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(
        library.full_value, reward(input_ids, attention_mask), rtol=0, atol=1e-12
    )
    for row, n_units in enumerate(LENGTHS):
        by_hand = shapley_by_hand(reward, input_ids[row], n_units)
        # Both solve the fully enumerated weighted least squares in float64, so they agree with
        # each other and with the hand-computed values up to rounding (the games are O(10)).
        torch.testing.assert_close(library.unit_scores[row], by_hand, rtol=0, atol=1e-9)
        torch.testing.assert_close(
            ours.unit_scores[row], library.unit_scores[row], rtol=0, atol=1e-9
        )
        # shap's default l1_reg="num_features(10)" would zero 2 of the 12 units of the last row.
        assert bool((library.unit_scores[row] != 0).all())


@pytest.mark.parametrize("reward", [additive_reward, pairwise_reward])
def test_kernel_shap_matches_kernel_explainer_called_directly(reward, batch):
    import shap

    input_ids, attention_mask, response_mask = batch
    ours = attribute(
        reward,
        input_ids,
        attention_mask,
        response_mask,
        method="kernel_shap",
        budget=2 ** max(LENGTHS),
        masking=0,
    )
    for row, n_units in enumerate(LENGTHS):
        explainer = shap.KernelExplainer(
            game_as_numpy_model(reward, input_ids[row], n_units), np.zeros((1, n_units))
        )
        direct = explainer.shap_values(
            np.ones(n_units), nsamples=2**n_units, l1_reg=False, silent=True
        )
        # Exact enumeration on both sides: only float64 rounding separates them.
        torch.testing.assert_close(
            ours.unit_scores[row], torch.from_numpy(direct), rtol=0, atol=1e-9
        )
        assert float(ours.base_value[row]) == pytest.approx(
            float(explainer.expected_value), abs=1e-12
        )


def test_shap_library_is_kernel_explainer_with_the_seed_and_budget(batch):
    import shap

    input_ids, attention_mask, response_mask = batch
    budget, seed = 100, 3  # far below 2^M: shap samples coalitions
    counting = CountingReward(pairwise_reward)
    library = attribute(
        counting,
        input_ids,
        attention_mask,
        response_mask,
        method="shap_library",
        budget=budget,
        seed=seed,
        masking=0,
    )

    assert library.rows.tolist() == [budget] * len(LENGTHS)
    assert counting.rows == library.total_rows
    for row, n_units in enumerate(LENGTHS):
        np.random.seed(seed)
        explainer = shap.KernelExplainer(
            game_as_numpy_model(pairwise_reward, input_ids[row], n_units), np.zeros((1, n_units))
        )
        direct = explainer.shap_values(
            np.ones(n_units), nsamples=budget - 2, l1_reg=False, silent=True
        )
        # Same seed, same samples, same solver: equal up to rounding.
        torch.testing.assert_close(
            library.unit_scores[row], torch.from_numpy(direct), rtol=0, atol=1e-12
        )
        gap = library.full_value[row] - library.base_value[row]
        assert float(library.unit_scores[row].sum()) == pytest.approx(float(gap), abs=1e-9)


def test_shap_library_is_reproducible_and_leaves_numpy_random_state_alone(batch):
    input_ids, attention_mask, response_mask = batch
    args = (pairwise_reward, input_ids, attention_mask, response_mask)
    np.random.seed(99)
    expected_draw = np.random.rand()
    np.random.seed(99)
    first = attribute(*args, method="shap_library", budget=60, seed=1, masking=0)
    assert np.random.rand() == expected_draw
    again = attribute(*args, method="shap_library", budget=60, seed=1, masking=0)
    other = attribute(*args, method="shap_library", budget=60, seed=2, masking=0)
    for row in range(len(LENGTHS)):
        torch.testing.assert_close(first.unit_scores[row], again.unit_scores[row], rtol=0, atol=0)
    assert any(not torch.equal(a, b) for a, b in zip(first.unit_scores, other.unit_scores))


def test_lime_library_is_lime_text_explainer_on_the_same_game(batch):
    from lime.lime_text import LimeTextExplainer

    input_ids, attention_mask, response_mask = batch
    budget, seed = 300, 5
    counting = CountingReward(pairwise_reward)
    library = attribute(
        counting,
        input_ids,
        attention_mask,
        response_mask,
        method="lime_library",
        budget=budget,
        seed=seed,
        masking=0,
    )

    assert library.rows.tolist() == [budget] * len(LENGTHS)
    assert counting.rows == library.total_rows
    hidden = torch.where(response_mask, 0, input_ids)
    torch.testing.assert_close(
        library.base_value, pairwise_reward(hidden, attention_mask), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(
        library.full_value, pairwise_reward(input_ids, attention_mask), rtol=0, atol=1e-12
    )
    for row, n_units in enumerate(LENGTHS):
        model = game_as_numpy_model(pairwise_reward, input_ids[row], n_units)
        words = [f"u{i}" for i in range(n_units)]

        def classifier(texts: list[str], model=model) -> np.ndarray:
            present = np.array([[word != "UNKWORDZ" for word in text.split(" ")] for text in texts])
            return model(present)[:, None]

        explainer = LimeTextExplainer(bow=False, feature_selection="none", random_state=seed)
        explanation = explainer.explain_instance(
            " ".join(words), classifier, labels=(0,), num_features=n_units, num_samples=budget - 1
        )
        direct = torch.zeros(n_units, dtype=torch.float64)
        for unit, weight in explanation.local_exp[0]:
            direct[unit] = weight
        # Same neighbourhood, kernel and ridge: equal up to rounding.
        torch.testing.assert_close(library.unit_scores[row], direct, rtol=0, atol=1e-10)


# LIME estimates a weighted ridge fit from random coalitions, and the two implementations draw
# different coalitions (lime hides 1..M units, so it can draw the empty coalition; tokenshape hides
# 1..M-1 and always fits the full and empty ones). Their large-sample limits differ by about 1e-4
# relative, so what separates them is Monte Carlo error, which shrinks as 1/sqrt(budget). At 2^13
# rows, over 24 seed pairs, it reached 2.1e-4 (additive) and 2.1% (pairwise) relative L2. On the
# additive game the fit is exact up to the ridge shrinkage, so the tolerance is tight; with
# interactions it is about twice the largest seen.
@pytest.mark.parametrize(
    ("reward", "tolerance"), [(additive_reward, 1e-3), (pairwise_reward, 0.05)]
)
def test_lime_agrees_with_lime_library_at_a_large_budget(reward, tolerance, batch):
    input_ids, attention_mask, response_mask = batch
    budget = 2**13
    args = (reward, input_ids, attention_mask, response_mask)
    ours = attribute(*args, method="lime", budget=budget, masking=0)
    library = attribute(*args, method="lime_library", budget=budget, masking=0)
    torch.testing.assert_close(library.base_value, ours.base_value, rtol=0, atol=1e-12)
    torch.testing.assert_close(library.full_value, ours.full_value, rtol=0, atol=1e-12)
    for row, n_units in enumerate(LENGTHS):
        assert relative_error(ours.unit_scores[row], library.unit_scores[row]) < tolerance
        if reward is additive_reward:
            # An additive game is linear in the coalition: LIME recovers the token weights, less
            # the ridge's shrinkage (alpha=1 against kernel weights summing to thousands: 0.1-0.2%).
            by_hand = shapley_by_hand(reward, input_ids[row], n_units)
            assert relative_error(library.unit_scores[row], by_hand) < 5e-3


@pytest.mark.parametrize("option", ["kernel_width", "alpha"])
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), True, "0.25"])
def test_lime_library_rejects_options_that_are_not_positive_numbers(option, value):
    with pytest.raises(InvalidArgumentError, match=option):
        LimeLibraryAttributor(**{option: value})


def test_lime_library_alpha_is_the_ridge_penalty(batch):
    input_ids, attention_mask, response_mask = batch
    args = (additive_reward, input_ids, attention_mask, response_mask)
    light = attribute(*args, method=LimeLibraryAttributor(alpha=1e-6), budget=200, masking=0)
    heavy = attribute(*args, method=LimeLibraryAttributor(alpha=1e3), budget=200, masking=0)
    for row, n_units in enumerate(LENGTHS):
        by_hand = shapley_by_hand(additive_reward, input_ids[row], n_units)
        # Almost no penalty: the linear game is fit exactly. A heavy one shrinks every score.
        assert relative_error(light.unit_scores[row], by_hand) < 1e-6
        assert float(heavy.unit_scores[row].norm()) < 0.5 * float(by_hand.norm())
