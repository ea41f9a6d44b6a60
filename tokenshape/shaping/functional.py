"""The linear shaping function: a sequence reward spread over the response tokens.

For a row with sequence reward r, signal weights w on the simplex and per-signal shares e_j (each
summing to 1 over the row's response tokens),

    r'_t = r * sum_j w_j * e_{j,t}

so every row's token rewards sum to r and the return of every trajectory is unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from tokenshape.errors import InvalidArgumentError
from tokenshape.shaping.params import SPARSE, ShapingParams

__all__ = ["LinearShaper", "shape_rewards"]


def shape_rewards(
    sequence_reward: Tensor,
    attributions: Mapping[str, Tensor],
    params: ShapingParams,
    response_mask: Tensor,
) -> Tensor:
    """Spread each sequence reward over its response tokens by a weighted blend of signals.

    ``r'_t = r * sum_j w_j * e_{j,t}`` where ``e_sparse`` is one-hot on the row's last response
    token and, for every other signal, ``e_j`` is its attribution ``phi`` turned into shares that
    sum to 1 over the response tokens, by ``params.normalization``:

    - ``"sum"``: ``e_t = phi_t / sum(phi)``. Signs are kept: a token whose attribution has the
      opposite sign to ``sum(phi)`` (it pushed the score against the net change) gets credit of
      the opposite sign to ``r``. If the row's attributions nearly cancel,
      ``|sum(phi)| < params.cancellation_tolerance * sum|phi|``, the shares would be noise blown up
      by a tiny denominator; such a row falls back to ``"abs"``. The fallback keeps every share
      within ``1 / cancellation_tolerance`` in magnitude.
    - ``"abs"``: ``e_t = |phi_t| / sum|phi|``.
    - ``"positive"``: ``e_t = relu(phi_t) / sum relu(phi)``, credit only to tokens that raised the
      score; a row with no positive attribution falls back to ``"abs"``.

    A row whose attributions are all zero over the response falls back to uniform shares
    ``1 / n_response_tokens``. For attributions of one sign (e.g. attention) the three
    normalizations agree. Shares are computed in float64; attributions outside
    ``response_mask`` are ignored and the result is zero there. A row with no response token gets
    all zeros (its sum is then 0, not r).

    Args:
        sequence_reward: ``B`` float, one finite reward per sequence; sets the result's dtype and
            device.
        attributions: signal name -> ``B x T`` float attributions. Every signal with a weight
            above zero needs one, except ``"sparse"``, which takes none; other entries are unused.
        params: the signal weights and the normalization.
        response_mask: ``B x T`` bool, True on the response tokens to reward.

    Returns:
        ``B x T`` token rewards in ``sequence_reward``'s dtype; each row with a response token
        sums to its ``sequence_reward``.

    Raises:
        InvalidArgumentError: a shape, dtype or type is wrong, an active signal has no
            attribution, ``"sparse"`` is given an attribution, or a reward or an attribution
            inside the response is NaN or infinite.

    Example:
        ABC (attention credit with beta = 0.5) on a 3-token response padded to 4:

        >>> import torch
        >>> reward = torch.tensor([2.0])
        >>> attention = torch.tensor([[0.5, 0.25, 0.25, 0.0]])
        >>> mask = torch.tensor([[True, True, True, False]])
        >>> params = ShapingParams({"attention": 0.5, "sparse": 0.5})
        >>> shape_rewards(reward, {"attention": attention}, params, mask)
        tensor([[0.5000, 0.2500, 1.2500, 0.0000]])
    """
    if not isinstance(params, ShapingParams):
        raise InvalidArgumentError("params", params, "a ShapingParams")
    _check_reward_and_mask(sequence_reward, response_mask)
    if not isinstance(attributions, Mapping):
        raise InvalidArgumentError(
            "attributions", attributions, "a dict of signal name -> B x T tensor"
        )
    if SPARSE in attributions:
        raise InvalidArgumentError(
            f"attributions[{SPARSE!r}]",
            attributions[SPARSE],
            f"no tensor: the {SPARSE!r} signal is one-hot on the last response token",
        )
    device = sequence_reward.device
    mask = response_mask.to(device)
    weights = {name: params.weights[name] for name in params.active_signals}
    # Weights within the simplex tolerance are divided by their sum so that rows sum to r exactly.
    total_weight = sum(weights.values())
    blend = torch.zeros(mask.shape, dtype=torch.float64, device=device)
    for name, weight in weights.items():
        if name == SPARSE:
            shares = _last_token_shares(mask)
        else:
            phi = _checked_attribution(name, attributions, mask)
            shares = _token_shares(
                phi,
                mask,
                normalization=params.normalization,
                cancellation_tolerance=params.cancellation_tolerance,
            )
        blend += (weight / total_weight) * shares
    shaped = sequence_reward.to(torch.float64).unsqueeze(1) * blend
    return shaped.to(sequence_reward.dtype)


@dataclass(frozen=True)
class LinearShaper:
    """:func:`shape_rewards` with its parameters bound.

    Args:
        params: the signal weights and the normalization.

    Example:
        >>> import torch
        >>> shaper = LinearShaper(ShapingParams({"sparse": 1.0}))
        >>> shaper(torch.tensor([1.0]), {}, torch.tensor([[True, True, False]]))
        tensor([[0., 1., 0.]])
    """

    params: ShapingParams

    def __post_init__(self) -> None:
        if not isinstance(self.params, ShapingParams):
            raise InvalidArgumentError("params", self.params, "a ShapingParams")

    def __call__(
        self, sequence_reward: Tensor, attributions: Mapping[str, Tensor], response_mask: Tensor
    ) -> Tensor:
        """``B x T`` token rewards; see :func:`shape_rewards` for the arguments."""
        return shape_rewards(sequence_reward, attributions, self.params, response_mask)


def _check_reward_and_mask(sequence_reward: Tensor, response_mask: Tensor) -> None:
    if not isinstance(sequence_reward, Tensor) or sequence_reward.dim() != 1:
        shown = (
            tuple(sequence_reward.shape) if isinstance(sequence_reward, Tensor) else sequence_reward
        )
        raise InvalidArgumentError("sequence_reward", shown, "a 1-D tensor of B rewards")
    if not sequence_reward.is_floating_point():
        raise InvalidArgumentError(
            "sequence_reward", sequence_reward.dtype, "a floating-point dtype"
        )
    bad_rows = (~torch.isfinite(sequence_reward)).nonzero().flatten().tolist()
    if bad_rows:
        raise InvalidArgumentError(
            "sequence_reward",
            sequence_reward[bad_rows].tolist(),
            f"finite rewards (rows {bad_rows} are not)",
        )
    if not isinstance(response_mask, Tensor) or response_mask.dtype != torch.bool:
        shown = response_mask.dtype if isinstance(response_mask, Tensor) else response_mask
        raise InvalidArgumentError("response_mask", shown, "a bool tensor")
    if response_mask.dim() != 2 or response_mask.shape[0] != sequence_reward.shape[0]:
        raise InvalidArgumentError(
            "response_mask",
            f"shape {tuple(response_mask.shape)}",
            f"shape (B, T) with B = {sequence_reward.shape[0]}, the length of sequence_reward",
        )


def _checked_attribution(name: str, attributions: Mapping[str, Tensor], mask: Tensor) -> Tensor:
    argument = f"attributions[{name!r}]"
    if name not in attributions:
        raise InvalidArgumentError(
            "attributions",
            sorted(attributions),
            f"a tensor for every signal weighted above zero; {name!r} is missing "
            f"({SPARSE!r} needs none)",
        )
    phi = attributions[name]
    if not isinstance(phi, Tensor) or not phi.is_floating_point():
        shown = phi.dtype if isinstance(phi, Tensor) else phi
        raise InvalidArgumentError(argument, shown, "a floating-point tensor")
    if phi.shape != mask.shape:
        raise InvalidArgumentError(
            argument,
            f"shape {tuple(phi.shape)}",
            f"shape {tuple(mask.shape)}, the shape of response_mask",
        )
    phi = phi.to(device=mask.device, dtype=torch.float64)
    bad_rows = (mask & ~torch.isfinite(phi)).any(dim=1).nonzero().flatten().tolist()
    if bad_rows:
        raise InvalidArgumentError(
            argument,
            f"NaN or infinite values in rows {bad_rows}",
            "finite attributions on the response tokens",
        )
    return torch.where(mask, phi, 0.0)


def _last_token_shares(mask: Tensor) -> Tensor:
    """``B x T`` float64, one-hot on each row's last True position (all zero for an empty row)."""
    positions = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    last = (mask * positions).argmax(dim=1)
    shares = torch.zeros(mask.shape, dtype=torch.float64, device=mask.device)
    shares[torch.arange(mask.shape[0], device=mask.device), last] = 1.0
    return shares * mask


