"""``TokenShapeRewardManager``: verl's reward manager ``"tokenshape"``, dense token rewards for PPO.

For each trajectory verl's reward loop awaits :meth:`TokenShapeRewardManager.run_single`; the
calls a reward-loop worker makes at once are gathered into one batch, which tokenshape's shared
core (:meth:`CompletionShaper.shape <tokenshape.completions.CompletionShaper.shape>`, the one
TRL's reward function calls too) scores with the reward model, explains and shapes into token
rewards aligned to the policy's response tokens. ``run_single`` returns them as the trajectory's
``reward_score`` (a list, one float per valid response token, summing to the reward model's
score), and :meth:`TokenShapeRewardManager.assemble_rm_scores` lays them out as verl's ``B x R``
``rm_scores``, which the trainer turns into ``token_level_scores`` and GAE consumes per token.
"""

from __future__ import annotations

import asyncio
import math
import numbers
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from verl.experimental.reward_loop.reward_manager import register
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from tokenshape.completions import CompletionShaper
from tokenshape.errors import InvalidArgumentError, RewardFunctionError
from tokenshape.reward import SequenceClassifierReward

from .config import CONFIG_KEY, VerlShapingConfig
from .trajectory import Trajectory, read_trajectory

__all__ = ["MANAGER_NAME", "TokenShapeRewardManager", "load_completion_shaper", "reward_device"]

#: The manager's name in verl's registry (``reward.reward_manager.name``).
MANAGER_NAME = "tokenshape"

#: Arguments of the reward model's wrappers whose errors are about another setting of the config.
_SETTING_OF_ARGUMENT = {"tokenizer": "reward_model_path", "reward": "reward_model_path"}


def _setting_error(error: InvalidArgumentError) -> InvalidArgumentError:
    name = _SETTING_OF_ARGUMENT.get(error.name, error.name)
    return InvalidArgumentError(f"{CONFIG_KEY}.{name}", error.value, error.expected)


