"""``ShapedGRPOTrainer``: TRL's GRPO with token advantages from a :class:`ShapedReward`.

GRPO gives every token of a completion the completion's advantage. This trainer lets GRPO
generate, score and normalise as usual, then replaces the ``B`` advantages with ``B x T`` token
advantages built from the attributions the :class:`~tokenshape.integrations.trl.ShapedReward`
kept on its last call (see :class:`~tokenshape.integrations.trl.config.TokenShapeConfig` for the
modes and the invariants they keep). ``GRPOTrainer._compute_loss`` takes ``B x T`` advantages as
they are; the KL penalty stays in the loss (``beta``), never in the rewards. TRL's tool mask (1 on
generated tokens, 0 on tool results) reaches every reward function as ``tool_mask=``, which is
how the shaped reward finds each assistant turn's tokens. TRL logs the sequence advantages before
they are replaced; the token advantages are logged as ``tokenshape/advantages/{mean,std,min,max}``.

Where TRL reads the advantage's sign, it reads it per token once advantages are per token:

- ``off_policy_mask_threshold`` (the off-policy sequence mask) drops, in a sequence whose mean KL
  exceeds the threshold, the tokens whose own advantage is negative, and keeps its tokens with a
  non-negative advantage (GRPO drops or keeps the sequence whole, by its one sign);
- ``loss_type="vespo"`` weights each token by the gamma function of the sequence's importance
  ratio with the shape (``k``, ``lambda``) of its own advantage's sign; ``"sapo"`` picks its
  temperature and the clip-ratio metrics count tokens by the token's sign likewise.

A token pushed down is treated as GRPO treats a sequence pushed down. With ``{"sparse": 1}`` every
token of a row has the row's sign, so these agree with GRPO exactly.

With ``importance_sampling_level="sequence"`` and ``{"sparse": 1}``, the losses and gradient
norms are GRPO's, but bit-for-bit equal parameters are not guaranteed: GRPO's loss multiplies a
``B x 1`` ratio by ``B x 1`` advantages, this trainer's by ``B x T`` ones, and the backward pass
sums the two broadcasts in different orders, so float32 rounding can differ. With the default
token-level ratio both compute the same products and the runs are identical.
"""

from __future__ import annotations

from typing import Any

import torch
import trl
from torch import Tensor

from tokenshape.completions import ShapedBatch
from tokenshape.errors import InvalidArgumentError, TokenShapeError

from .advantages import (
    advantage_units,
    last_token_weights,
    shaped_advantage_part,
    token_advantages,
    token_credit,
)
from .compat import check_trainer_settings, check_trl_support
from .config import TokenShapeConfig
from .reward import ShapedReward

__all__ = ["ShapedGRPOTrainer"]

check_trl_support()

#: How much of the advantage is reward-to-go in each mode (``hybrid`` reads ``hybrid_coef``).
_REWARD_TO_GO_COEF = {"weight": 0.0, "reward_to_go": 1.0}


def _widen(values: Tensor, width: int) -> Tensor:
    """``B x T'`` -> ``B x width`` (``T' <= width``), padded with zeros on the right."""
    return torch.nn.functional.pad(values, (0, width - values.shape[1]))


