"""The result of explaining a batch of reward-model scores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["TokenAttribution"]


@dataclass
class TokenAttribution:
    """Per-token attributions of a batch of sequences.

    For the Shapley methods ``scores.sum(1) == full_value - base_value`` (efficiency). A unit
    spanning several tokens (a word, a sentence) shares its score equally among its tokens.

    Attributes:
        scores: ``B x L`` float, the attribution of each token; zero outside the response.
        base_value: ``B``, v(empty): the reward with every response unit hidden (0 for
            ``attention``, which distributes the full reward).
        full_value: ``B``, v(all): the reward of the unmasked sequence.
        method: the name of the method that produced the scores.
        rows: ``B`` long, reward-model forward rows spent on each sequence.
        unit_scores: one ``M_b`` tensor per sequence, the attribution of each unit.
        unit_index: ``B x L`` long, unit number of each token (-1 off the players).
        input_ids: ``B x L``, the explained tokens.
        response_mask: ``B x L`` bool, the players' tokens (the caller's mask less special tokens).
        tokenizer: optional tokenizer the HTML views decode tokens with; not compared, not in
            the repr.
    """

    scores: Tensor
    base_value: Tensor
    full_value: Tensor
    method: str
    rows: Tensor
    unit_scores: list[Tensor]
    unit_index: Tensor
    input_ids: Tensor
    response_mask: Tensor
    tokenizer: Any = field(default=None, compare=False, repr=False)

    @property
    def total_rows(self) -> int:
        """Forward rows spent on the whole batch."""
        return int(self.rows.sum())

    @property
    def efficiency_error(self) -> Tensor:
        """``B``: ``|sum(scores) - (full_value - base_value)|`` per sequence."""
        gap = self.full_value.double() - self.base_value.double()
        return (self.scores.double().sum(dim=1) - gap).abs()

    def to(self, device: torch.device | str) -> TokenAttribution:
        """The same attribution with every tensor on ``device``."""
        return TokenAttribution(
            scores=self.scores.to(device),
            base_value=self.base_value.to(device),
            full_value=self.full_value.to(device),
            method=self.method,
            rows=self.rows.to(device),
            unit_scores=[u.to(device) for u in self.unit_scores],
            unit_index=self.unit_index.to(device),
            input_ids=self.input_ids.to(device),
            response_mask=self.response_mask.to(device),
            tokenizer=self.tokenizer,
        )

    def to_html(self, tokenizer: Any = None, shaped: Tensor | None = None) -> str:
        """An HTML heatmap of the scores; see :func:`tokenshape.viz.html.attribution_html`.

        Args:
            tokenizer: decodes the tokens (default: :attr:`tokenizer`; with neither, ids are shown).
            shaped: optional ``B x L`` shaped rewards, shown as a second view.
        """
        from tokenshape.viz.html import attribution_html

        return attribution_html(self, tokenizer, shaped=shaped)

    def _repr_html_(self) -> str:
        """Jupyter's rich display: :meth:`to_html` with the stored tokenizer."""
        return self.to_html()
