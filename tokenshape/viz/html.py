"""HTML views of attributions: token heatmaps for notebooks and self-contained pages.

Each response token is a box coloured on a :class:`~tokenshape.viz.scale.DivergingScale` (red
negative, blue positive, symmetric around zero) with its value in the hover title; a legend bar
shows the scale's numbers. Prompt and special tokens are greyed and unscored. A NaN score is drawn
hatched grey and counted in a note, never as zero. Boxes wrap inside a flex container, so a long
response never overflows its cell. Every piece of text is HTML-escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from tokenshape.errors import InvalidArgumentError
from tokenshape.types import TokenAttribution
from tokenshape.viz.scale import DivergingScale
from tokenshape.viz.tokens import TokenCell, sequence_cells

__all__ = ["STYLE", "attribution_html", "compare_html", "save_html"]

#: The stylesheet every view carries inline (class names are prefixed ``ts-``).
STYLE = """
.ts-view{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px;
color:#111;background:#fff;max-width:100%;box-sizing:border-box;padding:4px}
.ts-block{margin:0 0 12px 0}
.ts-title{font-weight:bold;margin:0 0 4px 0}
.ts-legend{display:flex;flex-wrap:wrap;align-items:center;gap:6px;margin:0 0 6px 0}
.ts-scale{display:inline-block;width:240px}
.ts-bar{height:12px;border:1px solid #888}
.ts-ticks{display:flex;justify-content:space-between;font-size:11px;color:#333}
.ts-note{color:#8a3b00;margin:0 0 4px 0}
.ts-seq{margin:0 0 8px 0}
.ts-seq-head{color:#555;font-size:12px;margin:0 0 2px 0}
.ts-tokens{display:flex;flex-wrap:wrap;align-items:flex-end;gap:2px 1px;max-width:100%;
box-sizing:border-box}
.ts-tok{display:inline-block;white-space:pre-wrap;overflow-wrap:anywhere;max-width:100%;
padding:1px 2px;border-radius:3px;line-height:1.4}
.ts-prompt{color:#9a9a9a;background:#fff;border:1px dashed #d0d0d0}
.ts-nan{background:repeating-linear-gradient(45deg,#9e9e9e 0 3px,#e6e6e6 3px 6px);color:#111;
outline:1px solid #666}
.ts-compare{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.ts-method{flex:1 1 320px;min-width:260px;max-width:100%;border:1px solid #ddd;border-radius:4px;
padding:6px;box-sizing:border-box}
"""


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _number(value: float) -> str:
    return "NaN" if math.isnan(value) else f"{value:+.4g}"


def _legend(scale: DivergingScale, label: str, *, has_nan: bool) -> str:
    ticks = "".join(f"<span>{_esc(f'{t:.3g}')}</span>" for t in scale.ticks())
    extra = '<span class="ts-tok ts-nan" title="NaN score">NaN</span>' if has_nan else ""
    return (
        f'<div class="ts-legend"><span>{_esc(label)}</span>'
        f'<div class="ts-scale"><div class="ts-bar" style="background:{scale.css_gradient()}"></div>'
        f'<div class="ts-ticks">{ticks}</div></div>'
        f'{extra}<span class="ts-tok ts-prompt" title="prompt: not scored">prompt</span></div>'
    )


def _token(cell: TokenCell, scale: DivergingScale, label: str) -> str:
    text = _esc(cell.text)
    if not cell.in_response:
        title = _esc(f"{cell.text} | prompt | position {cell.position}")
        return f'<span class="ts-tok ts-prompt" title="{title}">{text}</span>'
    title = _esc(f"{cell.text} | {label} {_number(cell.value)} | position {cell.position}")
    if math.isnan(cell.value):
        return f'<span class="ts-tok ts-nan" title="{title}">{text}</span>'
    style = f"background:{scale.color(cell.value)};color:{scale.text_color(cell.value)}"
    return f'<span class="ts-tok" style="{style}" title="{title}">{text}</span>'


def _nan_count(rows: Sequence[list[TokenCell]]) -> int:
    return sum(cell.in_response and math.isnan(cell.value) for cells in rows for cell in cells)


def _scale_of(rows: Sequence[list[TokenCell]]) -> DivergingScale:
    return DivergingScale.fit(cell.value for cells in rows for cell in cells if cell.in_response)


def _block(
    title: str,
    label: str,
    rows: Sequence[tuple[str, list[TokenCell]]],
    scale: DivergingScale | None = None,
) -> str:
    """A legend, the NaN note and one wrapped token line per ``(header, cells)`` row."""
    cells_only = [cells for _, cells in rows]
    scale = scale if scale is not None else _scale_of(cells_only)
    n_nan = _nan_count(cells_only)
    note = (
        f'<div class="ts-note">{n_nan} NaN score{"s" if n_nan != 1 else ""} '
        "(hatched grey, not zero)</div>"
        if n_nan
        else ""
    )
    parts = [
        f'<div class="ts-title">{_esc(title)}</div>',
        _legend(scale, label, has_nan=n_nan > 0),
        note,
    ]
    for header, cells in rows:
        tokens = "".join(_token(cell, scale, label) for cell in cells)
        parts.append(
            f'<div class="ts-seq"><div class="ts-seq-head">{_esc(header)}</div>'
            f'<div class="ts-tokens">{tokens}</div></div>'
        )
    return f'<div class="ts-block">{"".join(parts)}</div>'


def _view(body: str) -> str:
    return f'<div class="ts-view"><style>{STYLE}</style>{body}</div>'


def _resolve_tokenizer(attribution: TokenAttribution, tokenizer: Any) -> Any:
    return tokenizer if tokenizer is not None else attribution.tokenizer


def _row_cells(
    attribution: TokenAttribution, values: Tensor, b: int, tokenizer: Any
) -> list[TokenCell]:
    return sequence_cells(
        attribution.input_ids[b].tolist(),
        attribution.response_mask[b].tolist(),
        values[b].detach().double().cpu().tolist(),
        tokenizer,
    )


def _score_header(attribution: TokenAttribution, b: int) -> str:
    full = float(attribution.full_value[b])
    base = float(attribution.base_value[b])
    total = float(attribution.scores[b].double().sum())
    return (
        f"sequence {b} | v(all) {full:.4g} | v(empty) {base:.4g} | sum of scores {total:.4g} | "
        f"{int(attribution.rows[b])} rows"
    )


def _check_shaped(attribution: TokenAttribution, shaped: Tensor) -> None:
    if not isinstance(shaped, Tensor) or shaped.shape != attribution.scores.shape:
        shown = tuple(shaped.shape) if isinstance(shaped, Tensor) else shaped
        raise InvalidArgumentError(
            "shaped",
            shown,
            f"a tensor of shape {tuple(attribution.scores.shape)} aligned with input_ids",
        )


def attribution_html(
    attribution: TokenAttribution,
    tokenizer: Any = None,
    *,
    shaped: Tensor | None = None,
) -> str:
    """An HTML heatmap of every sequence of ``attribution``, one row each.

    Args:
        attribution: the scores to show.
        tokenizer: decodes the tokens; defaults to ``attribution.tokenizer``; with neither, token
            ids are shown as numbers.
        shaped: optional ``B x L`` shaped per-token rewards (as returned by
            :func:`tokenshape.shaping.shape_rewards`), shown as a second view on its own scale.

    Returns:
        An HTML fragment with its stylesheet inline, for a notebook or :func:`save_html`.
    """
    if not isinstance(attribution, TokenAttribution):
        raise InvalidArgumentError("attribution", type(attribution).__name__, "a TokenAttribution")
    tokenizer = _resolve_tokenizer(attribution, tokenizer)
    batch = range(attribution.scores.shape[0])
    rows = [
        (_score_header(attribution, b), _row_cells(attribution, attribution.scores, b, tokenizer))
        for b in batch
    ]
    body = _block(f"{attribution.method} attribution", "score", rows)
    if shaped is not None:
        _check_shaped(attribution, shaped)
        shaped_rows = []
        for b in batch:
            cells = _row_cells(attribution, shaped, b, tokenizer)
            total = sum(cell.value for cell in cells if cell.in_response)
            shaped_rows.append((f"sequence {b} | sum of rewards {total:.4g}", cells))
        body += _block("shaped per-token reward", "reward", shaped_rows)
    return _view(body)


def compare_html(
    attributions: Mapping[str, TokenAttribution],
    tokenizer: Any = None,
    index: int = 0,
    *,
    shared_scale: bool = False,
) -> str:
    """Several methods' attributions of the same sequence, side by side.

    Args:
        attributions: a label (usually the method name) -> attribution; every attribution must
            hold the same tokens in row ``index``.
        tokenizer: decodes the tokens; defaults to the first attribution's ``tokenizer``.
        index: the row to show.
        shared_scale: colour every method on one scale (the largest absolute score of all);
            by default each method has its own, since methods differ in magnitude (``attention``
            distributes v(all), the Shapley methods v(all) - v(empty)).

    Returns:
        An HTML fragment with one block per method, each with its legend.
    """
    if not isinstance(attributions, Mapping) or not attributions:
        raise InvalidArgumentError(
            "attributions", attributions, "a non-empty dict of label -> TokenAttribution"
        )
    reference = None
    for label, attribution in attributions.items():
        if not isinstance(attribution, TokenAttribution):
            raise InvalidArgumentError(
                f"attributions[{label!r}]", type(attribution).__name__, "a TokenAttribution"
            )
        n_rows = attribution.input_ids.shape[0]
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n_rows:
            raise InvalidArgumentError("index", index, f"a row number in [0, {n_rows})")
        ids = attribution.input_ids[index].cpu()
        if reference is None:
            reference = ids
        elif ids.shape != reference.shape or not bool((ids == reference).all()):
            raise InvalidArgumentError(
                f"attributions[{label!r}]",
                "different tokens in row " + str(index),
                "the same sequence as the first",
            )
    first = next(iter(attributions.values()))
    tokenizer = _resolve_tokenizer(first, tokenizer)
    cells = {
        label: _row_cells(attribution, attribution.scores, index, tokenizer)
        for label, attribution in attributions.items()
    }
    common = _scale_of(list(cells.values())) if shared_scale else None
    blocks = []
    for label, attribution in attributions.items():
        block = _block(label, "score", [(_score_header(attribution, index), cells[label])], common)
        blocks.append(f'<div class="ts-method" data-method="{_esc(label)}">{block}</div>')
    return _view(f'<div class="ts-compare">{"".join(blocks)}</div>')


def save_html(
    path: str | Path,
    view: TokenAttribution | str,
    tokenizer: Any = None,
    *,
    shaped: Tensor | None = None,
    title: str = "tokenshape attributions",
) -> Path:
    """Write a self-contained HTML page (no scripts, no external resources).

    Args:
        path: the file to write; its folder is created.
        view: an attribution (rendered with :func:`attribution_html`) or a fragment from
            :func:`attribution_html` or :func:`compare_html`.
        tokenizer: passed to :func:`attribution_html` when ``view`` is an attribution.
        shaped: passed to :func:`attribution_html` when ``view`` is an attribution.
        title: the page title.

    Returns:
        The written path.
    """
    if isinstance(view, TokenAttribution):
        body = attribution_html(view, tokenizer, shaped=shaped)
    elif isinstance(view, str):
        body = view
    else:
        raise InvalidArgumentError(
            "view", type(view).__name__, "a TokenAttribution or an HTML fragment"
        )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title></head>"
        f'<body style="margin:16px;background:#fff">{body}</body></html>\n'
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
