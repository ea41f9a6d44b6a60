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
    """How :class:`~tokenshape.integrations.trl.ShapedGRPOTrainer` turns explained rewards into advantages.

    Notation: ``A_i`` is GRPO's advantage of completion ``i``; ``a_i`` the part of it due to the
    shaped reward function (all of it when that is the only reward function; the parts of all
    reward functions sum to ``A_i``, whatever ``scale_rewards`` and
    ``multi_objective_aggregation``); ``n_i`` the completion's number of loss tokens; ``w`` the
    shaping weights; ``phi_j`` the attributions of signal ``j`` on the policy's tokens. The credit
    of token ``t`` is ``c_{i,t} = 1 + sum_{j != sparse} w_j n_i (phi_{j,t} - mean phi_j) /
    sum |phi_j|`` (it averages 1 over the row and grows with the token's attribution; the sparse
    signal credits every token alike). The credit reads the attributions themselves, so the
    shaping ``normalization`` (which splits a score into ``ShapedReward.last.token_rewards``) does
    not enter it. See :func:`~tokenshape.integrations.trl.advantages.token_advantages`.

    - ``"weight"``: ``A_{i,t} = A_i + |a_i| (c_{i,t} - 1)``. The row's mean token advantage is
      ``A_i``, and within a row a token with a higher attribution never gets a lower advantage,
      whether the completion beat its group (``a_i > 0``) or not. The amount moved between
      tokens is ``|a_i|``, the row's own learning signal.
    - ``"reward_to_go"``: the centred, scaled shaped reward ``a_i`` is split into token rewards
      ``a_i u_{i,t}`` with ``u = w_sparse [t = last] + ((1 - w_sparse) + sign(a_i) (c_t - 1)) /
      n_i`` (``sum_t u = 1``; a token reward grows with its attribution), the other reward
      functions' part ``A_i - a_i`` sits on the last token, and ``A_{i,t}`` is the sum of the
      token rewards from ``t`` to the end: ``A_i + a_i (sum_{s >= t} u_s - 1)``. The first token
      gets ``A_i``; no token strays more than ``3 |a_i|`` from it, at any length, so no
      ``loss_type`` (length-normalised per sequence or not) sees advantages grow with length.
    - ``"hybrid"``: ``A_i + (1 - hybrid_coef) |a_i| (c - 1) + hybrid_coef a_i (sum_{s >= t} u_s -
      1)``.

    Invariants of every mode, tested: a constant added to every reward changes no advantage
    (``a_i`` is centred and attributions are differences of rewards); identical completions with
    identical scores get 0; ``{"sparse": 1}`` gives GRPO's advantages bit for bit; tokens outside
    the loss mask (padding, tool results) get 0; a prompt group split between processes gets the
    advantages it would get on one (only TRL's gathered rewards cross processes). A completion
    without players (empty) credits its tokens alike in ``"weight"`` mode and puts its shares on
    its last token in ``"reward_to_go"``.

    With ``unit="turn"`` every loss token of a turn (one assistant message's tokens) gets the same
    advantage: the turn's mean credit in the weight term, and the shares from the turn to the end
    in the reward-to-go term.

    Args:
        mode: one of :data:`MODES`.
        hybrid_coef: in [0, 1], the weight of ``reward_to_go`` in ``"hybrid"`` mode.
        unit: one of :data:`ADVANTAGE_UNITS`.
        reward_index: the position of the :class:`~tokenshape.integrations.trl.ShapedReward` in the
            trainer's ``reward_funcs``; ``None`` finds the only one there.
    """

    mode: str = field(
        default="weight",
        metadata={
            "help": "How token advantages are built: 'weight' moves each completion's GRPO "
            "advantage between its tokens by their attribution (the row's mean stays GRPO's), "
            "'reward_to_go' sums the centred shaped reward's token shares from each token to "
            "the end, 'hybrid' mixes the two with hybrid_coef. {'sparse': 1} is GRPO in all.",
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
