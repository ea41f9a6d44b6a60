"""Token advantages from shaped token rewards: the arithmetic of the shaped GRPO trainer.

Every function here is a pure tensor function, so each can be checked by hand. Shapes: ``N`` rows
over all processes, ``B`` local rows, ``T`` completion tokens, ``M`` advantage units per row (a
unit is a token, or a turn of a conversation), ``K`` reward functions, ``G`` completions per prompt.
Group statistics cross processes only as per-row moments ``(sum, sum of squares, count)``, so a
prompt group split between two processes is normalised exactly as if it were on one.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from tokenshape.errors import InvalidArgumentError
from tokenshape.shaping.params import SPARSE

__all__ = [
    "SCALE_EPSILON",
    "advantage_units",
    "group_moments",
    "reward_to_go_advantages",
    "row_moments",
    "shaped_advantage_part",
    "token_credit",
    "unit_mean",
    "weight_advantages",
]

#: Added to a standard deviation before dividing by it, as GRPO does.
SCALE_EPSILON = 1e-4
_SCALES = ("group", "batch", "none")
_AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")


def _nanstd(values: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """Unbiased standard deviation ignoring NaN (NaN with fewer than two values)."""
    if dim is None:
        values, dim = values.flatten(), 0
    mean = torch.nanmean(values, dim=dim, keepdim=True)
    count = (~torch.isnan(values)).sum(dim=dim, keepdim=keepdim)
    squares = torch.nansum((values - mean) ** 2, dim=dim, keepdim=keepdim)
    return torch.where(count > 1, squares / (count - 1).clamp(min=1), torch.nan).sqrt()


def _group_mean(values: Tensor, num_generations: int) -> Tensor:
    """``N`` -> ``N``: the NaN-ignoring mean of each row's group, repeated over the group."""
    return torch.nanmean(values.view(-1, num_generations), dim=1).repeat_interleave(num_generations)


def shaped_advantage_part(
    rewards_per_func: Tensor,
    reward_weights: Tensor,
    index: int,
    *,
    num_generations: int,
    scale_rewards: str,
    aggregation: str = "sum_then_normalize",
) -> Tensor:
    """The part of each GRPO advantage that comes from reward function ``index``.

    GRPO's advantage is linear in the centred rewards of its reward functions, so it splits into
    one part per function; the parts of all functions sum to GRPO's advantage. Missing rewards
    (NaN, a function returning None) count as 0 as in GRPO; a row no function scored gets 0.

    Args:
        rewards_per_func: ``N x K``, the gathered rewards, NaN where a function returned None.
        reward_weights: ``K``.
        index: the reward function whose part is wanted.
        num_generations: ``G``; ``N`` is a multiple of it.
        scale_rewards: ``"group"``, ``"batch"`` or ``"none"``, as in ``GRPOConfig``.
        aggregation: GRPO's ``multi_objective_aggregation``.

    Returns:
        ``N`` float32, the part of each row's advantage due to reward function ``index``.
    """
    if scale_rewards not in _SCALES:
        raise InvalidArgumentError("scale_rewards", scale_rewards, f"one of {_SCALES}")
    if aggregation not in _AGGREGATIONS:
        raise InvalidArgumentError("aggregation", aggregation, f"one of {_AGGREGATIONS}")
    rewards = rewards_per_func.double()
    weights = reward_weights.to(rewards).unsqueeze(0)
    unscorable = torch.isnan(rewards).all(dim=1)
    if aggregation == "sum_then_normalize":
        weighted = torch.nan_to_num(rewards) * weights
        total = weighted.sum(dim=1).masked_fill(unscorable, torch.nan)
        part = weighted[:, index].masked_fill(unscorable, torch.nan)
        centred = part - _group_mean(part, num_generations)
        if scale_rewards == "none":
            return torch.nan_to_num(centred).float()
        if scale_rewards == "group":
            std = _nanstd(total.view(-1, num_generations), dim=1).repeat_interleave(num_generations)
        else:
            std = _nanstd(total).expand_as(total)
        return torch.nan_to_num(centred / (std + SCALE_EPSILON)).float()
    grouped = rewards.view(-1, num_generations, rewards.shape[1])
    z = (grouped - torch.nanmean(grouped, dim=1, keepdim=True)) / (
        _nanstd(grouped, dim=1, keepdim=True) + SCALE_EPSILON
    )
    z = z.view(-1, rewards.shape[1])
    total = torch.nansum(z * weights, dim=1).masked_fill(unscorable, torch.nan)
    part = (torch.nan_to_num(z[:, index]) * weights[0, index]).masked_fill(unscorable, torch.nan)
    centred = part - torch.nanmean(part)
    return torch.nan_to_num(centred / (_nanstd(total) + SCALE_EPSILON)).float()


