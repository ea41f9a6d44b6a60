"""The arithmetic of token advantages, checked against hand-computed values and GRPO's formulas,
including a prompt group split between two processes."""

from __future__ import annotations

import pytest
import torch

from tokenshape.integrations.trl.advantages import (
    SCALE_EPSILON,
    advantage_units,
    group_moments,
    reward_to_go_advantages,
    row_moments,
    shaped_advantage_part,
    token_credit,
    weight_advantages,
)


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


def test_credit_by_hand_and_its_mean_is_one():
    shares = {"attention": torch.tensor([[0.5, 0.25, 0.25, 0.0]], dtype=torch.float64)}
    mask = torch.tensor([[1, 1, 1, 0]])
    credit = token_credit(shares, {"attention": 0.5, "sparse": 0.5}, mask)
    torch.testing.assert_close(
        credit, torch.tensor([[1.25, 0.875, 0.875, 0.0]], dtype=torch.float64)
    )
    assert float(credit[0, :3].mean()) == pytest.approx(1.0)
    sparse = token_credit({}, {"sparse": 1.0}, mask)
    assert sparse.tolist() == [[1.0, 1.0, 1.0, 0.0]]


def test_weight_mode_with_unit_credit_is_the_broadcast_advantage_bit_for_bit():
    advantages = torch.tensor([0.3141, -1.2718, 0.0], dtype=torch.float32)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    units = advantage_units(mask)
    credit = token_credit({}, {"sparse": 1.0}, mask)
    result = weight_advantages(advantages, torch.tensor([5.0, -2.0, 1.0]), credit, units)
    assert result.dtype == torch.float32
    broadcast = advantages.unsqueeze(1).expand_as(result)
    assert torch.equal(result[mask.bool()], broadcast[mask.bool()])
    assert bool((result[~mask.bool()] == 0).all())


def test_weight_mode_moves_the_shaped_part_by_credit():
    credit = torch.tensor([[2.0, 0.5, 0.5]], dtype=torch.float64)
    units = advantage_units(torch.ones(1, 3))
    result = weight_advantages(torch.tensor([1.0]), torch.tensor([0.5]), credit, units)
    torch.testing.assert_close(result, torch.tensor([[1.5, 0.75, 0.75]]))
    turns = advantage_units(torch.ones(1, 3), torch.tensor([[0, 0, 1]]))
    by_turn = weight_advantages(torch.tensor([1.0]), torch.tensor([0.5]), credit, turns)
    torch.testing.assert_close(by_turn, torch.tensor([[1.125, 1.125, 0.75]]))


def test_reward_to_go_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 2.0, 9.0], [0.0, 3.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    units = advantage_units(mask)
    unit_rewards, moments = row_moments(rewards, units)
    assert moments.tolist() == [[3.0, 5.0, 3.0], [3.0, 9.0, 2.0]]
    mean, scale = group_moments(moments, num_generations=2, scale_rewards="group")
    values = torch.tensor([1.0, 0.0, 2.0, 0.0, 3.0])  # the five loss tokens of the group
    assert mean.tolist() == pytest.approx([values.mean().item()] * 2)
    assert scale.tolist() == pytest.approx([values.std().item() + SCALE_EPSILON] * 2)
    result = reward_to_go_advantages(unit_rewards, units, mean, scale)
    z = ((values - values.mean()) / (values.std() + SCALE_EPSILON)).double()
    expected = torch.tensor(
        [[z[0] + z[1] + z[2], z[1] + z[2], z[2], 0.0], [z[3] + z[4], z[4], 0.0, 0.0]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(result, expected)


def test_reward_to_go_over_turns_gives_each_turn_one_advantage():
    rewards = torch.tensor([[1.0, 1.0, 0.0, 4.0], [2.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.ones(2, 4)
    units = advantage_units(mask, torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0]]))
    unit_rewards, moments = row_moments(rewards, units)
    assert unit_rewards.tolist() == [[2.0, 4.0], [2.0, 0.0]]
    mean, scale = group_moments(moments, num_generations=2, scale_rewards="none")
    assert mean.tolist() == [pytest.approx(8 / 3)] * 2 and scale.tolist() == [1.0, 1.0]
    result = reward_to_go_advantages(unit_rewards, units, mean, scale)
    first, second = 2 - 8 / 3, 4 - 8 / 3
    expected = [[first + second] * 2 + [second] * 2, [2 - 8 / 3] * 4]
    torch.testing.assert_close(result, torch.tensor(expected, dtype=torch.float64))


def test_batch_scale_pools_every_group():
    moments = torch.tensor([[1.0, 1.0, 1.0], [3.0, 9.0, 1.0], [0.0, 0.0, 1.0], [4.0, 16.0, 1.0]])
    mean, scale = group_moments(moments, num_generations=2, scale_rewards="batch")
    assert mean.tolist() == [2.0, 2.0, 2.0, 2.0]
    std = torch.tensor([1.0, 3.0, 0.0, 4.0]).std().item()
    assert scale.tolist() == pytest.approx([std + SCALE_EPSILON] * 4)


@pytest.mark.parametrize("scale_rewards", ["group", "batch"])
def test_a_group_split_between_two_processes_is_normalised_as_on_one(scale_rewards):
    generator = torch.Generator().manual_seed(0)
    rewards = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    lengths = torch.tensor([5, 3, 4, 1, 2, 5])
    mask = (torch.arange(5) < lengths.unsqueeze(1)).long()
    turns = torch.tensor([[0, 0, 1, 1, 2]] * 6)

    def advantages(rows, gathered_moments, offset):
        units = advantage_units(mask[rows], turns[rows])
        unit_rewards, _ = row_moments(rewards[rows], units)
        mean, scale = group_moments(
            gathered_moments, num_generations=2, scale_rewards=scale_rewards
        )
        local = slice(offset, offset + len(rows))
        return reward_to_go_advantages(unit_rewards, units, mean[local], scale[local])

    def moments_of(rows):
        return row_moments(rewards[rows], advantage_units(mask[rows], turns[rows]))[1]

    single = advantages(list(range(6)), moments_of(list(range(6))), 0)
    # Processes 0 and 1 hold rows 0-2 and 3-5: the group of rows 2 and 3 straddles them. Each
    # gathers both processes' per-row moments, as accelerator.gather would.
    gathered = torch.cat([moments_of([0, 1, 2]), moments_of([3, 4, 5])])
    split = torch.cat([advantages([0, 1, 2], gathered, 0), advantages([3, 4, 5], gathered, 3)])
    torch.testing.assert_close(split, single)
    local_only = advantages([3, 4, 5], torch.cat([moments_of([3, 4, 5])] * 2), 0)
    assert not torch.allclose(local_only[0], single[3])
