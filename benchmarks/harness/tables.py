"""Markdown cells and tables for the results files."""

from __future__ import annotations

import math
from typing import Any


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: ``-`` for None or NaN, scientific notation from 1e4 up."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.1e}" if abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
