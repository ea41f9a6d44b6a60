"""The prompts of an experiment: IMDB review openings or the rows of the user's own files.

``data.train`` and ``data.eval`` name ``imdb`` or a prompt source: a ``.jsonl``, ``.csv`` or
``.parquet`` file, or a folder written by ``datasets.Dataset.save_to_disk``. The column
``data.prompt_column`` holds each prompt: a string, or chat messages (a list of ``{"role",
"content"}`` mappings; CSV holds text only). Chat prompts are written out with the policy
tokenizer's chat template, the generation prompt added, so training and the held-out evaluation
give the policy and the reward model the same prompt text. Without ``data.eval`` a seeded
permutation of the training rows holds out ``data.eval_fraction`` of them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tokenshape.errors import InvalidArgumentError
from tokenshape.experiments.config import BUILTIN_PROMPTS, DataConfig, ExperimentConfig

__all__ = [
    "IMDB_EVAL_PROMPTS",
    "IMDB_TRAIN_PROMPTS",
    "heldout_block",
    "load_prompts",
    "read_prompt_rows",
    "read_rows",
]

#: IMDB openings used when ``data.train_prompts`` / ``data.eval_prompts`` are not given.
IMDB_TRAIN_PROMPTS = 64
IMDB_EVAL_PROMPTS = 16

#: One prompt as read: its text, or its chat messages.
Prompt = str | list[dict[str, Any]]

_SUFFIXES = (".jsonl", ".csv", ".parquet")


def _read_jsonl(path: Path, field: str) -> list[Any]:
    rows = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise InvalidArgumentError(
                    field, str(path), f"a JSONL file (line {number} is not JSON: {error})"
                ) from None
    return rows


def _read_table(path: Path) -> list[dict[str, Any]]:
    import pandas as pd

    if path.suffix == ".csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    else:
        frame = pd.read_parquet(path)
    return frame.to_dict(orient="records")


def _read_saved_dataset(path: Path, field: str) -> list[dict[str, Any]]:
    from datasets import Dataset, load_from_disk

    dataset = load_from_disk(str(path))
    if not isinstance(dataset, Dataset):
        raise InvalidArgumentError(
            field,
            str(path),
            f"a folder holding one saved Dataset (this one holds splits {sorted(dataset)}; save "
            "one split)",
        )
    return dataset.to_list()


def read_rows(source: str, field: str) -> list[Any]:
    """The rows of a ``.jsonl``, ``.csv`` or ``.parquet`` file or a ``save_to_disk`` folder.

    Raises:
        InvalidArgumentError: naming ``field`` when the source is missing or unreadable.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        reader = "datasets.load_from_disk"
    elif not path.is_file():
        raise InvalidArgumentError(
            field,
            source,
            f"{' or '.join(map(repr, BUILTIN_PROMPTS))}, an existing {', '.join(_SUFFIXES)} file "
            "or a folder written by datasets' save_to_disk",
        )
    elif path.suffix not in _SUFFIXES:
        raise InvalidArgumentError(field, source, f"a file ending in one of {_SUFFIXES}")
    else:
        reader = path.suffix
    try:
        if reader == ".jsonl":
            return _read_jsonl(path, field)
        if reader == "datasets.load_from_disk":
            return _read_saved_dataset(path, field)
        return _read_table(path)
    except InvalidArgumentError:
        raise
    except Exception as error:  # noqa: BLE001 - any reader's failure is an unreadable file
        raise InvalidArgumentError(
            field, source, f"a readable prompt source ({type(error).__name__}: {error})"
        ) from None


def _is_chat(prompt: Any) -> bool:
    return (
        isinstance(prompt, list)
        and len(prompt) > 0
        and all(
            isinstance(message, Mapping)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
            for message in prompt
        )
    )


def read_prompt_rows(source: str, *, column: str, field: str) -> list[Prompt]:
    """The prompts of one prompt source, in file order.

    Args:
        source: a ``.jsonl``, ``.csv`` or ``.parquet`` file, or a ``save_to_disk`` folder.
        column: the column holding the prompts.
        field: the config field that named ``source``, for error messages.

    Returns:
        One entry per row: a non-empty string, or a list of ``{"role", "content"}`` dicts.

    Raises:
        InvalidArgumentError: naming ``field`` when the source is missing or unreadable, has no
            rows, lacks ``column`` or holds a prompt that is neither text nor chat messages.
    """
    rows = read_rows(source, field)
    if not rows:
        raise InvalidArgumentError(field, source, "a prompt source with at least one row")
    prompts: list[Prompt] = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping) or column not in row:
            keys = sorted(row) if isinstance(row, Mapping) else type(row).__name__
            raise InvalidArgumentError(
                field,
                source,
                f"rows with the column data.prompt_column={column!r} (row {number} has {keys})",
            )
        prompt = row[column]
        if hasattr(prompt, "tolist"):  # parquet gives numpy arrays for lists
            prompt = prompt.tolist()
        if isinstance(prompt, list):
            prompt = [dict(m) if isinstance(m, Mapping) else m for m in prompt]
        if not (isinstance(prompt, str) and prompt.strip()) and not _is_chat(prompt):
            raise InvalidArgumentError(
                field,
                source,
                f"a non-empty text or a list of {{'role', 'content'}} messages in column "
                f"{column!r} of every row (row {number} holds {prompt!r:.80})",
            )
        prompts.append(prompt)
    return prompts