def reward_device() -> torch.device:
    """Where the manager runs its reward model: the first GPU the process sees, else the CPU.

    verl's reward-loop workers are Ray actors that ask for no GPU, and Ray hides the GPUs from
    such actors (``CUDA_VISIBLE_DEVICES=""``), so there this is the CPU.
    """
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def load_completion_shaper(settings: VerlShapingConfig) -> CompletionShaper:
    """Load the reward model of ``settings`` onto :func:`reward_device` and wrap it in the
    shared core.

    Args:
        settings: the manager's settings.

    Raises:
        InvalidArgumentError: ``reward.tokenshape.reward_model_path`` does not load as a sequence
            classifier with a fast tokenizer, or a setting does not fit the loaded model.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = settings.reward_model_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path)
    except (OSError, ValueError, KeyError) as error:
        raise InvalidArgumentError(
            f"{CONFIG_KEY}.reward_model_path",
            path,
            f"a Hugging Face sequence classifier with its tokenizer ({type(error).__name__}: "
            f"{str(error)[:200]})",
        ) from error
    model.eval().to(reward_device())
    try:
        reward = SequenceClassifierReward(
            model, tokenizer, label=settings.label, minus_label=settings.minus_label
        )
        return CompletionShaper(reward, settings.completion_shaping(), tokenizer=tokenizer)
    except InvalidArgumentError as error:
        raise _setting_error(error) from error


def _score_trajectories(
    shaper: CompletionShaper, policy_tokenizer: Any, trajectories: Sequence[Trajectory]
) -> list[dict]:
    """Score, explain and shape a batch; one ``run_single`` result per trajectory."""
    batch = shaper.shape(
        [t.prompt for t in trajectories],
        [t.completion for t in trajectories],
        [t.response_ids for t in trajectories],
        policy_tokenizer=policy_tokenizer,
    )
    return [
        {
            "reward_score": batch.token_rewards[row, : len(t.response_ids)].tolist(),
            "reward_extra_info": {"score": float(score)},
        }
        for row, (t, score) in enumerate(zip(trajectories, batch.scores.tolist()))
    ]


@register(MANAGER_NAME)
class TokenShapeRewardManager(RewardManagerBase):
    """Explained, shaped reward-model scores as dense ``rm_scores`` for verl's PPO.

    Built by verl's ``load_reward_manager`` in each reward-loop worker. Its settings are read
    from ``reward.tokenshape`` (see :class:`~tokenshape.integrations.verl.VerlShapingConfig`)
    and checked before the reward model is loaded. ``compute_score`` (verl's rule-based or
    custom reward function) is not called: the reward model scores every trajectory.

    Args:
        config: verl's trainer config.
        tokenizer: the policy's tokenizer.
        compute_score: verl's reward function, unused.
        reward_router_address: the address of verl's served reward model, unused (the manager
            runs its own copy of the model; see the README's section "PPO on verl").
        reward_model_tokenizer: the served reward model's tokenizer, unused.
    """

    def __init__(
        self,
        config: Any,
        tokenizer: Any,
        compute_score: Any = None,
        reward_router_address: str | None = None,
        reward_model_tokenizer: Any = None,
    ) -> None:
        settings = VerlShapingConfig.from_trainer_config(config)
        super().__init__(config, tokenizer, compute_score)
        self.settings = settings
        self.shaper = load_completion_shaper(settings)
        # The trajectories of the batch being gathered and the task that will score them.
        self._gathering: tuple[list[Trajectory], asyncio.Task] | None = None
        # One thread runs the reward model, so batches never overlap on it.
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenshape")

    async def run_single(self, data: Any) -> dict:
        """Score one trajectory (the last sequence of ``data``).

        Calls started together (a worker's ``compute_score_batch`` starts them all at once) are
        scored as one batch: the first call starts a task, which runs once the others, already
        queued on the event loop, have added their trajectories.

        Returns:
            ``{"reward_score": [n floats], "reward_extra_info": {"score": r}}``: the token
            rewards of the ``n`` valid response tokens, summing to the reward model's score ``r``.
        """
        trajectory = read_trajectory(data, self.tokenizer)
        if self._gathering is None:
            self._gathering = ([], asyncio.get_running_loop().create_task(self._score_gathered()))
        trajectories, task = self._gathering
        position = len(trajectories)
        trajectories.append(trajectory)
        return (await task)[position]

    async def _score_gathered(self) -> list[dict]:
        trajectories, _ = self._gathering
        self._gathering = None
        return await asyncio.get_running_loop().run_in_executor(
            self._model_thread, _score_trajectories, self.shaper, self.tokenizer, trajectories
        )

    @classmethod
    def assemble_rm_scores(cls, data: Any, scores: Sequence[Any]) -> torch.Tensor:
        """Lay each trajectory's token rewards over its valid response tokens.

        Args:
            data: the batch, with ``prompts`` (``B x P``), ``responses`` (``B x R``) and
                ``attention_mask`` (``B x (P + R)``).
            scores: ``B`` entries, each a list of ``n_i`` token rewards (``n_i`` the row's valid
                response tokens) or a single number, which goes on the last valid token as in
                verl's default assembly.

        Returns:
            ``B x R`` float32 ``rm_scores``, zero after each row's valid tokens.

        Raises:
            RewardFunctionError: a score list whose length is not the row's valid response
                length, a non-finite value, or a number of scores other than ``B``.
        """
        prompt_length = data.batch["prompts"].size(1)
        lengths = data.batch["attention_mask"][:, prompt_length:].sum(dim=1).tolist()
        rm_scores = torch.zeros_like(data.batch["responses"], dtype=torch.float32)
        if len(scores) != rm_scores.size(0):
            raise RewardFunctionError(
                f"{len(scores)} reward scores for a batch of {rm_scores.size(0)}: expected one "
                "per trajectory"
            )
        for row, (score, length) in enumerate(zip(scores, lengths)):
            if isinstance(score, numbers.Real):
                values = [float(score)]
                start = length - 1
            else:
                values = [float(value) for value in score]
                start = 0
                if len(values) != length:
                    raise RewardFunctionError(
                        f"row {row}: {len(values)} token rewards for {length} valid response "
                        "tokens: expected one per token"
                    )
            if not all(math.isfinite(value) for value in values):
                raise RewardFunctionError(f"row {row}: non-finite token rewards {values[:5]}")
            if values and length > 0:
                rm_scores[row, start:length] = rm_scores.new_tensor(values)
        return rm_scores
