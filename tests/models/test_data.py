"""The movie reviews: cleaning, the seeded split and prompt openings."""

from __future__ import annotations

import pytest

from tokenshape.errors import InvalidArgumentError
from tokenshape.models.data import load_reviews, review_openings, split_reviews
from tokenshape.models.policy import smollm2_tokenizer
from tokenshape.models.tiny import minilm_tokenizer


@pytest.fixture(scope="module")
def smollm2():
    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def minilm():
    return minilm_tokenizer()


def test_sources_and_labels():
    reviews = load_reviews()
    assert reviews["source"].value_counts().to_dict() == {"imdb": 25000, "rotten_tomatoes": 8530}
    assert set(reviews["label"]) == {0, 1}
    assert len(load_reviews(source="rotten_tomatoes")) == 8530


def test_line_breaks_are_stripped():
    reviews = load_reviews(source="imdb")
    assert not reviews["text"].str.contains("<br", regex=False).any()
    # The CSV's third row reads "...tells no cogent story.<br /><br />One might feel virtuous...".
    assert "tells no cogent story. One might feel virtuous" in reviews.loc[2, "text"]


def test_load_reviews_returns_a_copy():
    first = load_reviews(source="imdb")
    first.loc[0, "text"] = "changed"
    assert load_reviews(source="imdb").loc[0, "text"] != "changed"


def test_split_is_deterministic():
    first = split_reviews(split="heldout", seed=3)
    again = split_reviews(split="heldout", seed=3)
    assert first.index.tolist() == again.index.tolist()
    assert first["text"].tolist() == again["text"].tolist()


def test_split_is_disjoint_and_complete():
    train = split_reviews(source="imdb", split="train", seed=0)
    heldout = split_reviews(source="imdb", split="heldout", seed=0)
    assert len(heldout) == 5000 and len(train) == 20000
    assert set(train.index).isdisjoint(heldout.index)
    assert set(train.index) | set(heldout.index) == set(load_reviews(source="imdb").index)
    assert set(heldout["source"]) == {"imdb"}


def test_split_depends_on_the_seed():
    assert (
        split_reviews(split="heldout", seed=0).index.tolist()
        != split_reviews(split="heldout", seed=1).index.tolist()
    )


def test_split_shuffles_the_labels():
    # The CSV lists all negative IMDB reviews before the positive ones.
    first = split_reviews(split="train", seed=0).head(200)
    assert 0.35 < first["label"].mean() < 0.65


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"source": "yelp"}, "source"),
        ({"split": "test"}, "split"),
        ({"seed": -1}, "seed"),
        ({"heldout_fraction": 1.0}, "heldout_fraction"),
    ],
)
def test_split_rejects_bad_arguments(kwargs, name):
    with pytest.raises(InvalidArgumentError) as caught:
        split_reviews(**kwargs)
    assert caught.value.name == name


@pytest.mark.parametrize("tokenizer_name", ["smollm2", "minilm"])
def test_openings_have_n_tokens(request, tokenizer_name):
    tokenizer = request.getfixturevalue(tokenizer_name)
    openings = review_openings(tokenizer, 50, 8, split="heldout", seed=0)
    assert len(openings) == 50
    lengths = [len(ids) for ids in tokenizer(openings, add_special_tokens=False)["input_ids"]]
    assert lengths == [8] * 50


def test_openings_are_review_prefixes(smollm2):
    openings = review_openings(smollm2, 20, 8, split="heldout", seed=0)
    texts = split_reviews(split="heldout", seed=0)["text"].head(40).tolist()
    assert all(any(text.startswith(opening) for text in texts) for opening in openings)
    assert len(set(openings)) == 20


def test_openings_are_deterministic_and_follow_split_and_seed(smollm2):
    heldout = review_openings(smollm2, 10, 8, split="heldout", seed=0)
    assert heldout == review_openings(smollm2, 10, 8, split="heldout", seed=0)
    assert heldout != review_openings(smollm2, 10, 8, split="train", seed=0)
    assert heldout != review_openings(smollm2, 10, 8, split="heldout", seed=1)


def test_openings_of_rotten_tomatoes(smollm2):
    openings = review_openings(smollm2, 5, 4, split="train", source="rotten_tomatoes")
    rt = set(load_reviews(source="rotten_tomatoes")["text"])
    assert all(any(text.startswith(opening) for text in rt) for opening in openings)


def test_too_many_openings_is_an_error(smollm2):
    # Rotten Tomatoes reviews are single sentences: few reach 100 tokens.
    with pytest.raises(InvalidArgumentError, match="at most") as caught:
        review_openings(smollm2, 1000, 100, split="heldout", source="rotten_tomatoes")
    assert caught.value.name == "n"


@pytest.mark.parametrize(("n", "n_tokens", "name"), [(0, 8, "n"), (4, 0, "n_tokens")])
def test_openings_reject_bad_counts(smollm2, n, n_tokens, name):
    with pytest.raises(InvalidArgumentError) as caught:
        review_openings(smollm2, n, n_tokens, split="train")
    assert caught.value.name == name
