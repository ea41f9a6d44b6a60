"""HTML and terminal views: escaping, NaN, scale, legend, hover values, wrapping, comparison."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from rich.console import Console

from tokenshape.errors import InvalidArgumentError
from tokenshape.viz.html import attribution_html, compare_html, save_html
from tokenshape.viz.scale import DivergingScale
from tokenshape.viz.terminal import render_terminal
from tokenshape.viz.tokens import token_texts, visible_text

_SPAN = re.compile(
    r'<span class="ts-tok([^"]*)"(?: style="([^"]*)")? title="([^"]*)">([^<]*)</span>'
)


def token_spans(fragment: str) -> list[dict[str, str]]:
    """The token boxes of a fragment (legend swatches excluded), in order."""
    spans = []
    for classes, style, title, text in _SPAN.findall(fragment):
        if " | " not in title:
            continue
        spans.append(
            {
                "classes": classes.split(),
                "style": style,
                "title": html.unescape(title),
                "text": html.unescape(text),
            }
        )
    return spans


def legend_ticks(fragment: str) -> list[list[str]]:
    """The tick labels of each legend in the fragment."""
    return [
        re.findall(r"<span>([^<]*)</span>", ticks)
        for ticks in re.findall(r'class="ts-ticks">(.*?)</div>', fragment)
    ]


def test_script_tokens_are_escaped(two_rows, piece_tokenizer):
    fragment = attribution_html(two_rows, piece_tokenizer)
    assert "<script" not in fragment.lower()
    assert "&lt;script&gt;" in fragment and "&lt;/script&gt;" in fragment
    texts = [span["text"] for span in token_spans(fragment)]
    assert "<script>" in texts and "alert(1)" in texts


def test_quotes_in_a_token_cannot_break_the_title_attribute(build, piece_tokenizer):
    attribution = build([[0, 1.0]], [[1, 15]], [[False, True]])
    fragment = attribution_html(attribution, piece_tokenizer)
    assert "&quot;q&quot;&amp;" in fragment
    (span,) = [s for s in token_spans(fragment) if "ts-prompt" not in s["classes"]]
    assert span["text"] == '"q"&'
    assert span["title"].startswith('"q"& | score +1')


def test_hover_titles_carry_each_tokens_value(two_rows, piece_tokenizer):
    spans = token_spans(attribution_html(two_rows, piece_tokenizer))
    scored = [s for s in spans if "ts-prompt" not in s["classes"]]
    values = [float(re.search(r"score ([-+0-9.e]+)", s["title"]).group(1)) for s in scored]
    assert values == [2.0, -1.0, 0.5, 0.0, -2.0, 0.25, 1.0]
    prompt = [s for s in spans if "ts-prompt" in s["classes"]]
    assert [s["text"] for s in prompt[:4]] == ["[CLS]", "the", "film", "was"]
    assert all(
        "prompt" in s["title"] and "score" not in s["title"] and not s["style"] for s in prompt
    )


def test_colours_diverge_symmetrically_around_zero(two_rows, piece_tokenizer):
    fragment = attribution_html(two_rows, piece_tokenizer)
    colours = {s["title"].split(" | ")[1]: s["style"] for s in token_spans(fragment) if s["style"]}
    # The largest |score| is 2 (positive in row 0, negative in row 1): both ends of the scale.
    assert "background:#2166ac" in colours["score +2"]
    assert "background:#b2182b" in colours["score -2"]
    assert "background:#f7f7f7" in colours["score +0"]
    red, _, blue = DivergingScale(2.0).rgb(0.5)
    assert blue > red
    assert legend_ticks(fragment) == [["-2", "0", "2"]]


def test_scale_is_symmetric_when_all_scores_share_a_sign(build):
    attribution = build([[0.0, 0.1, 0.4]], [[1, 2, 3]], [[False, True, True]])
    assert legend_ticks(attribution_html(attribution)) == [["-0.4", "0", "0.4"]]


def test_legend_is_present_with_a_bar_and_the_prompt_swatch(two_rows):
    fragment = attribution_html(two_rows)
    assert fragment.count('class="ts-legend"') == 1
    assert re.search(
        r'class="ts-bar" style="background:linear-gradient\(to right, #b2182b 0%.*#2166ac 100%\)"',
        fragment,
    )
    assert 'title="prompt: not scored">prompt</span>' in fragment


def test_nan_scores_are_hatched_and_counted_never_zero(build, piece_tokenizer):
    nan = float("nan")
    attribution = build(
        [[0, nan, 1.0, nan, -0.5]], [[1, 6, 16, 17, 18]], [[False, True, True, True, True]]
    )
    fragment = attribution_html(attribution, piece_tokenizer)
    assert "2 NaN scores" in fragment
    nan_spans = [s for s in token_spans(fragment) if "ts-nan" in s["classes"]]
    assert [s["text"] for s in nan_spans] == ["great", "long"]
    for span in nan_spans:
        assert "score NaN" in span["title"] and not span["style"]
    assert ".ts-nan{background:repeating-linear-gradient" in fragment
    assert 'class="ts-tok ts-nan" title="NaN score">NaN</span>' in fragment  # legend swatch
    # The NaNs neither count as zero in the title nor shrink or widen the scale.
    assert legend_ticks(fragment) == [["-1", "0", "1"]]


def test_no_nan_note_without_nan(two_rows):
    fragment = attribution_html(two_rows)
    assert "NaN" not in fragment.replace(".ts-nan", "")


def test_long_response_wraps_in_a_flex_container(build):
    n = 600
    attribution = build(
        [[0.0] + [float(k % 7 - 3) for k in range(n)]], [[1] + [6] * n], [[False] + [True] * n]
    )
    fragment = attribution_html(attribution)
    assert len(token_spans(fragment)) == n + 1
    assert re.search(r"\.ts-tokens\{display:flex;flex-wrap:wrap;", fragment)
    assert re.search(
        r"\.ts-tok\{display:inline-block;white-space:pre-wrap;overflow-wrap:anywhere;max-width:100%",
        fragment,
    )
    assert 'class="ts-tokens"' in fragment


def test_edge_padding_is_dropped_and_pieces_are_readable(two_rows, piece_tokenizer):
    spans = token_spans(attribution_html(two_rows, piece_tokenizer))
    second_row = [s["text"] for s in spans[9:]]
    assert second_row == ["[CLS]", "the", "dull", "long", "mess", "[SEP]"]


def test_without_a_tokenizer_ids_are_shown(two_rows):
    texts = [s["text"] for s in token_spans(attribution_html(two_rows))]
    assert texts[:9] == ["1", "3", "4", "5", "6", "7", "8", "9", "2"]
    assert texts[9:] == ["1", "3", "16", "17", "18", "2", "0", "0", "0"]


def test_whitespace_and_subword_markers_are_made_readable(piece_tokenizer):
    assert token_texts([10, 11, 12, 13, 14], piece_tokenizer) == ["ing", " world", " hi", "\n", " "]
    assert [visible_text(t) for t in ["\n", " ", "  ", "\t", "", " world", "a\nb"]] == [
        "↵",
        "·",
        "··",
        "⇥",
        "∅",
        " world",
        "a↵b",
    ]


def test_whitespace_tokens_are_visible_boxes(build, piece_tokenizer):
    attribution = build([[0, 1.0, 1.0, 1.0]], [[1, 13, 14, 10]], [[False, True, True, True]])
    texts = [s["text"] for s in token_spans(attribution_html(attribution, piece_tokenizer))]
    assert texts == ["[CLS]", "↵", "·", "ing"]


def test_real_wordpiece_tokens_are_decoded(minilm_tokenizer, build):
    ids = minilm_tokenizer("an unbelievably dull <b>film</b>")["input_ids"]
    response = [0 < j < len(ids) - 1 for j in range(len(ids))]
    attribution = build([[1.0] * len(ids)], [ids], [response])
    texts = [s["text"] for s in token_spans(attribution_html(attribution, minilm_tokenizer))]
    assert texts[0] == "[CLS]" and texts[-1] == "[SEP]"
    assert not any(t.startswith("##") for t in texts)
    assert "".join(texts[1:-1]) == "anunbelievablydull<b>film</b>"


def test_shaped_rewards_are_a_second_view(two_rows, piece_tokenizer):
    shaped = torch.zeros(2, 9)
    shaped[0, 4:8] = torch.tensor([0.5, -0.25, 0.1, 0.15])
    shaped[1, 2:5] = torch.tensor([0.0, 0.0, 3.0])
    fragment = attribution_html(two_rows, piece_tokenizer, shaped=shaped)
    assert fragment.count('class="ts-block"') == 2
    assert "shaped per-token reward" in fragment
    assert legend_ticks(fragment) == [["-2", "0", "2"], ["-3", "0", "3"]]
    rewards = [s["title"] for s in token_spans(fragment) if "reward " in s["title"]]
    assert rewards[0].startswith("great | reward +0.5")
    assert rewards[-1].startswith("mess | reward +3")
    assert "sum of rewards 0.5" in fragment and "sum of rewards 3" in fragment


def test_shaped_of_the_wrong_shape_is_refused(two_rows):
    with pytest.raises(InvalidArgumentError, match="shaped"):
        attribution_html(two_rows, shaped=torch.zeros(2, 5))


def test_repr_html_uses_the_stored_tokenizer(two_rows, piece_tokenizer):
    assert ">great</span>" not in two_rows._repr_html_()
    two_rows.tokenizer = piece_tokenizer
    assert ">great</span>" in two_rows._repr_html_()
    assert ">great</span>" in two_rows.to("cpu").to_html()
    assert "tokenizer" not in repr(two_rows)


def test_compare_has_one_block_per_method(build, piece_tokenizer):
    ids, response = [[1, 6, 16, 19]], [[False, True, True, True]]
    attributions = {
        "kernel_shap": build([[0, 1.0, -1.0, 0.5]], ids, response, method="kernel_shap"),
        "attention": build([[0, 0.2, 0.1, 0.1]], ids, response, method="attention"),
        "occlusion": build([[0, 3.0, 0.0, -0.5]], ids, response, method="occlusion"),
    }
    fragment = compare_html(attributions, piece_tokenizer)
    assert re.findall(r'class="ts-method" data-method="([^"]+)"', fragment) == list(attributions)
    assert fragment.count('class="ts-legend"') == 3
    assert legend_ticks(fragment) == [["-1", "0", "1"], ["-0.2", "0", "0.2"], ["-3", "0", "3"]]
    assert len(token_spans(fragment)) == 3 * 4
    assert (
        'class="ts-compare"' in fragment and ".ts-compare{display:flex;flex-wrap:wrap" in fragment
    )
    shared = compare_html(attributions, piece_tokenizer, shared_scale=True)
    assert legend_ticks(shared) == [["-3", "0", "3"]] * 3


def test_compare_refuses_different_sequences_and_bad_index(build):
    a = build([[0, 1.0]], [[1, 6]], [[False, True]])
    b = build([[0, 1.0]], [[1, 7]], [[False, True]])
    with pytest.raises(InvalidArgumentError, match="attributions\\['b'\\]"):
        compare_html({"a": a, "b": b})
    with pytest.raises(InvalidArgumentError, match="index"):
        compare_html({"a": a}, index=1)
    with pytest.raises(InvalidArgumentError, match="attributions"):
        compare_html({})


def test_save_html_writes_a_self_contained_page(tmp_path, two_rows, piece_tokenizer):
    path = save_html(tmp_path / "out" / "view.html", two_rows, piece_tokenizer)
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    assert "<style>" in page and 'class="ts-legend"' in page
    for external in ("<script", "<link", "http://", "https://", "src="):
        assert external not in page
    fragment = compare_html({"kernel_shap": two_rows}, piece_tokenizer)
    assert fragment in save_html(tmp_path / "compare.html", fragment).read_text(encoding="utf-8")
    with pytest.raises(InvalidArgumentError, match="view"):
        save_html(tmp_path / "bad.html", 3)


def test_terminal_view_colours_tokens_and_notes_nan(build, piece_tokenizer):
    nan = float("nan")
    attribution = build(
        [[0, 2.0, -2.0, nan, 1.0]], [[1, 6, 16, 17, 10]], [[False, True, True, True, True]]
    )
    console = Console(record=True, width=100, force_terminal=True, color_system="truecolor")
    render_terminal(attribution, piece_tokenizer, console)
    plain = console.export_text(styles=False, clear=False)
    assert "[CLS] great dull longing" in plain  # "##ing" joins the word before it
    assert "1 NaN score (grey, not zero)" in plain
    styled = console.export_text(styles=True)
    assert "48;2;33;102;172mgreat" in styled  # +2, the top of the scale, in blue
    assert "48;2;178;24;43mdull" in styled  # -2 in red
    assert "48;2;158;158;158" in styled  # the NaN token in grey


def _chromium() -> str | None:
    return shutil.which("chromium") or (
        "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
    )


def _run_chromium(tmp_path: Path, page: Path, *extra: str) -> subprocess.CompletedProcess:
    binary = _chromium()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; CI must install Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,600", *extra, page.as_uri(),
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def test_heatmap_renders_in_headless_chromium(tmp_path, two_rows, piece_tokenizer):
    from PIL import Image

    shaped = two_rows.scores / 2
    page = save_html(tmp_path / "view.html", two_rows, piece_tokenizer, shaped=shaped)
    png = tmp_path / "view.png"
    _run_chromium(tmp_path, page, f"--screenshot={png}")
    image = Image.open(png).convert("RGB")
    assert image.size == (1000, 600)
    pixels = list(image.getdata())
    assert len(set(pixels)) > 100
    reds = sum(1 for r, g, b in pixels if r > 150 and b < 80 and g < 80)
    blues = sum(1 for r, g, b in pixels if b > 150 and r < 80)
    assert reds > 200 and blues > 200  # the end colours of the scale, in the legend and tokens


def test_a_long_response_does_not_overflow_the_window(tmp_path, build):
    n = 800
    attribution = build(
        [[0.0] + [float(k % 9 - 4) for k in range(n)]], [[1] + [6] * n], [[False] + [True] * n]
    )
    probe = (
        "<script>document.body.setAttribute('data-overflow',"
        " String(document.documentElement.scrollWidth - window.innerWidth))</script>"
    )
    page = tmp_path / "long.html"
    page.write_text(
        f"<!DOCTYPE html><html><body>{attribution_html(attribution)}{probe}</body></html>"
    )
    dom = _run_chromium(tmp_path, page, "--dump-dom").stdout
    overflow = re.search(r'data-overflow="(-?\d+)"', dom)
    assert overflow is not None and int(overflow.group(1)) <= 0