class ShapedGRPOTrainer(trl.GRPOTrainer):
    """GRPO whose advantages are per token, from the shaped rewards of a :class:`ShapedReward`.

    Takes every argument of ``trl.GRPOTrainer``; one of ``reward_funcs`` must be a
    :class:`ShapedReward` (the others stay sparse). The reward's ``policy_tokenizer`` is set to
    the trainer's tokenizer when it has none.

    Args:
        *args: positional arguments of ``trl.GRPOTrainer`` (``model``, ``reward_funcs``, ``args``).
        shaping_config: how token advantages are built (default :class:`TokenShapeConfig`).
        **kwargs: keyword arguments of ``trl.GRPOTrainer``.
    """

    def __init__(
        self, *args: Any, shaping_config: TokenShapeConfig | None = None, **kwargs: Any
    ) -> None:
        if shaping_config is not None and not isinstance(shaping_config, TokenShapeConfig):
            raise InvalidArgumentError(
                "shaping_config", shaping_config, "a TokenShapeConfig or None"
            )
        super().__init__(*args, **kwargs)
        self.shaping_config = shaping_config or TokenShapeConfig()
        self.shaped_reward_index = self._find_shaped_reward()
        reward = self.reward_funcs[self.shaped_reward_index]
        if reward.policy_tokenizer is None:
            reward.policy_tokenizer = self._tokenizer
        check_trainer_settings(self)
        self._rewards_per_func: Tensor | None = None
        self._tool_mask: list[list[int]] | None = None

    def _find_shaped_reward(self) -> int:
        index = self.shaping_config.reward_index
        names = [getattr(f, "__name__", type(f).__name__) for f in self.reward_funcs]
        if index is None:
            found = [i for i, f in enumerate(self.reward_funcs) if isinstance(f, ShapedReward)]
            if len(found) != 1:
                raise InvalidArgumentError(
                    "reward_funcs",
                    names,
                    "exactly one ShapedReward, or shaping_config.reward_index naming one",
                )
            return found[0]
        if index >= len(self.reward_funcs) or not isinstance(
            self.reward_funcs[index], ShapedReward
        ):
            raise InvalidArgumentError(
                "shaping_config.reward_index",
                index,
                f"the position of a ShapedReward in reward_funcs {names}",
            )
        return index

    def _generate(self, prompts):
        generated = super()._generate(prompts)
        self._tool_mask = generated[2]  # 1 on the policy's tokens, 0 on tool results; or None
        return generated

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        tool_mask, self._tool_mask = self._tool_mask, None
        if tool_mask is not None:  # every reward function receives it as tool_mask=
            inputs = [{**row, "tool_mask": mask} for row, mask in zip(inputs, tool_mask)]
        rewards_per_func = super()._calculate_rewards(
            inputs, prompts, completions, completion_ids_list
        )
        self._rewards_per_func = rewards_per_func
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        loss_mask = output["completion_mask"]
        if "tool_mask" in output:
            loss_mask = loss_mask * output["tool_mask"]
        advantages = self._token_advantages(output["advantages"], loss_mask, mode)
        self._log_token_advantages(advantages, loss_mask, mode)
        output["advantages"] = advantages
        return output

    def _shaped_batch(self, rows: int) -> ShapedBatch:
        batch = self.reward_funcs[self.shaped_reward_index].last
        if batch is None or batch.token_rewards is None or batch.scores.shape[0] != rows:
            raise TokenShapeError(
                f"reward_funcs[{self.shaped_reward_index}] kept no token rewards for this batch of "
                f"{rows} completions; a ShapedReward must be called synchronously by this trainer"
            )
        return batch

    def _token_advantages(
        self, sequence_advantages: Tensor, loss_mask: Tensor, mode: str
    ) -> Tensor:
        """``B`` GRPO advantages -> ``B x T`` token advantages (see :class:`TokenShapeConfig`)."""
        config = self.shaping_config
        rows, width = loss_mask.shape
        device = loss_mask.device
        batch = self._shaped_batch(rows)
        turn_index = _widen(batch.turn_index, width).to(device) if config.unit == "turn" else None
        units = advantage_units(loss_mask, turn_index)
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        start = self.accelerator.process_index * rows
        part = shaped_advantage_part(
            self._rewards_per_func,
            self.reward_weights,
            self.shaped_reward_index,
            num_generations=num_generations,
            scale_rewards=self.scale_rewards,
            aggregation=self.multi_objective_aggregation,
        )[start : start + rows].to(device)
        weights = self.reward_funcs[self.shaped_reward_index].params.weights
        attributions = {
            signal: _widen(phi, width).to(device)
            for signal, phi in batch.policy_attributions.items()
        }
        return token_advantages(
            sequence_advantages,
            part,
            token_credit(attributions, weights, loss_mask),
            units,
            last_weight=last_token_weights(attributions, weights, loss_mask),
            reward_to_go_coef=_REWARD_TO_GO_COEF.get(config.mode, config.hybrid_coef),
        )

    def _log_token_advantages(self, advantages: Tensor, loss_mask: Tensor, mode: str) -> None:
        mask = loss_mask.bool()
        values = advantages.double()
        local = torch.stack(
            [
                torch.where(mask, values, 0.0).sum(),
                torch.where(mask, values * values, 0.0).sum(),
                mask.sum().double(),
                torch.where(mask, values, torch.inf).min(),
                torch.where(mask, values, -torch.inf).max(),
            ]
        ).unsqueeze(0)
        stats = self.accelerator.gather(local)
        total, squares, count = stats[:, 0].sum(), stats[:, 1].sum(), stats[:, 2].sum()
        if count == 0:
            return
        mean = total / count
        variance = (squares - total * mean) / (count - 1).clamp(min=1)
        metrics = self._metrics[mode]
        metrics["tokenshape/advantages/mean"].append(mean.item())
        metrics["tokenshape/advantages/std"].append(variance.clamp(min=0).sqrt().item())
        metrics["tokenshape/advantages/min"].append(stats[:, 3].min().item())
        metrics["tokenshape/advantages/max"].append(stats[:, 4].max().item())
