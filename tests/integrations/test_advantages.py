"""The arithmetic of token advantages, checked against hand-computed values, GRPO's formulas and
the invariants every mode keeps (offsets cancel, identical completions get 0, {"sparse": 1} is
GRPO, no credit off the loss mask), including a prompt group split between two processes."""

from __future__ import annotations

import doctest

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenshape.integrations.trl import advantages as advantages_module
from tokenshape.integrations.trl.advantages import (
    SCALE_EPSILON,
    advantage_units,
    last_token_weights,
    reward_to_go_shares,
    shaped_advantage_part,
    token_advantages,
    token_credit,
)

MODES = {"weight": 0.0, "reward_to_go": 1.0, "hybrid": 0.3}
SETTINGS = [
    ("sum_then_normalize", "group"),
    ("sum_then_normalize", "batch"),
    ("sum_then_normalize", "none"),
    ("normalize_then_sum", "group"),
]


def grpo_advantages(rewards_per_func, weights, num_generations, scale_rewards, aggregation):
    """GRPO's sequence advantages, written out as trl 1.16 computes them."""

    def nanstd(x, dim=None):
        x = x.flatten() if dim is None else x
        dim = 0 if dim is None else dim
        mean = torch.nanmean(x, dim=dim, keepdim=True)
        count = (~torch.isnan(x)).sum(dim=dim)
        return (torch.nanmean((x - mean) ** 2, dim=dim) * count / (count - 1)).sqrt()

    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    if aggregation == "sum_then_normalize":
        rewards = (rewards_per_func * weights).nansum(dim=1)
        rewards[unscorable] = torch.nan
        grouped = rewards.view(-1, num_generations)
        mean = torch.nanmean(grouped, dim=1).repeat_interleave(num_generations)
        if scale_rewards == "batch":
            std = nanstd(rewards).expand_as(rewards)
        else:
            std = nanstd(grouped, dim=1).repeat_interleave(num_generations)
        advantages = rewards - mean
        if scale_rewards != "none":
            advantages = advantages / (std + SCALE_EPSILON)
    else:
        grouped = rewards_per_func.view(-1, num_generations, rewards_per_func.shape[1])
        mean = torch.nanmean(grouped, dim=1, keepdim=True)
        std = torch.stack([nanstd(grouped[g], dim=0) for g in range(grouped.shape[0])]).unsqueeze(1)
        z = ((grouped - mean) / (std + SCALE_EPSILON)).view(-1, rewards_per_func.shape[1])
        rewards = (z * weights).nansum(dim=1)
        rewards[unscorable] = torch.nan
        advantages = (rewards - torch.nanmean(rewards)) / (nanstd(rewards) + SCALE_EPSILON)
    return torch.nan_to_num(advantages, nan=0.0)


REWARDS = torch.tensor(
    [[0.5, 1.0], [1.5, torch.nan], [-1.0, 2.0], [0.25, 0.0], [2.0, 1.0], [torch.nan, torch.nan]],
    dtype=torch.float64,
)
WEIGHTS = torch.tensor([0.7, 1.3], dtype=torch.float64)


@pytest.mark.parametrize(
    ("aggregation", "scale_rewards"),
    [
        ("sum_then_normalize", "group"),
        ("sum_then_normalize", "batch"),
        ("sum_then_normalize", "none"),
        ("normalize_then_sum", "group"),  # it ignores scale_rewards
    ],
)
def test_advantage_parts_add_up_to_grpo_advantages(aggregation, scale_rewards):
    expected = grpo_advantages(REWARDS, WEIGHTS, 2, scale_rewards, aggregation)
    parts = [
        shaped_advantage_part(
            REWARDS,
            WEIGHTS,
            index,
            num_generations=2,
            scale_rewards=scale_rewards,
            aggregation=aggregation,
        )
        for index in range(2)
    ]
    torch.testing.assert_close((parts[0] + parts[1]).double(), expected, atol=1e-5, rtol=1e-5)
    assert parts[0][5] == 0 and parts[1][5] == 0  # no function scored the last row
    if aggregation == "sum_then_normalize":
        assert parts[1][1] != 0  # a None counts as 0, centred on the group


def test_single_reward_function_part_is_the_whole_advantage():
    rewards = torch.tensor([[1.0], [3.0], [2.0], [2.0]])
    part = shaped_advantage_part(
        rewards, torch.ones(1), 0, num_generations=2, scale_rewards="group"
    )
    std = 2**0.5
    expected = torch.tensor([-1 / (std + SCALE_EPSILON), 1 / (std + SCALE_EPSILON), 0.0, 0.0])
    torch.testing.assert_close(part, expected)


