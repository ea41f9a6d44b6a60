"""``AmortizedExplainer``: Shapley values at nearly the reward model's own cost, learned online.

The reward model is frozen for a whole RL run, so an explainer trained on the attributions of
earlier batches can explain later ones from the hidden states the reward's own forward computes
(FastSHAP, Jethani et al. 2022; amortised SHAP for text, Yang et al. 2023). On each call:

1. one forward of the reward model gives v(all), the hidden states and the head read at every
   position (:meth:`~tokenshape.reward.SequenceClassifierReward.scoring_states`);
2. an ``audit_fraction`` of the sequences (carried over between calls, so the long-run share is
   exact) is explained by the teacher, a Shapley method at ``teacher_budget`` rows;
3. the head's scores of those sequences are compared with the teacher's before the head learns
   from them: :attr:`AmortizedExplainer.fidelity` is an honest held-out estimate;
4. while the running Pearson is below ``min_pearson`` (or not yet measured on ``fidelity_window``
   sequences), every sequence of the call is explained by the teacher (the fallback), and the
   explainer logs when it enters and leaves that state;
5. the other sequences get the head's scores, made exactly efficient with one more row each for
   v(empty): their scores sum to v(all) - v(empty);
6. the head takes ``train_steps`` Adam steps on a replay buffer of the teacher-explained sequences.

Rows, counted per sequence in ``TokenAttribution.rows``: 1 for the forward of step 1; on a
teacher-explained sequence, the teacher's rows (its own full and empty rows included); on the
others, 1 for v(empty). The head's own passes and its training cost no reward-model rows and are
not counted (they run on hidden states of size H, not on the reward model).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tokenshape.amortized.fidelity import FidelityTracker
from tokenshape.amortized.head import ExplainerHead, HeadExample, pad_examples
from tokenshape.attribution.base import Attributor, GameAttribution
from tokenshape.attribution.exact import ExactShapleyAttributor
from tokenshape.attribution.kernel_shap import KernelShapAttributor
from tokenshape.errors import InvalidArgumentError
from tokenshape.game import RewardGame
from tokenshape.reward import check_reward_output
from tokenshape.types import TokenAttribution

__all__ = ["SHAPLEY_TEACHERS", "AmortizedExplainer"]

logger = logging.getLogger("tokenshape.amortized")

#: Teachers whose scores estimate Shapley values: method name -> attributor class.
SHAPLEY_TEACHERS: dict[str, type[Attributor]] = {
    "kernel_shap": KernelShapAttributor,
    "exact": ExactShapleyAttributor,
}

_FORMAT_VERSION = 1
#: Sequences per training step of the head.
_STEP_SEQUENCES = 32


def _positive_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidArgumentError(name, value, f"an int >= {low}")
    return value


def _model_signature(reward: Any) -> dict[str, Any]:
    """The architecture and hidden size of a reward's model, which a saved head depends on."""
    config = reward.model.config
    return {
        "architecture": type(reward.model).__name__,
        "hidden_size": int(config.hidden_size),
    }