def _as_text(prompt: Prompt, tokenizer: Any, field: str) -> str:
    """A chat prompt written with the policy's chat template, ready for the assistant's reply."""
    if isinstance(prompt, str):
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidArgumentError(
            field, prompt, "text prompts: the policy's tokenizer has no chat template for messages"
        )
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    # The tokenizer adds its own bos token when it encodes the text; don't let it appear twice.
    bos = tokenizer.bos_token
    adds_bos = bos is not None and tokenizer.bos_token_id in tokenizer("x")["input_ids"]
    return text[len(bos) :] if adds_bos and text.startswith(bos) else text


def _first(
    prompts: list[str], n: int | None, field: str, source: str, *, offset: int = 0
) -> list[str]:
    """Prompts ``offset .. offset + n - 1`` (to the end when ``n`` is None)."""
    if offset >= len(prompts):
        raise InvalidArgumentError(
            "training.eval_prompt_offset",
            offset,
            f"an offset below the {len(prompts)} held-out prompts of {source}",
        )
    if n is None:
        return prompts[offset:]
    if offset + n > len(prompts):
        raise InvalidArgumentError(
            field, n, f"at most the {len(prompts) - offset} prompts of {source} after {offset}"
        )
    return prompts[offset : offset + n]


def _split(prompts: list[str], data: DataConfig, seed: int) -> tuple[list[str], list[str]]:
    """A seeded permutation of ``prompts``: the first ``eval_fraction`` held out, the rest train."""
    n_eval = round(data.eval_fraction * len(prompts))
    if not 0 < n_eval < len(prompts):
        raise InvalidArgumentError(
            "data.eval_fraction",
            data.eval_fraction,
            f"a share of the {len(prompts)} prompts of {data.train} that leaves at least one "
            "prompt on each side (or give data.eval)",
        )
    order = np.random.default_rng(seed).permutation(len(prompts))
    return [prompts[i] for i in order[n_eval:]], [prompts[i] for i in order[:n_eval]]


def heldout_block(config: ExperimentConfig) -> tuple[str, int, int | None]:
    """Where the held-out prompts of ``config`` come from: ``(source, first, stop)``.

    ``source`` is ``"imdb"``, the eval file, or ``"<train file> split"``; prompts ``first ..
    stop - 1`` of it are scored (``stop`` None: to the end). Two configs score on disjoint prompts
    when their sources differ or their ranges do not meet.
    """
    data = config.data
    first = config.training.eval_prompt_offset
    if data.eval is None and data.train not in BUILTIN_PROMPTS:
        source = f"{data.train} split"
    else:
        source = data.eval or data.train
    count = data.eval_prompts
    if count is None and source in BUILTIN_PROMPTS:
        count = IMDB_EVAL_PROMPTS
    return source, first, None if count is None else first + count


def load_prompts(config: ExperimentConfig, tokenizer: Any) -> tuple[list[str], list[str]]:
    """The training and the held-out prompts of ``config``, as text for ``tokenizer``'s policy.

    Returns:
        ``(train, held_out)`` prompt strings.

    Raises:
        InvalidArgumentError: naming the ``data.`` field at fault.
    """
    from tokenshape.models.data import review_openings

    data = config.data
    # Held-out prompts start at training.eval_prompt_offset, so a study and a comparison can score
    # on disjoint blocks of the same source.
    offset = config.training.eval_prompt_offset

    def prompts_of(source: str, field: str, split: str, n: int | None, offset: int) -> list[str]:
        """``n`` prompts of ``source`` from ``offset`` on; IMDB openings come from ``split``."""
        if source in BUILTIN_PROMPTS:
            default = IMDB_TRAIN_PROMPTS if split == "train" else IMDB_EVAL_PROMPTS
            openings = review_openings(
                tokenizer,
                offset + (n or default),
                data.prompt_tokens,
                split=split,
                seed=config.seed,
            )
            return openings[offset:]
        return _first(read(source, field), n, f"{field}_prompts", source, offset=offset)

    def read(source: str, field: str) -> list[str]:
        rows = read_prompt_rows(source, column=data.prompt_column, field=field)
        return [_as_text(prompt, tokenizer, field) for prompt in rows]

    if data.eval is None and data.train not in BUILTIN_PROMPTS:
        train, held_out = _split(read(data.train, "data.train"), data, config.seed)
        return (
            _first(train, data.train_prompts, "data.train_prompts", data.train),
            _first(held_out, data.eval_prompts, "data.eval_prompts", data.train, offset=offset),
        )
    # Without data.eval the training prompts are IMDB's, and so are the held-out ones.
    return (
        prompts_of(data.train, "data.train", "train", data.train_prompts, 0),
        prompts_of(data.eval or data.train, "data.eval", "heldout", data.eval_prompts, offset),
    )