def shaped_advantages(
    rewards_per_func,
    attributions,
    weights,
    loss_mask,
    *,
    mode,
    num_generations,
    scale_rewards="group",
    aggregation="sum_then_normalize",
    reward_weights=None,
    index=0,
    turn_index=None,
    rows=None,
):
    """Token advantages as ShapedGRPOTrainer builds them, for the local ``rows`` of the gathered
    ``rewards_per_func`` (all rows by default)."""
    reward_weights = (
        torch.ones(rewards_per_func.shape[1]) if reward_weights is None else reward_weights
    )
    rows = slice(None) if rows is None else rows
    sequence = grpo_advantages(
        rewards_per_func.double(),
        reward_weights.double(),
        num_generations,
        scale_rewards,
        aggregation,
    ).float()[rows]
    part = shaped_advantage_part(
        rewards_per_func,
        reward_weights,
        index,
        num_generations=num_generations,
        scale_rewards=scale_rewards,
        aggregation=aggregation,
    )[rows]
    units = advantage_units(loss_mask, turn_index)
    return token_advantages(
        sequence,
        part,
        token_credit(attributions, weights, loss_mask),
        units,
        last_weight=last_token_weights(attributions, weights, loss_mask),
        reward_to_go_coef=MODES[mode],
    ), sequence


def test_docstring_examples_run():
    assert doctest.testmod(advantages_module, raise_on_error=True).attempted >= 3