class AmortizedExplainer(Attributor):
    """An online-trained explainer head for a :class:`~tokenshape.reward.SequenceClassifierReward`.

    Args:
        reward: the reward whose scores are explained; it must expose its hidden states
            (``scoring_states``), as :class:`~tokenshape.reward.SequenceClassifierReward` does for
            encoder and decoder classifiers.
        teacher: a Shapley method name from :data:`SHAPLEY_TEACHERS`.
        teacher_budget: the teacher's rows per sequence (>= 2).
        audit_fraction: the share of sequences the teacher explains, in (0, 1].
        seed: seeds the head's initialisation, the audit draws, the teacher's coalitions and
            the training batches; the same seed and calls give the same scores.
        min_pearson: the running Pearson below which the teacher explains everything; None
            never falls back.
        fidelity_window: teacher-explained sequences the running fidelity covers (>= 1).
        head_width: the head's hidden width.
        learning_rate: the head's Adam learning rate.
        train_steps: head training steps after each call that added teacher scores.
        buffer_size: teacher-explained sequences kept to train on (the oldest are dropped).

    Use it as a method of :func:`tokenshape.attribute` (``method=explainer``), through
    :meth:`attribute`, or as the ``"amortized"`` signal of :class:`~tokenshape.ShapedReward`.
    The ``seed`` of :func:`tokenshape.attribute` is not used: the explainer draws from its own.
    """

    name = "amortized"

    def __init__(
        self,
        reward: Any,
        *,
        teacher: str = "kernel_shap",
        teacher_budget: int = 64,
        audit_fraction: float = 0.25,
        seed: int = 0,
        min_pearson: float | None = 0.7,
        fidelity_window: int = 16,
        head_width: int = 64,
        learning_rate: float = 1e-3,
        train_steps: int = 16,
        buffer_size: int = 1024,
    ) -> None:
        if not callable(getattr(reward, "scoring_states", None)) or not hasattr(reward, "model"):
            raise InvalidArgumentError(
                "reward",
                reward,
                "a reward that exposes its hidden states: a SequenceClassifierReward (encoder or "
                "decoder classifier); a function of strings or of token ids cannot be amortised",
            )
        if not isinstance(teacher, str) or teacher not in SHAPLEY_TEACHERS:
            raise InvalidArgumentError(
                "teacher", teacher, f"a Shapley method name: one of {sorted(SHAPLEY_TEACHERS)}"
            )
        _positive_int("teacher_budget", teacher_budget, 2)
        if (
            isinstance(audit_fraction, bool)
            or not isinstance(audit_fraction, (int, float))
            or not 0 < audit_fraction <= 1
        ):
            raise InvalidArgumentError("audit_fraction", audit_fraction, "a number in (0, 1]")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InvalidArgumentError("seed", seed, "an int >= 0")
        if min_pearson is not None and (
            isinstance(min_pearson, bool)
            or not isinstance(min_pearson, (int, float))
            or not -1 <= min_pearson <= 1
        ):
            raise InvalidArgumentError("min_pearson", min_pearson, "None or a number in [-1, 1]")
        _positive_int("fidelity_window", fidelity_window, 1)
        _positive_int("head_width", head_width, 1)
        _positive_int("train_steps", train_steps, 0)
        _positive_int("buffer_size", buffer_size, 1)
        if not isinstance(learning_rate, (int, float)) or not learning_rate > 0:
            raise InvalidArgumentError("learning_rate", learning_rate, "a number > 0")
        self.reward = reward
        self.settings = {
            "teacher": teacher,
            "teacher_budget": teacher_budget,
            "audit_fraction": float(audit_fraction),
            "seed": seed,
            "min_pearson": None if min_pearson is None else float(min_pearson),
            "fidelity_window": fidelity_window,
            "head_width": head_width,
            "learning_rate": float(learning_rate),
            "train_steps": train_steps,
            "buffer_size": buffer_size,
        }
        self.signature = _model_signature(reward)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.head = ExplainerHead(self.signature["hidden_size"], head_width)
        self.optimizer = torch.optim.Adam(self.head.parameters(), lr=learning_rate)
        # Audits and teacher coalitions draw from one generator, training batches from another,
        # so which sequences are audited does not depend on how the head is trained.
        self.generator = torch.Generator().manual_seed(seed)
        self.train_generator = torch.Generator().manual_seed(seed + 1)
        self.fidelity = FidelityTracker(fidelity_window)
        self.buffer: list[HeadExample] = []
        self.audit_credit = 0.0
        self.fallback = False
        #: What the last call did: sequences, teacher-explained ones, rows, fallback.
        self.last_call: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------
    # Explaining

    def attribute(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        response_mask: Tensor,
        *,
        unit: str | Tensor = "token",
        masking: str | int = "auto",
        max_rows: int | None = None,
    ) -> TokenAttribution:
        """Explain a batch; see :func:`tokenshape.attribute` for the arguments and the result.

        ``rows`` counts the rows spent on each sequence (see the module docstring).
        """
        from tokenshape.attribution.api import attribute

        return attribute(
            self.reward,
            input_ids,
            attention_mask,
            response_mask,
            method=self,
            unit=unit,
            masking=masking,
            max_rows=max_rows,
        )

    @property
    def teacher(self) -> Attributor:
        """The teacher's attributor."""
        return SHAPLEY_TEACHERS[self.settings["teacher"]]()

    def _draw_seed(self) -> int:
        return int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator))

    def _examples(self, game: RewardGame) -> tuple[Tensor, list[HeadExample]]:
        """One forward of the reward model over the batch: v(all) ``B`` and each sequence's
        head inputs (without gap or target yet)."""
        chunk = game.evaluator.chunk_rows(game.input_ids.shape[1])
        rewards, examples = [], []
        for start in range(0, game.batch_size, chunk):
            stop = min(start + chunk, game.batch_size)
            states = self.reward.scoring_states(
                game.input_ids[start:stop], game.attention_mask[start:stop]
            )
            rewards.append(
                check_reward_output(states.reward, stop - start, name=game.evaluator.name)
            )
            game.evaluator.rows += stop - start
            for i in range(stop - start):
                units = game.unit_index[start + i].to(states.hidden.device)
                on = units >= 0
                examples.append(
                    HeadExample(
                        hidden=states.hidden[i, on].cpu(),
                        scoring_hidden=states.scoring_hidden[i].cpu(),
                        head_scores=states.head_scores[i, on].float().cpu(),
                        units=units[on].cpu(),
                        n_units=game.n_units[start + i],
                        gap=math.nan,
                    )
                )
        return torch.cat(rewards), examples

    def _subgame(self, game: RewardGame, rows: list[int]) -> RewardGame:
        index = torch.tensor(rows, dtype=torch.long, device=game.input_ids.device)
        return RewardGame(
            game.input_ids[index],
            game.attention_mask[index],
            game.unit_index[index],
            torch.tensor([game.n_units[b] for b in rows]),
            game.masking,
            game.evaluator,
        )

    def _predict(self, examples: list[HeadExample]) -> list[Tensor]:
        """The head's efficient scores (``M`` float64 each)."""
        self.head.eval()
        with torch.no_grad():
            scores = self.head(pad_examples(examples))
        return [scores[i, : e.n_units] for i, e in enumerate(examples)]

    def _teach(
        self,
        game: RewardGame,
        rows: list[int],
        examples: list[HeadExample],
        full: Tensor,
        out_scores: list[Tensor | None],
        out_base: list[Tensor | None],
        out_rows: list[int],
    ) -> None:
        """Explain ``rows`` with the teacher, record the head's fidelity on them before it
        learns, keep them for training and fill their outputs."""
        if not rows:
            return
        result = self.teacher.attribute_game(
            self._subgame(game, rows),
            budget=self.settings["teacher_budget"],
            seed=self._draw_seed(),
        )
        for k, b in enumerate(rows):
            examples[b].gap = float(full[b] - result.base_value[k])
        predicted = self._predict([examples[b] for b in rows])
        for k, b in enumerate(rows):
            target = result.unit_scores[k].double().cpu()
            self.fidelity.update(predicted[k], target)
            examples[b].target = target
            self.buffer.append(examples[b])
            out_scores[b] = result.unit_scores[k]
            out_base[b] = result.base_value[k]
            out_rows[b] += int(result.rows[k])
        del self.buffer[: max(0, len(self.buffer) - self.settings["buffer_size"])]

    def _fidelity_low(self) -> bool:
        threshold = self.settings["min_pearson"]
        if threshold is None:
            return False
        return not self.fidelity.full or self.fidelity.pearson < threshold

    def _update_fallback(self) -> None:
        low = self._fidelity_low()
        if low != self.fallback:
            if low:
                logger.warning(
                    "amortized explainer: running Pearson %.3f (over %d of fidelity_window=%d "
                    "sequences) is below min_pearson=%s or not measured on a full window yet; "
                    "the teacher (%s) explains every sequence",
                    self.fidelity.pearson,
                    len(self.fidelity.pearsons),
                    self.fidelity.window,
                    self.settings["min_pearson"],
                    self.settings["teacher"],
                )
            else:
                logger.info(
                    "amortized explainer: fidelity %.3f reached min_pearson=%s; the head explains "
                    "the unaudited sequences",
                    self.fidelity.pearson,
                    self.settings["min_pearson"],
                )
        self.fallback = low

    def attribute_game(self, game: RewardGame, *, budget: int | None, seed: int) -> GameAttribution:
        if game.evaluator.reward_fn is not self.reward:
            raise InvalidArgumentError(
                "reward_fn",
                game.evaluator.reward_fn,
                "the reward this AmortizedExplainer was built for",
            )
        n = game.batch_size
        full, examples = self._examples(game)
        out_scores: list[Tensor | None] = [None] * n
        out_base: list[Tensor | None] = [None] * n
        out_rows = [1] * n
        self._update_fallback()
        if self.fallback:
            audited = list(range(n))
        else:
            self.audit_credit += self.settings["audit_fraction"] * n
            count = min(n, int(self.audit_credit + 1e-9))
            self.audit_credit -= count
            audited = sorted(torch.randperm(n, generator=self.generator)[:count].tolist())
        self._teach(game, audited, examples, full, out_scores, out_base, out_rows)
        self._update_fallback()
        rest = [b for b in range(n) if out_scores[b] is None]
        if self.fallback:
            self._teach(game, rest, examples, full, out_scores, out_base, out_rows)
        elif rest:
            empty = [
                torch.zeros(int(out_scores[b] is None), m, dtype=torch.bool)
                for b, m in enumerate(game.n_units)
            ]
            values = game.values(empty)
            for b in rest:
                out_base[b] = values[b][0]
                out_rows[b] += 1
                examples[b].gap = float(full[b] - values[b][0])
            for b, phi in zip(rest, self._predict([examples[b] for b in rest])):
                out_scores[b] = phi
        self._train()
        device = game.input_ids.device
        self.last_call = {
            "sequences": n,
            "teacher_sequences": sum(1 for e in examples if e.target is not None),
            "rows": sum(out_rows),
            "fallback": self.fallback,
        }
        return GameAttribution(
            unit_scores=[phi.to(device=device, dtype=torch.float64) for phi in out_scores],
            base_value=torch.stack([b.to(device=device, dtype=torch.float64) for b in out_base]),
            full_value=full.to(device=device, dtype=torch.float64),
            rows=torch.tensor(out_rows, dtype=torch.long),
        )

    # ------------------------------------------------------------------------------------------
    # Training

    def _train(self) -> None:
        if not self.buffer:
            return
        self.head.train()
        for _ in range(self.settings["train_steps"]):
            size = min(_STEP_SEQUENCES, len(self.buffer))
            picks = torch.randperm(len(self.buffer), generator=self.train_generator)[:size]
            picks = picks.tolist()
            batch = pad_examples([self.buffer[i] for i in picks])
            predicted = self.head(batch)
            error = (predicted - batch["target"]).square().sum(dim=1)
            loss = (error / batch["unit_mask"].sum(dim=1)).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        self.head.eval()

    # ------------------------------------------------------------------------------------------
    # Saving

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this explainer is."""
        return {
            "format_version": _FORMAT_VERSION,
            "signature": dict(self.signature),
            "settings": dict(self.settings),
            "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "train_generator": self.train_generator.get_state(),
            "fidelity": self.fidelity.state_dict(),
            "buffer": [vars(e) for e in self.buffer],
            "audit_credit": self.audit_credit,
            "fallback": self.fallback,
        }

    def save(self, path: str | Path) -> None:
        """Write the explainer (head, optimiser, buffer, fidelity, random state) to ``path``."""
        torch.save(self.state_dict(), Path(path))

    @classmethod
    def load(cls, path: str | Path, reward: Any) -> AmortizedExplainer:
        """An explainer saved by :meth:`save`, bound to ``reward``.

        Raises:
            InvalidArgumentError: ``reward``'s model has another architecture or hidden size
                than the one the explainer was saved for.
        """
        state = torch.load(Path(path), weights_only=True)
        if state.get("format_version") != _FORMAT_VERSION:
            raise InvalidArgumentError(
                "path",
                str(path),
                f"an explainer saved by AmortizedExplainer.save (format {_FORMAT_VERSION})",
            )
        explainer = cls(reward, **state["settings"])
        if explainer.signature != state["signature"]:
            saved = state["signature"]
            raise InvalidArgumentError(
                "reward",
                f"{explainer.signature['architecture']} with hidden size "
                f"{explainer.signature['hidden_size']}",
                f"the reward model the explainer was saved for: {saved['architecture']} with "
                f"hidden size {saved['hidden_size']}",
            )
        explainer.head.load_state_dict(state["head"])
        explainer.optimizer.load_state_dict(state["optimizer"])
        explainer.generator.set_state(state["generator"])
        explainer.train_generator.set_state(state["train_generator"])
        explainer.fidelity = FidelityTracker.from_state_dict(state["fidelity"])
        explainer.buffer = [HeadExample(**e) for e in state["buffer"]]
        explainer.audit_credit = float(state["audit_credit"])
        explainer.fallback = bool(state["fallback"])
        return explainer
