"""transformers' LOAD REPORT is dropped when it lists only the new classifier head."""

from __future__ import annotations

import logging

from tokenshape.models.sentiment import _only_the_new_head


def _record(rows: list[tuple[str, str]]) -> logging.LogRecord:
    table = "\n".join(
        ["Key               | Status  | ", "------------------+---------+-"]
        + [f"{key} | {status} | " for key, status in rows]
    )
    text = f"BertForSequenceClassification LOAD REPORT from: /m\n{table}\n\nNotes:\n- MISSING: new"
    return logging.LogRecord("transformers.modeling_utils", logging.WARNING, "", 0, text, (), None)


def test_only_the_head_missing_is_dropped_anything_else_shows():
    head = [("classifier.weight", "MISSING"), ("classifier.bias", "MISSING")]
    assert _only_the_new_head(_record(head)) is False
    encoder = [*head, ("bert.embeddings.word_embeddings.weight", "MISSING")]
    assert _only_the_new_head(_record(encoder)) is True
    assert _only_the_new_head(_record([("classifier.weight", "MISMATCH")])) is True
    other = logging.LogRecord("x", logging.WARNING, "", 0, "something else", (), None)
    assert _only_the_new_head(other) is True
