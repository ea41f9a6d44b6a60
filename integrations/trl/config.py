"""Settings of the shaped GRPO trainer: how shaped token rewards become token advantages."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tokenshape.errors import InvalidArgumentError

__all__ = ["ADVANTAGE_UNITS", "MODES", "TokenShapeConfig"]

#: How token advantages are built; see :class:`TokenShapeConfig`.
MODES = ("weight", "reward_to_go", "hybrid")
#: The granularity of token advantages.
ADVANTAGE_UNITS = ("token", "turn")


@dataclass(kw_only=True)
class TokenShapeConfig:
    """How :class:`~tokenshape.integrations.trl.ShapedGRPOTrainer` turns shaped rewards into advantages.

    With ``A_i`` the GRPO advantage of completion ``i``, ``a_i`` the part of it that comes from the
    shaped reward function (all of it when that is the only reward function), ``n_i`` the number
    of completion tokens in the loss, ``w`` the shaping weights and ``e_j`` the per-token shares of
    signal ``j`` (each summing to 1 over the completion):

    - ``"weight"``: ``A_{i,t} = A_i + a_i (c_{i,t} - 1)`` with credit
      ``c_{i,t} = w_sparse + n_i sum_{j != sparse} w_j e_{j,t}``. The credit averages 1 over the
      completion's tokens, so the mean token advantage of a row is ``A_i``. The sparse signal puts
      the whole reward after the last token, which every token's return includes equally, so it
      credits every token alike: ``{"sparse": 1}`` gives vanilla GRPO exactly.
    - ``"reward_to_go"``: the shaped token rewards (the other reward functions' rewards on the
      last token, scaled by ``reward_weights``) are normalised with the mean and standard deviation
      of all token rewards of the prompt's group (``scale_rewards`` of the GRPO config chooses
      the group's, the batch's or no standard deviation), and ``A_{i,t}`` is the sum of the
      normalised rewards from ``t`` to the end. These advantages grow with the length of the
      completion: prefer ``loss_type="dapo"`` or ``"dr_grpo"``.
    - ``"hybrid"``: ``(1 - hybrid_coef) * weight + hybrid_coef * reward_to_go``.

    With ``unit="turn"`` every token of a turn (an assistant message and the tokens that follow it
    up to the next one) gets the same advantage: the mean credit of the turn's tokens in
    ``"weight"`` mode, and in ``"reward_to_go"`` mode the turn rewards (the sum of their tokens'
    rewards) are normalised over the group's turns and summed from the turn to the end.

    Args:
        mode: one of :data:`MODES`.
        hybrid_coef: in [0, 1], the weight of ``reward_to_go`` in ``"hybrid"`` mode.
        unit: one of :data:`ADVANTAGE_UNITS`.
        reward_index: the position of the :class:`~tokenshape.shaped_reward.ShapedReward` in the
            trainer's ``reward_funcs``; ``None`` finds the only one there.
    """

    mode: str = field(
        default="weight",
        metadata={
            "help": "How token advantages are built: 'weight' spreads each completion's GRPO "
            "advantage over its tokens by their shaped credit ({'sparse': 1} is vanilla GRPO), "
            "'reward_to_go' sums group-normalised shaped token rewards from each token to the "
            "end, 'hybrid' mixes the two with hybrid_coef.",
            "choices": list(MODES),
        },
    )
    hybrid_coef: float = field(
        default=0.5,
        metadata={"help": "Weight of 'reward_to_go' in 'hybrid' mode, in [0, 1]."},
    )
    unit: str = field(
        default="token",
        metadata={
            "help": "'token': every token has its own advantage; 'turn': the tokens of each "
            "assistant turn share one advantage (multi-turn conversations).",
            "choices": list(ADVANTAGE_UNITS),
        },
    )
    reward_index: int | None = field(
        default=None,
        metadata={
            "help": "Position of the ShapedReward in reward_funcs; by default the only one "
            "there. The other reward functions stay sparse."
        },
    )

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidArgumentError("mode", self.mode, f"one of {MODES}")
        coef = self.hybrid_coef
        if (
            isinstance(coef, bool)
            or not isinstance(coef, (int, float))
            or not (math.isfinite(coef) and 0 <= coef <= 1)
        ):
            raise InvalidArgumentError("hybrid_coef", coef, "a number in [0, 1]")
        if self.unit not in ADVANTAGE_UNITS:
            raise InvalidArgumentError("unit", self.unit, f"one of {ADVANTAGE_UNITS}")
        index = self.reward_index
        if index is not None and (
            isinstance(index, bool) or not isinstance(index, int) or index < 0
        ):
            raise InvalidArgumentError("reward_index", index, "None or an int >= 0")
        self.hybrid_coef = float(coef)