def _token_shares(
    phi: Tensor, mask: Tensor, *, normalization: str, cancellation_tolerance: float
) -> Tensor:
    """``B x T`` float64 shares summing to 1 over each non-empty row of ``mask``.

    ``phi`` is ``B x T`` float64, zero outside ``mask``. Each row is first scaled by a power of two
    near its largest magnitude (in two steps, as 2**1074 itself overflows): exact, and it keeps the
    sums below from overflowing or underflowing.
    """
    _, exponent = torch.frexp(phi.abs().amax(dim=1, keepdim=True))
    half = exponent // 2
    phi = torch.ldexp(torch.ldexp(phi, -half), half - exponent)
    magnitude = phi.abs()
    abs_total = magnitude.sum(dim=1, keepdim=True)
    has_mass = abs_total > 0
    uniform = mask.double() / mask.sum(dim=1, keepdim=True).clamp(min=1)
    fallback = torch.where(has_mass, magnitude / torch.where(has_mass, abs_total, 1.0), uniform)
    if normalization == "abs":
        return fallback
    if normalization == "sum":
        numerator = phi
        denominator = phi.sum(dim=1, keepdim=True)
        usable = has_mass & (denominator.abs() >= cancellation_tolerance * abs_total)
    else:
        numerator = phi.clamp(min=0)
        denominator = numerator.sum(dim=1, keepdim=True)
        usable = denominator > 0
    return torch.where(usable, numerator / torch.where(usable, denominator, 1.0), fallback)
