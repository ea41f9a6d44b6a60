"""Gradient x input on the response tokens' input embeddings (P2T, Grad2Reward style).

For token t with input embedding e_t and the replacement token's embedding b (the token the game
hides units with), the token's score is (e_t - b) . d v(all) / d e_t; a unit sums its tokens'
scores. With ``masking="remove"`` there is no replacement token and the score is e_t . d v / d e_t.

Relation to Shapley values: (e_t - b) . grad is the first-order Taylor estimate of what replacing
token t by the replacement token changes, v(all) - v(all without t). For a reward that is linear in
the embeddings the marginal contribution of t is the same in every coalition, so this equals the
Shapley value; interactions between tokens and the curvature of the model are what it misses. The
scores are not constrained to sum to v(all) - v(empty): ``base_value`` is 0 and v(empty) is not
computed (``efficiency_error`` then shows how far the sum is from v(all)).

Rows: one forward and one backward per sequence, and a backward costs about two forwards (it
multiplies by every weight matrix twice, once for the activations' gradient and once for the
weights'; here the weights' gradients are not formed, so 2 is an upper bound): 3 rows per sequence.
"""

from __future__ import annotations

import torch

from tokenshape.attribution.base import Attributor, GameAttribution
from tokenshape.errors import InvalidArgumentError
from tokenshape.game import RewardGame
from tokenshape.reward import check_reward_output

__all__ = ["BACKWARD_ROWS", "GradientAttributor"]

#: Forward rows a backward pass is counted as.
BACKWARD_ROWS = 2


class GradientAttributor(Attributor):
    """Gradient x input; 1 + :data:`BACKWARD_ROWS` rows per sequence, whatever the budget."""

    name = "gradient"

    def attribute_game(self, game: RewardGame, *, budget: int | None, seed: int) -> GameAttribution:
        reward_fn = game.evaluator.reward_fn
        if not callable(getattr(reward_fn, "gradient_times_input", None)):
            raise InvalidArgumentError(
                "reward_fn",
                reward_fn,
                "a differentiable reward with gradient_times_input (e.g. "
                "SequenceClassifierReward) for method='gradient'",
            )
        baseline = None if game.masking.remove else game.masking.token_id
        chunk = game.evaluator.chunk_rows(game.input_ids.shape[1])
        values, token_scores = [], []
        for start in range(0, game.batch_size, chunk):
            stop = min(start + chunk, game.batch_size)
            value, scores = reward_fn.gradient_times_input(
                game.input_ids[start:stop], game.attention_mask[start:stop], baseline_id=baseline
            )
            values.append(check_reward_output(value, stop - start, name=game.evaluator.name))
            token_scores.append(scores.double())
            game.evaluator.rows += (1 + BACKWARD_ROWS) * (stop - start)
        full = torch.cat(values)
        per_token = torch.cat(token_scores).to(game.input_ids.device)
        scores = game.unit_sums(per_token)
        rows = torch.full((game.batch_size,), 1 + BACKWARD_ROWS, dtype=torch.long)
        return GameAttribution(scores, torch.zeros_like(full), full, rows)
