"""Prefix differences (RED-style reward redistribution, arXiv 2411.08302).

Units are taken in reading order (by their last token). With p_k the prefix of the sequence that
ends at the last token of unit k, and p_0 the prompt-only prefix (everything before the first
unit), unit k scores v(p_k) - v(p_{k-1}); the last unit's prefix is the whole sequence, so the
scores telescope to v(all) - v(p_0) and ``base_value`` is v(p_0).

How a prefix is scored:

* a decoder classifier (a :class:`~tokenshape.reward.SequenceClassifierReward` scored at the last
  token) reads the classification head at every position of one forward: a causal model's state at
  position p depends only on the tokens up to p, so that is every prefix's score, one row per
  sequence;
* any other reward evaluates the coalitions {}, {1}, {1, 2}, ..., {1..M} of the game: M + 1 rows
  per sequence. The units after the prefix are hidden as the game hides them, so with
  ``masking="remove"`` the prefix is the truncated text (the tokens after the response, such as
  [SEP], stay); with a replacement token it is the text with its tail masked.

Relation to Shapley values: the score of unit k is its marginal contribution to one coalition, the
units before it, which is the Shapley value's summand for the single ordering "in reading order"
(Shapley values average that contribution over every ordering). Efficient by construction.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tokenshape.attribution.base import Attributor, GameAttribution
from tokenshape.errors import InvalidArgumentError
from tokenshape.game import RewardGame
from tokenshape.reward import check_reward_output

__all__ = ["PrefixAttributor", "unit_order"]


def unit_order(unit_index: Tensor, n_units: int) -> tuple[Tensor, Tensor]:
    """Units in reading order and the column each ends at.

    Args:
        unit_index: ``L`` long, one row's unit numbers (-1 off the players).
        n_units: M.

    Returns:
        (order ``M`` long: unit numbers sorted by their last token, ends ``M`` long: the column
        of each of them), on ``unit_index``'s device.
    """
    columns = torch.arange(unit_index.shape[0], device=unit_index.device)
    on = unit_index >= 0
    last = torch.full((n_units,), -1, dtype=torch.long, device=unit_index.device)
    last.scatter_reduce_(0, unit_index[on], columns[on], reduce="amax")
    order = last.argsort(stable=True)
    return order, last[order]


def _one_forward(reward_fn) -> bool:
    """Whether every prefix's score comes out of one forward of ``reward_fn``."""
    return getattr(reward_fn, "scoring_position", None) == "last" and callable(
        getattr(reward_fn, "scoring_states", None)
    )


class PrefixAttributor(Attributor):
    """Prefix differences; 1 row per sequence on a decoder classifier, else M + 1."""

    name = "prefix"

    def attribute_game(self, game: RewardGame, *, budget: int | None, seed: int) -> GameAttribution:
        if _one_forward(game.evaluator.reward_fn):
            return self._from_head_scores(game)
        return self._from_coalitions(game)

    def _from_coalitions(self, game: RewardGame) -> GameAttribution:
        orders, coalitions = [], []
        for b, n_units in enumerate(game.n_units):
            order, _ = unit_order(game.unit_index[b], n_units)
            kept = torch.zeros(n_units + 1, n_units, dtype=torch.bool)
            for k, unit in enumerate(order.tolist()):
                kept[k + 1 :, unit] = True
            orders.append(order)
            coalitions.append(kept)
        values = game.values(coalitions)
        scores = []
        for order, value in zip(orders, values):
            phi = torch.zeros(order.shape[0], dtype=torch.float64, device=value.device)
            phi[order.to(value.device)] = value[1:] - value[:-1]
            scores.append(phi)
        base = torch.stack([value[0] for value in values])
        full = torch.stack([value[-1] for value in values])
        rows = torch.tensor([c.shape[0] for c in coalitions], dtype=torch.long)
        return GameAttribution(scores, base, full, rows)

    def _from_head_scores(self, game: RewardGame) -> GameAttribution:
        reward_fn = game.evaluator.reward_fn
        starts = []
        for b in range(game.batch_size):
            first = int((game.unit_index[b] >= 0).nonzero()[0])
            if first == 0 or not bool(game.attention_mask[b, first - 1]):
                raise InvalidArgumentError(
                    "response_mask",
                    f"row {b} starts its response at column {first} with no attended token "
                    "before it",
                    "a prompt (at least one attended token) before the response, for "
                    "method='prefix' on a decoder reward model",
                )
            starts.append(first)
        chunk = game.evaluator.chunk_rows(game.input_ids.shape[1])
        rewards, heads = [], []
        for start in range(0, game.batch_size, chunk):
            stop = min(start + chunk, game.batch_size)
            states = reward_fn.scoring_states(
                game.input_ids[start:stop], game.attention_mask[start:stop]
            )
            rewards.append(
                check_reward_output(states.reward, stop - start, name=game.evaluator.name)
            )
            heads.append(states.head_scores.double())
            game.evaluator.rows += stop - start
        full = torch.cat(rewards)
        head = torch.cat(heads).to(game.input_ids.device)
        scores, base = [], []
        for b, n_units in enumerate(game.n_units):
            order, ends = unit_order(game.unit_index[b], n_units)
            prefix = torch.cat([head[b, starts[b] - 1].reshape(1), head[b, ends[:-1]]])
            values = torch.cat([prefix, full[b].to(head.device).reshape(1)])
            phi = torch.zeros(n_units, dtype=torch.float64, device=head.device)
            phi[order] = values[1:] - values[:-1]
            scores.append(phi)
            base.append(values[0])
        rows = torch.ones(game.batch_size, dtype=torch.long)
        return GameAttribution(scores, torch.stack(base), full.to(head.device), rows)
