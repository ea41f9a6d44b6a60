"""A rich progress display that model builders and sweeps report into."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tokenshape.models.offline import ProgressCallback

__all__ = ["stage_progress"]


@contextmanager
def stage_progress(console: Console) -> Iterator[ProgressCallback]:
    """A ``progress(stage, done, total)`` callback drawing one bar per stage, with time left."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    )
    tasks: dict[str, int] = {}
    with Progress(*columns, console=console, transient=False) as bars:

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total)
            bars.update(tasks[stage], completed=done, total=total)

        yield report
