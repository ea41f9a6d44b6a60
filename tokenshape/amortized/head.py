"""The explainer head: per-token Shapley estimates from the reward model's own hidden states.

For a response token t with last-layer state h_t, the scoring position's state s and the reward
read through the classification head at t, g_t, the head outputs

    f(x_t),  x_t = [h_t, h_t * s, g_t]   (an MLP with one hidden layer),

and a unit's estimate is the sum over its tokens. :func:`efficient_scores` then spreads what the
estimates miss of v(all) - v(empty) equally over the units, so the scores are exactly efficient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["ExplainerHead", "HeadExample", "efficient_scores", "pad_examples"]


@dataclass
class HeadExample:
    """What the head reads for one sequence (its response tokens only), and optionally its
    teacher's scores.

    Attributes:
        hidden: ``T x H`` float32, the response tokens' last-layer states.
        scoring_hidden: ``H`` float32, the state at the scoring position.
        head_scores: ``T`` float32, the reward read through the head at each response token.
        units: ``T`` long, the unit of each token (``0 .. M - 1``).
        n_units: M.
        gap: v(all) - v(empty), float.
        target: ``M`` float64 teacher scores, or None.
    """

    hidden: Tensor
    scoring_hidden: Tensor
    head_scores: Tensor
    units: Tensor
    n_units: int
    gap: float
    target: Tensor | None = None


def pad_examples(examples: list[HeadExample]) -> dict[str, Tensor]:
    """Stack examples into padded tensors on the CPU.

    Returns:
        ``hidden`` ``N x T x H``, ``scoring_hidden`` ``N x H``, ``head_scores`` ``N x T``,
        ``units`` ``N x T`` (-1 on padding), ``unit_mask`` ``N x M`` bool, ``gap`` ``N``
        float64, and, when every example has one, ``target`` ``N x M`` float64 (0 on padding).
    """
    n = len(examples)
    length = max(e.units.shape[0] for e in examples)
    width = max(e.n_units for e in examples)
    size = examples[0].hidden.shape[1]
    hidden = torch.zeros(n, length, size)
    head_scores = torch.zeros(n, length)
    units = torch.full((n, length), -1, dtype=torch.long)
    unit_mask = torch.zeros(n, width, dtype=torch.bool)
    for i, e in enumerate(examples):
        t = e.units.shape[0]
        hidden[i, :t] = e.hidden
        head_scores[i, :t] = e.head_scores
        units[i, :t] = e.units
        unit_mask[i, : e.n_units] = True
    out = {
        "hidden": hidden,
        "scoring_hidden": torch.stack([e.scoring_hidden for e in examples]),
        "head_scores": head_scores,
        "units": units,
        "unit_mask": unit_mask,
        "gap": torch.tensor([e.gap for e in examples], dtype=torch.float64),
    }
    if all(e.target is not None for e in examples):
        target = torch.zeros(n, width, dtype=torch.float64)
        for i, e in enumerate(examples):
            target[i, : e.n_units] = e.target
        out["target"] = target
    return out


def efficient_scores(raw: Tensor, unit_mask: Tensor, gap: Tensor) -> Tensor:
    """Shift each row's unit scores equally so that they sum to its gap.

    Args:
        raw: ``N x M`` unit estimates (anything on padding).
        unit_mask: ``N x M`` bool, True on the row's units.
        gap: ``N``, v(all) - v(empty).

    Returns:
        ``N x M``, zero on padding, each row summing to its gap.
    """
    raw = torch.where(unit_mask, raw, 0.0)
    count = unit_mask.sum(dim=1).clamp(min=1)
    shift = (gap - raw.sum(dim=1)) / count
    return torch.where(unit_mask, raw + shift[:, None], 0.0)


class ExplainerHead(nn.Module):
    """``f(x_t)`` of the module docstring.

    Args:
        hidden_size: H, the reward model's hidden size.
        width: the MLP's hidden width.
    """

    def __init__(self, hidden_size: int, width: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.net = nn.Sequential(
            nn.Linear(2 * hidden_size + 1, width), nn.GELU(), nn.Linear(width, 1)
        )

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Efficient unit scores ``N x M`` (float64, so the sums are exact) of a
        :func:`pad_examples` batch."""
        hidden = batch["hidden"]
        context = hidden * batch["scoring_hidden"][:, None, :]
        size = (self.hidden_size,)
        features = torch.cat(
            [
                nn.functional.layer_norm(hidden, size),
                nn.functional.layer_norm(context, size),
                batch["head_scores"][..., None],
            ],
            dim=-1,
        )
        per_token = self.net(features).squeeze(-1)  # N x T
        units = batch["units"]
        on = units >= 0
        raw = torch.zeros(batch["unit_mask"].shape, dtype=per_token.dtype)
        raw = raw.scatter_add(1, units.clamp(min=0), torch.where(on, per_token, 0.0))
        return efficient_scores(raw.double(), batch["unit_mask"], batch["gap"])
