"""``tokenshape prepare``: build the offline models once and say how long it took."""

from __future__ import annotations

import time

from rich.console import Console

from tokenshape.experiments.progress import stage_progress
from tokenshape.models.policy import ensure_policy, policy_path
from tokenshape.models.sentiment import (
    ensure_sentiment_reward_model,
    sentiment_meta,
    sentiment_model_path,
)

__all__ = ["prepare"]


def prepare(console: Console, *, skip_policy: bool = False) -> int:
    """Build whatever of the cached models is missing; returns an exit code."""
    steps = [
        (
            "sentiment reward model (MiniLM fine-tuned on IMDB)",
            sentiment_model_path,
            ensure_sentiment_reward_model,
        )
    ]
    if not skip_policy:
        steps.append(("policy (SmolLM2-135M-Instruct, fp32)", policy_path, ensure_policy))
    for title, path_of, ensure in steps:
        path = path_of()
        if path.exists():
            console.print(f"[green]cached[/] {title}: {path}")
            continue
        console.print(f"[bold]building[/] {title} -> {path}")
        started = time.perf_counter()
        with stage_progress(console) as progress:
            ensure(progress=progress)
        console.print(f"[green]built[/] {title} in {time.perf_counter() - started:.0f} s")
    meta = sentiment_meta()
    console.print(
        f"sentiment reward model held-out accuracy: IMDB {meta['imdb_accuracy']:.3f}, "
        f"Rotten Tomatoes {meta['rotten_tomatoes_accuracy']:.3f} ({meta['n_eval']} reviews each)"
    )
    return 0
