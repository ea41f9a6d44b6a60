"""Attention-based credit (ABC, arXiv 2402.00782): the reward model's own attention.

The last layer's attention from the scoring position, averaged over heads, is restricted to the
response and renormalised into shares alpha_u over the units (a unit sums its tokens' attention).
The scores distribute the full reward, scores_u = v(all) * alpha_u, so the base value is 0. The
attention comes from the same forward that computes v(all): no extra rows.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tokenshape.attribution.base import Attributor, GameAttribution
from tokenshape.errors import InvalidArgumentError
from tokenshape.game import RewardGame
from tokenshape.reward import check_reward_output

__all__ = ["AttentionAttributor"]


class AttentionAttributor(Attributor):
    """Attention credit; one row per sequence, whatever the budget."""

    name = "attention"
    uses_masking = False

    def attribute_game(self, game: RewardGame, *, budget: int | None, seed: int) -> GameAttribution:
        reward_fn = game.evaluator.reward_fn
        if not hasattr(reward_fn, "scoring_attention"):
            raise InvalidArgumentError(
                "reward_fn",
                reward_fn,
                "a reward function with scoring_attention (e.g. SequenceClassifierReward) for "
                "method='attention'",
            )
        ids, mask = game.input_ids, game.attention_mask

        def run(start: int, stop: int) -> tuple[Tensor, Tensor]:
            value, weights = reward_fn.scoring_attention(ids[start:stop], mask[start:stop])
            return check_reward_output(value, stop - start, name=game.evaluator.name), weights

        chunks = game.evaluator.map_chunks(game.batch_size, ids.shape[1], run)
        values = [value for value, _ in chunks]
        attention = [weights.double() for _, weights in chunks]
        full = torch.cat(values)
        weights = torch.cat(attention).to(game.input_ids.device)
        scores = []
        for b, share in enumerate(game.unit_sums(weights)):
            total = share.sum()
            share = share / total if total > 0 else torch.full_like(share, 1.0 / share.numel())
            scores.append(full[b].to(share.device) * share)
        rows = torch.ones(game.batch_size, dtype=torch.long)
        return GameAttribution(scores, torch.zeros_like(full), full, rows)