def token_credit(
    shares: Mapping[str, Tensor], weights: Mapping[str, float], loss_mask: Tensor
) -> Tensor:
    """Per-token credit ``c = w_sparse + n sum_j w_j e_j``, averaging 1 over each row's loss tokens.

    Args:
        shares: signal -> ``B x T`` shares ``e_j`` of every weighted signal but ``"sparse"``, each
            summing to 1 over the row's completion tokens (0 outside them).
        weights: signal -> weight, summing to 1.
        loss_mask: ``B x T``, 1 on the tokens the loss sees; ``n`` is their number per row.

    Returns:
        ``B x T`` float64, zero off ``loss_mask``.
    """
    mask = loss_mask.bool()
    count = mask.sum(dim=1, keepdim=True).double()
    credit = torch.full(
        mask.shape, float(weights.get(SPARSE, 0.0)), dtype=torch.float64, device=mask.device
    )
    for name, share in shares.items():
        credit = credit + count * float(weights[name]) * share.to(credit)
    return torch.where(mask, credit, 0.0)


def advantage_units(loss_mask: Tensor, turn_index: Tensor | None = None) -> Tensor:
    """The advantage unit of each token: itself, or its turn.

    Args:
        loss_mask: ``B x T``.
        turn_index: ``B x T`` long, the turn of each token (``0, 1, ...`` in reading order), or
            None for one unit per token.

    Returns:
        ``B x T`` long, the unit number of each loss token, -1 elsewhere.
    """
    mask = loss_mask.bool()
    if turn_index is None:
        return torch.where(mask, mask.long().cumsum(dim=1) - 1, -1)
    if turn_index.shape != mask.shape:
        raise InvalidArgumentError(
            "turn_index", f"shape {tuple(turn_index.shape)}", f"shape {tuple(mask.shape)}"
        )
    return torch.where(mask, turn_index.long().to(mask.device), -1)


def _unit_sums(values: Tensor, units: Tensor) -> tuple[Tensor, Tensor]:
    """``B x T`` values -> (``B x M`` sums per unit, ``B x M`` token counts per unit)."""
    width = int(units.max()) + 1 if units.numel() else 0
    on = units >= 0
    slot = units.clamp(min=0)
    sums = torch.zeros(units.shape[0], max(width, 1), dtype=torch.float64, device=units.device)
    counts = torch.zeros_like(sums)
    sums.scatter_add_(1, slot, torch.where(on, values.double(), 0.0))
    counts.scatter_add_(1, slot, on.double())
    return sums, counts


def _to_tokens(unit_values: Tensor, units: Tensor) -> Tensor:
    """``B x M`` values -> ``B x T``: each token gets its unit's value, 0 off the units."""
    return torch.where(units >= 0, unit_values.gather(1, units.clamp(min=0)), 0.0)


def unit_mean(values: Tensor, units: Tensor) -> Tensor:
    """``B x T`` -> ``B x T``: each token gets the mean of ``values`` over its unit (0 off units)."""
    sums, counts = _unit_sums(values, units)
    return _to_tokens(sums / counts.clamp(min=1), units)


