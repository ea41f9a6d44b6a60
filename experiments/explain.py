"""``tokenshape explain``: the sentiment reward model's per-token attributions in the terminal."""

from __future__ import annotations

import argparse
import time

from rich.console import Console

from tokenshape.attribution import attribute
from tokenshape.encoding import encode_pairs
from tokenshape.models.data import split_reviews
from tokenshape.models.sentiment import SENTIMENT_LABELS, load_sentiment_reward_model
from tokenshape.reward import SequenceClassifierReward

__all__ = ["explain", "review_continuations", "sentiment_reward"]

PROMPT_WORDS = 8
CONTINUATION_WORDS = 24


def review_continuations(n: int, *, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` held-out IMDB reviews cut into (opening of 8 words, the next 24 words)."""
    pairs = []
    for text in split_reviews(split="heldout", seed=seed)["text"]:
        words = text.split()
        if len(words) < PROMPT_WORDS + CONTINUATION_WORDS:
            continue
        prompt = " ".join(words[:PROMPT_WORDS])
        continuation = " " + " ".join(words[PROMPT_WORDS : PROMPT_WORDS + CONTINUATION_WORDS])
        pairs.append((prompt, continuation))
        if len(pairs) == n:
            break
    return pairs


def sentiment_reward() -> SequenceClassifierReward:
    """The cached MiniLM sentiment model as a reward: logit(positive) - logit(negative)."""
    model, tokenizer = load_sentiment_reward_model()
    positive = SENTIMENT_LABELS.index("positive")
    return SequenceClassifierReward(model, tokenizer, label=positive, minus_label=1 - positive)


def explain(args: argparse.Namespace, console: Console) -> int:
    """Run the ``explain`` sub-command; returns an exit code."""
    from tokenshape.viz.html import save_html
    from tokenshape.viz.terminal import render_terminal

    reward = sentiment_reward()
    if args.text is not None:
        pairs = [(args.prompt, args.text)]
    else:
        pairs = review_continuations(args.examples, seed=args.seed)
        console.print(
            f"Explaining {len(pairs)} held-out IMDB review continuations "
            f"(prompt: the first {PROMPT_WORDS} words, response: the next {CONTINUATION_WORDS})."
        )
    batch = encode_pairs(reward.tokenizer, [p for p, _ in pairs], [r for _, r in pairs])
    started = time.perf_counter()
    result = attribute(
        reward,
        batch.input_ids,
        batch.attention_mask,
        batch.response_mask,
        method=args.method,
        budget=args.budget,
        seed=args.seed,
        unit=args.unit,
    )
    seconds = time.perf_counter() - started
    console.print(
        f"method={result.method}  rows={result.total_rows}  {seconds:.1f} s  "
        "reward = logit(positive) - logit(negative)"
    )
    render_terminal(result, reward.tokenizer, console)
    if args.html:
        save_html(args.html, result, reward.tokenizer)
        console.print(f"saved {args.html}")
    return 0