def test_credit_by_hand_for_either_sign_and_mixed_signs():
    mask = torch.tensor([[1, 1, 1, 0]] * 4)
    phi = torch.tensor(
        [
            [2.0, 1.0, 1.0, 9.0],
            [-2.0, -1.0, -1.0, 9.0],
            [3.0, -1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ],
        dtype=torch.float64,
    )
    credit = token_credit({"kernel_shap": phi}, {"kernel_shap": 0.5, "sparse": 0.5}, mask)

    # d = n (phi - mean phi) / sum |phi| over the three loss tokens; c = 1 + 0.5 d.
    def credit_of(values):
        values = torch.tensor(values, dtype=torch.float64)
        return (1 + 0.5 * 3 * (values - values.mean()) / values.abs().sum()).tolist() + [0.0]

    expected = torch.tensor(
        [
            credit_of([2.0, 1.0, 1.0]),  # [1.25, 0.875, 0.875, 0]
            credit_of([-2.0, -1.0, -1.0]),  # mirrored: the most negative token gets least
            credit_of([3.0, -1.0, 0.0]),
            [1.0, 1.0, 1.0, 0.0],  # no attribution on the loss tokens: every token alike
        ],
        dtype=torch.float64,
    )
    assert expected[0, :3].tolist() == [1.25, 0.875, 0.875]
    torch.testing.assert_close(credit, expected)
    torch.testing.assert_close(credit[:, :3].mean(dim=1), torch.ones(4, dtype=torch.float64))
    assert token_credit({}, {"sparse": 1.0}, mask).tolist() == [[1.0, 1.0, 1.0, 0.0]] * 4


def test_weight_mode_blames_the_token_that_lowered_the_reward_not_the_one_that_raised_it():
    # One group: "great great" (phi [2, 2], score 4) and "great ok" (phi [1.5, 0.5], score 2),
    # scale_rewards="none", {"exact": 1}: "ok" takes the larger share of the row's blame.
    rewards = torch.tensor([[4.0], [2.0]])
    phi = torch.tensor([[2.0, 2.0], [1.5, 0.5]])
    mask = torch.ones(2, 2)
    result, _ = shaped_advantages(
        rewards,
        {"exact": phi},
        {"exact": 1.0},
        mask,
        mode="weight",
        num_generations=2,
        scale_rewards="none",
    )
    torch.testing.assert_close(result, torch.tensor([[1.0, 1.0], [-0.5, -1.5]]))
    # The same group below the prompt's own score (every attribution negative): "bad bad"
    # (phi [-2, -2]) and "bad ok" (phi [-1.5, -0.5]); "ok" lowered the reward least.
    below = torch.tensor([[-4.0], [-2.0]])
    result, _ = shaped_advantages(
        below,
        {"exact": -phi},
        {"exact": 1.0},
        mask,
        mode="weight",
        num_generations=2,
        scale_rewards="none",
    )
    torch.testing.assert_close(result, torch.tensor([[-1.0, -1.0], [0.5, 1.5]]))


def test_reward_to_go_by_hand():
    # Group of two, scale "none": a = [1, -1]. Row 0: phi [3, 1, 0] over 3 loss tokens, half
    # sparse; row 1: phi [1, 1] over 2 loss tokens of 3.
    rewards = torch.tensor([[3.0], [1.0]])
    phi = torch.tensor([[3.0, 1.0, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    weights = {"exact": 0.5, "sparse": 0.5}
    result, _ = shaped_advantages(
        rewards,
        {"exact": phi},
        weights,
        mask,
        mode="reward_to_go",
        num_generations=2,
        scale_rewards="none",
    )
    # Row 0 (a = 1): u = 0.5 [0, 0, 1] + 0.5 phi / 4 = [3/8, 1/8, 1/2]; A_t = sum_{s >= t} u_s.
    # Row 1 (a = -1): c = [1, 1] so u = 0.5 [0, 1] + 0.5 [1/2, 1/2] = [1/4, 3/4].
    expected = torch.tensor([[1.0, 5 / 8, 1 / 2], [-1.0, -3 / 4, 0.0]])
    torch.testing.assert_close(result, expected)
    shares = reward_to_go_shares(
        token_credit({"exact": phi}, weights, mask),
        mask,
        torch.tensor([1.0, -1.0]),
        last_token_weights({"exact": phi}, weights, mask),
    )
    torch.testing.assert_close(shares.sum(dim=1), torch.ones(2, dtype=torch.float64))


def test_turn_units_share_one_advantage():
    rewards = torch.tensor([[2.0], [0.0]])
    phi = torch.tensor([[1.0, 1.0, 0.0, 2.0], [1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.ones(2, 4)
    turns = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0]])
    for mode in MODES:
        result, _ = shaped_advantages(
            rewards,
            {"exact": phi},
            {"exact": 1.0},
            mask,
            mode=mode,
            num_generations=2,
            scale_rewards="none",
            turn_index=turns,
        )
        assert result[0, 0] == result[0, 1] and result[0, 2] == result[0, 3]
        assert len(set(result[1].tolist())) == 1
    weight, _ = shaped_advantages(
        rewards,
        {"exact": phi},
        {"exact": 1.0},
        mask,
        mode="weight",
        num_generations=2,
        scale_rewards="none",
        turn_index=turns,
    )
    # a = [1, -1]; row 0's credit 4 (phi - 1) / 4 + 1 = [1, 1, 0, 2] averages [1, 1] per turn.
    torch.testing.assert_close(weight[0], torch.ones(4))
    to_go, _ = shaped_advantages(
        rewards,
        {"exact": phi},
        {"exact": 1.0},
        mask,
        mode="reward_to_go",
        num_generations=2,
        scale_rewards="none",
        turn_index=turns,
    )
    # u = (1 + d) / 4 = [1/4, 1/4, 0, 1/2]: each turn holds half, so the second turn gets a / 2.
    torch.testing.assert_close(to_go[0], torch.tensor([1.0, 1.0, 0.5, 0.5]))


@pytest.mark.parametrize("score", [5.0, -5.0])
@pytest.mark.parametrize("mode", list(MODES))
def test_identical_completions_with_identical_scores_get_zero(score, mode):
    rewards = torch.tensor([[score], [score]])
    phi = torch.tensor([[0.5, 1.0, 2.0, 1.5]] * 2)
    for scale_rewards in ("group", "none"):
        result, _ = shaped_advantages(
            rewards,
            {"exact": phi},
            {"exact": 0.6, "sparse": 0.4},
            torch.ones(2, 4),
            mode=mode,
            num_generations=2,
            scale_rewards=scale_rewards,
        )
        assert bool((result == 0).all())


@pytest.mark.parametrize("mode", list(MODES))
def test_equal_scores_of_different_lengths_get_zero(mode):
    rewards = torch.tensor([[5.0], [5.0]])
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    phi = torch.tensor([[1.0, 2.0, 2.0, 0, 0, 0], [1.0, 1.0, 1.0, 0.5, 0.5, 1.0]]) * mask
    result, _ = shaped_advantages(
        rewards,
        {"exact": phi},
        {"exact": 0.5, "sparse": 0.5},
        mask,
        mode=mode,
        num_generations=2,
        scale_rewards="none",
    )
    assert bool((result == 0).all())


def random_group(draw_seed, rows=6, width=7):
    generator = torch.Generator().manual_seed(draw_seed)
    rewards = torch.randint(-16, 17, (rows, 2), generator=generator).float() / 8
    lengths = torch.randint(1, width + 1, (rows,), generator=generator)
    mask = (torch.arange(width) < lengths.unsqueeze(1)).long()
    phi = torch.randn(rows, width, generator=generator, dtype=torch.float64) * mask
    turns = (torch.arange(width) // 3).expand(rows, width)
    return rewards, mask, phi, turns


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 10_000),
    offset=st.sampled_from([-64.0, -0.5, 3.0, 1024.0]),
    mode=st.sampled_from(list(MODES)),
    setting=st.sampled_from(SETTINGS),
    turn=st.booleans(),
)
def test_a_constant_added_to_every_reward_changes_no_advantage(seed, offset, mode, setting, turn):
    rewards, mask, phi, turns = random_group(seed)
    aggregation, scale_rewards = setting
    common = {
        "mode": mode,
        "num_generations": 2,
        "scale_rewards": scale_rewards,
        "aggregation": aggregation,
        "reward_weights": torch.tensor([0.7, 1.3]),
        "turn_index": turns if turn else None,
    }
    weights = {"exact": 0.6, "attention": 0.3, "sparse": 0.1}
    attributions = {"exact": phi, "attention": phi.abs()}
    before, _ = shaped_advantages(rewards, attributions, weights, mask, **common)
    shifted = rewards + torch.tensor([offset, 0.0])
    after, _ = shaped_advantages(shifted, attributions, weights, mask, **common)
    torch.testing.assert_close(after, before)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 10_000),
    mode=st.sampled_from(list(MODES)),
    setting=st.sampled_from(SETTINGS),
    turn=st.booleans(),
)
def test_sparse_shaping_is_grpo_bit_for_bit_in_every_mode(seed, mode, setting, turn):
    rewards, mask, _, turns = random_group(seed)
    aggregation, scale_rewards = setting
    result, sequence = shaped_advantages(
        rewards,
        {},
        {"sparse": 1.0},
        mask,
        mode=mode,
        num_generations=2,
        scale_rewards=scale_rewards,
        aggregation=aggregation,
        reward_weights=torch.tensor([0.7, 1.3]),
        turn_index=turns if turn else None,
    )
    on = mask.bool()
    assert torch.equal(result[on], sequence.unsqueeze(1).expand_as(result)[on])
    assert bool((result[~on] == 0).all())


@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), mode=st.sampled_from(list(MODES)))
def test_credit_is_zero_off_the_loss_mask_and_each_mode_keeps_its_invariant(seed, mode):
    rewards, mask, phi, _ = random_group(seed)
    phi = phi + 5.0 * (1 - mask)  # attributions off the loss mask must be ignored
    weights = {"exact": 0.7, "sparse": 0.3}
    result, sequence = shaped_advantages(
        rewards, {"exact": phi}, weights, mask, mode=mode, num_generations=2, index=1
    )
    assert bool((result[~mask.bool()] == 0).all())
    part = shaped_advantage_part(
        rewards, torch.ones(2), 1, num_generations=2, scale_rewards="group"
    ).double()
    for row in range(rewards.shape[0]):
        values = result[row][mask[row].bool()].double()
        # float32 token advantages: rounding grows with their size (a group whose two reward
        # functions cancel has a tiny total spread, which GRPO's scaling turns into large parts)
        atol = 1e-5 * (1 + float(values.abs().max()))
        if mode == "weight":  # the row's mean is GRPO's advantage
            torch.testing.assert_close(values.mean(), sequence[row].double(), atol=atol, rtol=0)
        if mode == "reward_to_go":  # the first token gets GRPO's; none strays beyond 3 |a|
            torch.testing.assert_close(values[0], sequence[row].double(), atol=atol, rtol=0)
            assert bool(((values - sequence[row]).abs() <= 3 * part[row].abs() + atol).all())


