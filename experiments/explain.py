"""``tokenshape explain``: a reward model's per-token attributions in the terminal.

The reward model is the built-in MiniLM sentiment classifier, or any sequence classifier folder
(``--reward-model``, scored as ``logits[:, --label] - logits[:, --minus-label]``). The pairs
explained are TEXT after ``--prompt``, the rows of ``--file``, or held-out IMDB continuations.
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console

from tokenshape.attribution import attribute
from tokenshape.encoding import encode_pairs
from tokenshape.errors import InvalidArgumentError
from tokenshape.models.data import split_reviews
from tokenshape.models.sentiment import SENTIMENT_LABELS, load_sentiment_reward_model
from tokenshape.reward import SequenceClassifierReward

__all__ = ["explain", "explained_pairs", "review_continuations", "sentiment_reward"]

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


def _reward(args: argparse.Namespace) -> tuple[SequenceClassifierReward, str]:
    """The reward model to explain and a line saying what its score is."""
    from tokenshape.experiments.sources import load_classifier_reward

    if args.reward_model is None:
        for option, value in (("--label", args.label), ("--minus-label", args.minus_label)):
            if value is not None:
                raise InvalidArgumentError(
                    option,
                    value,
                    "no value without --reward-model (the built-in model's reward "
                    "is logit(positive) - logit(negative))",
                )
        return sentiment_reward(), "logit(positive) - logit(negative)"
    label = 0 if args.label is None else args.label
    reward = load_classifier_reward(
        args.reward_model,
        label=label,
        minus_label=args.minus_label,
        field="--reward-model",
        label_fields=("--label", "--minus-label"),
    )
    score = f"logit[{label}]" + (
        f" - logit[{args.minus_label}]" if args.minus_label is not None else ""
    )
    return reward, score


def explained_pairs(args: argparse.Namespace, console: Console) -> list[tuple[str, str]]:
    """The (prompt, response) pairs the arguments ask for.

    Raises:
        InvalidArgumentError: TEXT and ``--file`` together, or a row of ``--file`` without a
            text ``prompt`` and ``response``.
    """
    from tokenshape.experiments.prompts import read_rows

    if args.file is not None:
        if args.text is not None:
            raise InvalidArgumentError("--file", args.file, "either TEXT or --file, not both")
        pairs = []
        for number, row in enumerate(read_rows(args.file, "--file"), start=1):
            fields = [
                row.get(key) if isinstance(row, dict) else None for key in ("prompt", "response")
            ]
            if not all(isinstance(value, str) for value in fields) or not fields[1]:
                raise InvalidArgumentError(
                    "--file",
                    args.file,
                    f"rows with a text 'prompt' and a non-empty text 'response' (row {number}: "
                    f"{row!r:.80})",
                )
            pairs.append((fields[0], fields[1]))
        if not pairs:
            raise InvalidArgumentError("--file", args.file, "at least one prompt/response row")
        return pairs
    if args.text is not None:
        return [(args.prompt, args.text)]
    pairs = review_continuations(args.examples, seed=args.seed)
    console.print(
        f"Explaining {len(pairs)} held-out IMDB review continuations "
        f"(prompt: the first {PROMPT_WORDS} words, response: the next {CONTINUATION_WORDS})."
    )
    return pairs


def explain(args: argparse.Namespace, console: Console) -> int:
    """Run the ``explain`` sub-command; returns an exit code."""
    from tokenshape.viz.html import save_html
    from tokenshape.viz.terminal import render_terminal

    reward, score = _reward(args)
    pairs = explained_pairs(args, console)
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
        f"method={result.method}  rows={result.total_rows}  {seconds:.1f} s  reward = {score}"
    )
    render_terminal(result, reward.tokenizer, console)
    if args.html:
        save_html(args.html, result, reward.tokenizer)
        console.print(f"saved {args.html}")
    return 0
