"""The attribution heatmap for a terminal, drawn with ``rich`` (used by ``tokenshape explain``).

The colours are those of the HTML view (:class:`~tokenshape.viz.scale.DivergingScale`). Tokens are
separated by a space (except a word's ``##`` continuation) so their boundaries stay visible, prompt
tokens are dim grey, and a NaN score is a grey box followed by a note, never a zero.
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console, Group
from rich.text import Text

from tokenshape.errors import InvalidArgumentError
from tokenshape.types import TokenAttribution
from tokenshape.viz.scale import NAN_COLOR, DivergingScale
from tokenshape.viz.tokens import TokenCell, sequence_cells

__all__ = ["render_terminal", "terminal_view"]

_PROMPT_STYLE = "grey50"
_LEGEND_STEPS = 11


def _legend(scale: DivergingScale) -> Text:
    legend = Text("score ")
    legend.append(f"{-scale.limit:.3g} ")
    for step in range(_LEGEND_STEPS):
        value = scale.limit * (2 * step / (_LEGEND_STEPS - 1) - 1)
        legend.append("  ", style=f"on {scale.color(value)}")
    legend.append(f" {scale.limit:.3g}   ")
    legend.append("prompt", style=_PROMPT_STYLE)
    return legend


def _line(cells: list[TokenCell], scale: DivergingScale) -> Text:
    line = Text()
    for k, cell in enumerate(cells):
        if k and not cell.continues:
            line.append(" ")
        if not cell.in_response:
            line.append(cell.text, style=_PROMPT_STYLE)
        elif math.isnan(cell.value):
            line.append(cell.text, style=f"#111111 on {NAN_COLOR} italic")
        else:
            line.append(
                cell.text, style=f"{scale.text_color(cell.value)} on {scale.color(cell.value)}"
            )
    return line


def terminal_view(attribution: TokenAttribution, tokenizer: Any = None) -> Group:
    """The heatmap of every sequence as a ``rich`` renderable.

    Args:
        attribution: the scores to show.
        tokenizer: decodes the tokens; defaults to ``attribution.tokenizer``; with neither, token
            ids are shown as numbers.

    Returns:
        A :class:`rich.console.Group`: a legend, then a header and a token line per sequence, and a
        note counting NaN scores when there are any.
    """
    if not isinstance(attribution, TokenAttribution):
        raise InvalidArgumentError("attribution", type(attribution).__name__, "a TokenAttribution")
    tokenizer = tokenizer if tokenizer is not None else attribution.tokenizer
    rows = [
        sequence_cells(
            attribution.input_ids[b].tolist(),
            attribution.response_mask[b].tolist(),
            attribution.scores[b].detach().double().cpu().tolist(),
            tokenizer,
        )
        for b in range(attribution.scores.shape[0])
    ]
    scale = DivergingScale.fit(cell.value for cells in rows for cell in cells if cell.in_response)
    parts: list[Text] = [Text(f"{attribution.method} attribution", style="bold"), _legend(scale)]
    for b, cells in enumerate(rows):
        full, base = float(attribution.full_value[b]), float(attribution.base_value[b])
        parts.append(Text(f"sequence {b}  v(all) {full:.4g}  v(empty) {base:.4g}", style="dim"))
        parts.append(_line(cells, scale))
    n_nan = sum(cell.in_response and math.isnan(cell.value) for cells in rows for cell in cells)
    if n_nan:
        parts.append(
            Text(f"{n_nan} NaN score{'s' if n_nan != 1 else ''} (grey, not zero)", style="yellow")
        )
    return Group(*parts)


def render_terminal(
    attribution: TokenAttribution, tokenizer: Any = None, console: Console | None = None
) -> None:
    """Print :func:`terminal_view` of ``attribution`` to ``console`` (a new one by default)."""
    (console if console is not None else Console()).print(terminal_view(attribution, tokenizer))