@settings(max_examples=30, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000))
def test_in_weight_mode_a_higher_attribution_never_gets_a_lower_advantage(seed):
    rewards, mask, phi, _ = random_group(seed)
    result, _ = shaped_advantages(
        rewards,
        {"exact": phi},
        {"exact": 0.8, "sparse": 0.2},
        mask,
        mode="weight",
        num_generations=2,
    )
    for row in range(rewards.shape[0]):
        on = mask[row].bool()
        order = phi[row][on].argsort()
        assert bool((result[row][on][order].diff() >= -1e-6).all())


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("scale_rewards", ["group", "batch"])
def test_a_group_split_between_two_processes_gets_the_advantages_of_one(mode, scale_rewards):
    rewards, mask, phi, turns = random_group(3)
    weights = {"exact": 0.5, "sparse": 0.5}

    def local(rows):
        result, _ = shaped_advantages(
            rewards,
            {"exact": phi[rows]},
            weights,
            mask[rows],
            mode=mode,
            num_generations=2,
            scale_rewards=scale_rewards,
            turn_index=turns[rows],
            rows=rows,
        )
        return result

    single = local(slice(0, 6))
    # Processes 0 and 1 hold rows 0-2 and 3-5: the group of rows 2 and 3 straddles them. Each
    # sees the gathered rewards, as TRL's _calculate_rewards returns them, and its own rows.
    split = torch.cat([local(slice(0, 3)), local(slice(3, 6))])
    torch.testing.assert_close(split, single)
