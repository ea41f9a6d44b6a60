"""Token advantages from explained rewards: the arithmetic of the shaped GRPO trainer.

Every function here is a pure tensor function, so each can be checked by hand. Shapes: ``N`` rows
over all processes, ``B`` local rows, ``T`` completion tokens, ``M`` advantage units per row (a
unit is a token, or a turn of a conversation), ``K`` reward functions, ``G`` completions per prompt.
The only group statistics are GRPO's own, computed from the ``N x K`` rewards TRL gathers from
every process, so a prompt group split between two processes gets exactly the advantages it would
get on one; everything else is per row.
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
    "last_token_weights",
    "reward_to_go_shares",
    "shaped_advantage_part",
    "token_advantages",
    "token_credit",
    "unit_mean",
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
    attributions: Mapping[str, Tensor], weights: Mapping[str, float], loss_mask: Tensor
) -> Tensor:
    """Per-token credit ``c = 1 + sum_j w_j d_j``, averaging 1 over each row's loss tokens.

    ``d_{j,t} = n (phi_{j,t} - mean_t phi_j) / sum_t |phi_{j,t}|`` is how far signal ``j``'s
    attribution of token ``t`` lies from the row's mean attribution, measured in the row's total
    absolute attribution; ``n`` is the row's number of loss tokens. It sums to 0 over the row,
    grows with ``phi_{j,t}`` whatever the signs of the attributions and of their sum, stays within
    ``[-2n, 2n]`` when the attributions nearly cancel, and is 0 for a row without attributions.
    When every attribution of a row has one sign it equals ``n e_{j,t} - 1`` with ``e_j`` the
    shares ``phi_j / sum phi_j``. The ``"sparse"`` signal credits every token alike (``d = 0``).
    Attributions are invariant to a constant added to every reward, and so is the credit.

    Args:
        attributions: signal -> ``B x T`` attributions ``phi_j`` on the policy's tokens, for every
            weighted signal but ``"sparse"``.
        weights: signal -> weight, summing to 1.
        loss_mask: ``B x T``, 1 on the tokens the loss sees.

    Returns:
        ``B x T`` float64, zero off ``loss_mask``.

    Example:
        >>> mask = torch.ones(1, 2)
        >>> token_credit({"exact": torch.tensor([[1.5, 0.5]])}, {"exact": 1.0}, mask)
        tensor([[1.5000, 0.5000]], dtype=torch.float64)
        >>> token_credit({"exact": torch.tensor([[-1.5, -0.5]])}, {"exact": 1.0}, mask)
        tensor([[0.5000, 1.5000]], dtype=torch.float64)
    """
    mask = loss_mask.bool()
    count = mask.sum(dim=1, keepdim=True).double()
    credit = torch.ones(mask.shape, dtype=torch.float64, device=mask.device)
    for name, phi in attributions.items():
        values = torch.where(mask, phi.to(device=mask.device, dtype=torch.float64), 0.0)
        mean = values.sum(dim=1, keepdim=True) / count.clamp(min=1)
        spread = values.abs().sum(dim=1, keepdim=True)
        deviation = torch.where(spread > 0, count * (values - mean) / spread.clamp(min=1e-300), 0.0)
        credit = credit + float(weights[name]) * deviation
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


def last_token_weights(
    attributions: Mapping[str, Tensor], weights: Mapping[str, float], loss_mask: Tensor
) -> Tensor:
    """The weight each row puts on its last token: ``w_sparse``, plus the weight of every signal
    that attributes nothing on the row (a completion without players gives its whole reward to
    its last token).

    Args:
        attributions: signal -> ``B x T``, as for :func:`token_credit`.
        weights: signal -> weight.
        loss_mask: ``B x T``.

    Returns:
        ``B`` float64.
    """
    mask = loss_mask.bool()
    total = torch.full(
        (mask.shape[0],), float(weights.get(SPARSE, 0.0)), dtype=torch.float64, device=mask.device
    )
    for name, phi in attributions.items():
        silent = ~(torch.where(mask, phi.to(mask.device), 0.0) != 0).any(dim=1)
        total = total + float(weights[name]) * silent.double()
    return total


def reward_to_go_shares(
    credit: Tensor, loss_mask: Tensor, sign: Tensor, last_weight: Tensor
) -> Tensor:
    """Shares ``u`` of each row's centred shaped reward, by token: ``sum_t u_t = 1``.

    ``u_t = w_last [t = last] + ((1 - w_last) + sign(a) (c_t - 1)) / n``: the sparse signal (and
    any signal silent on the row) puts its share on the row's last loss token; every other signal
    ``j`` gives token ``t`` the share ``(1 + sign(a) d_{j,t}) / n``, so that the token reward
    ``a u_t`` grows with the token's attribution whether the row's centred reward ``a`` is
    positive or negative.

    Args:
        credit: ``B x T``, from :func:`token_credit`.
        loss_mask: ``B x T``; ``n`` is its number of tokens per row.
        sign: ``B``, the sign of each row's shaped advantage part ``a``.
        last_weight: ``B``, ``w_last`` from :func:`last_token_weights`.

    Returns:
        ``B x T`` float64, zero off ``loss_mask``.
    """
    mask = loss_mask.bool()
    count = mask.sum(dim=1, keepdim=True).double().clamp(min=1)
    positions = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    last = (mask.long() * positions).argmax(dim=1, keepdim=True)
    on_last = torch.zeros(mask.shape, dtype=torch.float64, device=mask.device)
    on_last.scatter_(1, last, 1.0)
    last_weight = last_weight.double().to(mask.device).unsqueeze(1)
    spread = ((1.0 - last_weight) + sign.double().unsqueeze(1) * (credit.double() - 1.0)) / count
    return torch.where(mask, last_weight * on_last + spread, 0.0)


def token_advantages(
    sequence_advantages: Tensor,
    shaped_part: Tensor,
    credit: Tensor,
    units: Tensor,
    *,
    last_weight: Tensor,
    reward_to_go_coef: float,
) -> Tensor:
    """GRPO's advantages ``A`` spread over tokens by the credit of the shaped reward's part ``a``.

    With ``h = reward_to_go_coef`` (0 in ``"weight"`` mode, 1 in ``"reward_to_go"``)::

        A_{i,t} = A_i + (1 - h) |a_i| (c_{i,t} - 1) + h a_i (g_{i,t} - 1)

    where ``c`` is the credit (:func:`token_credit`) averaged over each unit, and ``g_{i,t} =
    sum_{s >= t} u_{i,s}`` is the part of the row's shares (:func:`reward_to_go_shares`) still to
    come at ``t``'s unit. Both terms vanish when every token has credit 1 (``{"sparse": 1}``), so
    the result is then ``A`` broadcast, bit for bit; they vanish too when ``a = 0`` (a completion
    scored like its group's mean, identical completions), and neither ``a``, ``c`` nor ``u``
    moves when a constant is added to every reward.

    - The weight term averages 0 over a row's loss tokens: the row's mean token advantage is
      ``A_i``. It grows with each token's attribution for either sign of ``a``: the token whose
      attribution raised the reward is never blamed more than one that raised it less.
    - The reward-to-go term is the return of the token rewards ``a u_t`` (centred and scaled like
      GRPO's advantage): the first unit gets ``A_i``, and ``|A_{i,t} - A_i| <= 3 |a_i|`` at any
      length.

    Args:
        sequence_advantages: ``B``, GRPO's advantages ``A``.
        shaped_part: ``B``, the part ``a`` of ``A`` due to the shaped reward function.
        credit: ``B x T``, from :func:`token_credit`.
        units: ``B x T``, from :func:`advantage_units`.
        last_weight: ``B``, from :func:`last_token_weights`.
        reward_to_go_coef: ``h`` in [0, 1].

    Returns:
        ``B x T`` in ``sequence_advantages``' dtype, zero off the units.

    Example:
        One group of "great great" (phi = [2, 2], score 4) and "great ok" (phi = [1.5, 0.5],
        score 2), ``scale_rewards="none"``: ``A = a = [1, -1]``. In ``"weight"`` mode "ok" takes
        the larger share of "great ok"'s blame:

        >>> mask = torch.ones(2, 2)
        >>> credit = token_credit({"exact": torch.tensor([[2.0, 2.0], [1.5, 0.5]])},
        ...                       {"exact": 1.0}, mask)
        >>> a = torch.tensor([1.0, -1.0])
        >>> token_advantages(a, a, credit, advantage_units(mask),
        ...                  last_weight=torch.zeros(2), reward_to_go_coef=0.0)
        tensor([[ 1.0000,  1.0000],
                [-0.5000, -1.5000]])
    """
    on = units >= 0
    advantages = sequence_advantages.double().unsqueeze(1).expand(units.shape)
    part = shaped_part.double().to(units.device).unsqueeze(1)
    if reward_to_go_coef < 1:
        weight = unit_mean(credit, units) - 1.0
        advantages = advantages + (1.0 - reward_to_go_coef) * part.abs() * weight
    if reward_to_go_coef > 0:
        shares = reward_to_go_shares(credit, on, torch.sign(part.squeeze(1)), last_weight)
        unit_shares, _ = _unit_sums(shares, units)
        to_go = unit_shares.flip(1).cumsum(1).flip(1)
        advantages = advantages + reward_to_go_coef * part * (_to_tokens(to_go, units) - 1.0)
    return torch.where(on, advantages, 0.0).to(sequence_advantages.dtype)