def weight_advantages(
    sequence_advantages: Tensor, shaped_part: Tensor, credit: Tensor, units: Tensor
) -> Tensor:
    """``A_{i,t} = A_i + a_i (c_{i,t} - 1)``, with the credit averaged over each unit.

    Args:
        sequence_advantages: ``B``, GRPO's advantages ``A``.
        shaped_part: ``B``, the part ``a`` of ``A`` due to the shaped reward function.
        credit: ``B x T``, from :func:`token_credit`.
        units: ``B x T``, from :func:`advantage_units`.

    Returns:
        ``B x T`` in ``sequence_advantages``' dtype, zero off the units. With ``credit == 1`` on
        every unit token it is ``A`` broadcast, bit for bit.
    """
    unit_credit = unit_mean(credit, units)
    advantages = sequence_advantages.double().unsqueeze(1) + shaped_part.double().unsqueeze(1) * (
        unit_credit - 1.0
    )
    return torch.where(units >= 0, advantages, 0.0).to(sequence_advantages.dtype)


def row_moments(token_rewards: Tensor, units: Tensor) -> tuple[Tensor, Tensor]:
    """Unit rewards of each row and their moments, the only statistics that cross processes.

    Args:
        token_rewards: ``B x T``.
        units: ``B x T``, from :func:`advantage_units`.

    Returns:
        (``B x M`` float64 unit rewards, the sum of the token rewards in each unit;
        ``B x 3`` float64 per-row ``(sum, sum of squares, count)`` over the units).
    """
    sums, counts = _unit_sums(token_rewards, units)
    valid = counts > 0
    values = torch.where(valid, sums, 0.0)
    moments = torch.stack([values.sum(1), (values * values).sum(1), valid.sum(1).double()], dim=1)
    return values, moments


def group_moments(
    moments: Tensor, *, num_generations: int, scale_rewards: str
) -> tuple[Tensor, Tensor]:
    """The mean and the scale of the unit rewards of each row's group.

    Args:
        moments: ``N x 3`` per-row ``(sum, sum of squares, count)`` of all processes, in the
            order of the gathered batch (groups of ``num_generations`` consecutive rows).
        num_generations: ``G``.
        scale_rewards: ``"group"`` (the group's standard deviation), ``"batch"`` (all rows'),
            or ``"none"`` (1).

    Returns:
        (mean ``N``, scale ``N``) float64, repeated over each group; the scale is the unbiased
        standard deviation plus :data:`SCALE_EPSILON` (its epsilon alone for fewer than two
        units).
    """
    if scale_rewards not in _SCALES:
        raise InvalidArgumentError("scale_rewards", scale_rewards, f"one of {_SCALES}")
    groups = moments.double().view(-1, num_generations, 3).sum(dim=1)
    mean = groups[:, 0] / groups[:, 2].clamp(min=1)
    if scale_rewards == "none":
        scale = torch.ones_like(mean)
    else:
        pooled = groups if scale_rewards == "group" else groups.sum(dim=0, keepdim=True)
        total, squares, count = pooled.unbind(dim=1)
        variance = (squares - total * total / count.clamp(min=1)) / (count - 1).clamp(min=1)
        std = torch.where(count > 1, variance.clamp(min=0).sqrt(), 0.0)
        scale = (std + SCALE_EPSILON).expand_as(mean)
    return mean.repeat_interleave(num_generations), scale.repeat_interleave(num_generations)


def reward_to_go_advantages(
    unit_rewards: Tensor, units: Tensor, mean: Tensor, scale: Tensor
) -> Tensor:
    """Normalised unit rewards summed from each unit to the end, given to the unit's tokens.

    Args:
        unit_rewards: ``B x M``, from :func:`row_moments`.
        units: ``B x T``, from :func:`advantage_units`.
        mean: ``B``, the group mean of each row (from :func:`group_moments`).
        scale: ``B``, the group scale of each row.

    Returns:
        ``B x T`` float64, zero off the units.
    """
    _, counts = _unit_sums(torch.zeros_like(units, dtype=torch.float64), units)
    valid = counts > 0
    normalised = torch.where(valid, (unit_rewards - mean.unsqueeze(1)) / scale.unsqueeze(1), 0.0)
    to_go = normalised.flip(1).cumsum(1).flip(1)
    return _to_tokens(to_go, units)
