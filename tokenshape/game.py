"""The reward game: v_b(S) = reward of row b with the units outside coalition S hidden.

One :class:`RewardGame` holds a batch of sequences. :meth:`RewardGame.values` evaluates any number
of coalitions for every sequence in one chunked pass, so coalitions of different sequences share
forwards (this is how a training step's whole batch is explained at once).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tokenshape.errors import InvalidArgumentError
from tokenshape.evaluation import ChunkedEvaluator
from tokenshape.masking import Masking, is_left_padded

__all__ = ["RewardGame"]


class RewardGame:
    """Coalition values of a batch of sequences.

    Args:
        input_ids: ``B x L``.
        attention_mask: ``B x L``.
        unit_index: ``B x L`` long, unit number of each token or -1 (see :mod:`tokenshape.units`).
        n_units: ``B`` long, number of units ``M_b`` per row.
        masking: how hidden units are hidden.
        evaluator: evaluates rows and counts them.
    """

    def __init__(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        unit_index: Tensor,
        n_units: Tensor,
        masking: Masking,
        evaluator: ChunkedEvaluator,
    ) -> None:
        self.input_ids = input_ids
        self.attention_mask = attention_mask
        self.unit_index = unit_index
        self.n_units = [int(m) for m in n_units.tolist()]
        self.masking = masking
        self.evaluator = evaluator
        # Decided once for the batch, so a row is packed the same way whatever chunk it lands in.
        self.left_padded = is_left_padded(attention_mask)

    @property
    def batch_size(self) -> int:
        return self.input_ids.shape[0]

    @property
    def rows(self) -> int:
        """Forward rows spent so far."""
        return self.evaluator.rows

    def unit_sums(self, per_token: Tensor) -> list[Tensor]:
        """Sum per-token values over each row's units.

        Args:
            per_token: ``B x L``, one value per token (tokens outside the units are ignored).

        Returns:
            ``B`` float64 tensors of ``M_b`` unit sums, on ``per_token``'s device.
        """
        sums = []
        for b, n_units in enumerate(self.n_units):
            units = self.unit_index[b].to(per_token.device)
            on = units >= 0
            total = torch.zeros(n_units, dtype=torch.float64, device=per_token.device)
            total.index_add_(0, units[on], per_token[b, on].double())
            sums.append(total)
        return sums

    def values(self, coalitions: list[Tensor]) -> list[Tensor]:
        """Evaluate coalitions of every sequence.

        Args:
            coalitions: one bool tensor ``N_b x M_b`` per sequence (True = unit present).

        Returns:
            One float64 tensor ``N_b`` per sequence.
        """
        if len(coalitions) != self.batch_size:
            raise InvalidArgumentError(
                "coalitions", f"{len(coalitions)} tensors", f"{self.batch_size}, one per sequence"
            )
        device = self.input_ids.device
        width = max(self.n_units + [1])
        padded, owners = [], []
        for b, z in enumerate(coalitions):
            if z.ndim != 2 or z.shape[1] != self.n_units[b]:
                raise InvalidArgumentError(
                    f"coalitions[{b}]", f"shape {tuple(z.shape)}", f"N x {self.n_units[b]}"
                )
            # Units beyond M_b own no token, so their column value is irrelevant.
            full = torch.ones(z.shape[0], width, dtype=torch.bool, device=device)
            full[:, : z.shape[1]] = z.to(device)
            padded.append(full)
            owners.append(torch.full((z.shape[0],), b, dtype=torch.long, device=device))
        keep_units = torch.cat(padded)
        owner = torch.cat(owners)
        order = self._evaluation_order(keep_units, owner)
        keep_units, owner = keep_units[order], owner[order]

        def build(start: int, stop: int) -> tuple[Tensor, Tensor]:
            rows = owner[start:stop]
            units = self.unit_index[rows]
            keep = keep_units[start:stop].gather(1, units.clamp(min=0))
            keep = torch.where(units >= 0, keep, True)
            return self.masking.apply(
                self.input_ids[rows], self.attention_mask[rows], keep, left_padded=self.left_padded
            )

        evaluated = self.evaluator.evaluate(owner.numel(), self.input_ids.shape[1], build)
        flat = torch.empty_like(evaluated)
        flat[order] = evaluated
        counts = [z.shape[0] for z in coalitions]
        return list(flat.split(counts))

    def _evaluation_order(self, keep_units: Tensor, owner: Tensor) -> Tensor:
        """The order rows are evaluated in: ``R`` long.

        With removal from right-padded rows, rows sorted by their kept length, so each chunk
        holds rows of similar length and is trimmed to little more than its own width; otherwise
        (replacement, or left-padded rows, which keep the batch's width) as given.
        """
        if not self.masking.remove or self.left_padded:
            return torch.arange(owner.numel(), device=owner.device)
        units = self.unit_index[owner]
        kept = keep_units.gather(1, units.clamp(min=0)) | (units < 0)
        length = (kept & self.attention_mask[owner].bool()).sum(dim=1)
        return length.argsort(stable=True)
