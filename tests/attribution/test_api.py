"""``tokenshape.attribute``: argument checking, reward-function checking, registration, and a
real string scorer (VADER) through the real MiniLM tokenizer."""

from __future__ import annotations

import math

import pytest
import torch

import tokenshape
from tokenshape.attribution import METHODS, KernelShapAttributor, register_method
from tokenshape.errors import InvalidArgumentError, RewardFunctionError

PROMPT = [2, 3]
RESPONSE = [5, 6, 7, 8]


@pytest.fixture
def batch(games):
    return games.make_batch([(PROMPT, RESPONSE), (PROMPT[:1], [9, 10])])


def _call(game, batch, games, **kwargs):
    ids, attention, response_mask = kwargs.pop("tensors", batch)
    kwargs.setdefault("masking", games.MASK_ID)
    return tokenshape.attribute(game, ids, attention, response_mask, **kwargs)


# ----------------------------------------------------------------------------------------------
# Bad input: each error names the argument and the value
# ----------------------------------------------------------------------------------------------


def test_empty_response_row(additive_game, batch, games):
    ids, attention, response_mask = batch
    response_mask = response_mask.clone()
    response_mask[1] = False
    with pytest.raises(
        InvalidArgumentError, match=r"response_mask=.*no response token in rows \[1\]"
    ):
        _call(additive_game, batch, games, tensors=(ids, attention, response_mask))
    assert additive_game.rows == 0


def test_response_mask_outside_attention_mask(additive_game, batch, games):
    ids, attention, response_mask = batch
    response_mask = response_mask.clone()
    response_mask[1, -1] = True  # a padded position of row 1
    with pytest.raises(
        InvalidArgumentError, match=r"response_mask=.*padded positions in rows \[1\]"
    ):
        _call(additive_game, batch, games, tensors=(ids, attention, response_mask))


@pytest.mark.parametrize("budget", [1, 0, -5, 2.5, 10.0, "64", True])
def test_bad_budget(additive_game, batch, games, budget):
    with pytest.raises(InvalidArgumentError, match=r"budget=" + repr(budget).replace(".", r"\.")):
        _call(additive_game, batch, games, budget=budget)


@pytest.mark.parametrize("name", ["attention_mask", "response_mask"])
def test_mismatched_shapes(additive_game, batch, games, name):
    ids, attention, response_mask = batch
    tensors = {"attention_mask": attention, "response_mask": response_mask}
    tensors[name] = tensors[name][:, :-1]
    with pytest.raises(InvalidArgumentError, match=rf"{name}=\(2, 5\).*shape \(2, 6\)"):
        _call(
            additive_game,
            batch,
            games,
            tensors=(ids, tensors["attention_mask"], tensors["response_mask"]),
        )


def test_float_input_ids(additive_game, batch, games):
    ids, attention, response_mask = batch
    with pytest.raises(InvalidArgumentError, match=r"input_ids=.*torch.float32.*integer tensor"):
        _call(additive_game, batch, games, tensors=(ids.float(), attention, response_mask))


def test_one_dimensional_input_ids(additive_game, batch, games):
    ids, attention, response_mask = batch
    with pytest.raises(InvalidArgumentError, match=r"input_ids=.*B x L"):
        _call(additive_game, batch, games, tensors=(ids[0], attention[0], response_mask[0]))


def test_response_mask_with_other_values(additive_game, batch, games):
    ids, attention, response_mask = batch
    with pytest.raises(InvalidArgumentError, match=r"response_mask=.*2.*bool or 0/1"):
        _call(additive_game, batch, games, tensors=(ids, attention, response_mask.long() * 2))
    # 0/1 integers are accepted as a mask.
    result = _call(additive_game, batch, games, tensors=(ids, attention, response_mask.long()))
    assert result.response_mask.dtype == torch.bool


@pytest.mark.parametrize("method", ["kernelshap", "sparse", "", "SHAP"])
def test_unknown_method(additive_game, batch, games, method):
    with pytest.raises(InvalidArgumentError, match=rf"method={method!r}.*kernel_shap"):
        _call(additive_game, batch, games, method=method)


def test_unhashable_method(additive_game, batch, games):
    with pytest.raises(InvalidArgumentError, match=r"method=\['exact'\]"):
        _call(additive_game, batch, games, method=["exact"])


@pytest.mark.parametrize("unit", ["words", "paragraph", 3, None])
def test_unknown_unit(additive_game, batch, games, unit):
    with pytest.raises(InvalidArgumentError, match=rf"unit={unit!r}.*'token', 'word', 'sentence'"):
        _call(additive_game, batch, games, unit=unit)


def test_word_unit_without_tokenizer(additive_game, batch, games):
    with pytest.raises(InvalidArgumentError, match=r"tokenizer=None.*unit='word'"):
        _call(additive_game, batch, games, unit="word")


@pytest.mark.parametrize("masking", ["blank", "zero", -1, 1.5, None, True])
def test_unknown_masking(additive_game, batch, games, masking):
    with pytest.raises(InvalidArgumentError, match=rf"masking={masking!r}"):
        _call(additive_game, batch, games, masking=masking)


def test_named_masking_without_tokenizer(additive_game, batch, games):
    with pytest.raises(InvalidArgumentError, match=r"tokenizer=None.*masking='auto'"):
        _call(additive_game, batch, games, masking="auto")


@pytest.mark.parametrize("seed", [1.0, "0", None])
def test_bad_seed(additive_game, batch, games, seed):
    with pytest.raises(InvalidArgumentError, match=rf"seed={seed!r}"):
        _call(additive_game, batch, games, seed=seed)


@pytest.mark.parametrize(
    "name,value", [("max_rows", 0), ("max_rows", 2.0), ("max_tokens", 0), ("max_tokens", "8")]
)
def test_bad_chunking(additive_game, batch, games, name, value):
    with pytest.raises(InvalidArgumentError, match=rf"{name}={value!r}"):
        _call(additive_game, batch, games, **{name: value})


def test_exact_with_too_many_units(additive_game, games):
    tensors = games.make_batch([(PROMPT, list(range(5, 22)))])
    with pytest.raises(
        InvalidArgumentError, match=r"method='exact'.*at most 16.*got 17.*kernel_shap"
    ):
        _call(additive_game, None, games, tensors=tensors, method="exact")


def test_lime_alpha_at_attribute(additive_game, batch, games):
    from tokenshape.attribution import LimeAttributor

    with pytest.raises(InvalidArgumentError, match=r"alpha=0\.0: expected a number > 0"):
        _call(additive_game, batch, games, method=LimeAttributor(alpha=0.0))


# ----------------------------------------------------------------------------------------------
# Reward functions that misbehave
# ----------------------------------------------------------------------------------------------


def _misbehaving(kind):
    def reward(input_ids, attention_mask):
        n = input_ids.shape[0]
        present = (input_ids == 5).any(dim=1)
        if kind == "nan":  # NaN only when token 5 is hidden
            return torch.where(present, 1.0, math.nan).double()
        if kind == "inf":
            return torch.where(present, 1.0, -math.inf).double()
        if kind == "shape":
            return torch.zeros(n, 1)
        if kind == "short":
            return torch.zeros(n - 1)
        if kind == "list":
            return [0.0] * n
        if kind == "numpy":
            return torch.zeros(n).numpy()
        if kind == "int":
            return torch.zeros(n, dtype=torch.long)
        raise AssertionError(kind)

    reward.__name__ = f"reward_{kind}"
    return reward


@pytest.mark.parametrize(
    "kind,pattern",
    [
        ("nan", r"reward_nan returned non-finite values \[nan"),
        ("inf", r"reward_inf returned non-finite values \[-inf"),
        ("shape", r"reward_shape returned shape \((\d+), 1\): expected \(\1,\)"),
        ("short", r"reward_short returned shape \((\d+),\): expected"),
        ("list", r"reward_list returned list: expected a torch.Tensor"),
        ("numpy", r"reward_numpy returned ndarray: expected a torch.Tensor"),
        ("int", r"reward_int returned dtype torch.int64: expected a float dtype"),
    ],
)
@pytest.mark.parametrize("method", ["kernel_shap", "exact", "occlusion", "lime"])
def test_misbehaving_reward_function(batch, games, kind, pattern, method):
    with pytest.raises(RewardFunctionError, match=pattern):
        _call(_misbehaving(kind), batch, games, method=method, budget=8)


def test_nan_is_never_turned_into_zero(games):
    # A NaN in one coalition of the second sequence fails the whole call.
    def reward(input_ids, attention_mask):
        values = attention_mask.double().sum(1)
        broken = (input_ids == 9).any(1) & ~(input_ids == 10).any(1)
        return torch.where(broken, math.nan, values)

    tensors = games.make_batch([(PROMPT, RESPONSE), (PROMPT[:1], [9, 10])])
    with pytest.raises(RewardFunctionError, match="non-finite"):
        _call(reward, None, games, tensors=tensors, method="exact")


def test_reward_function_exceptions_propagate(batch, games):
    def reward(input_ids, attention_mask):
        raise KeyError("model exploded")

    with pytest.raises(KeyError, match="model exploded"):
        _call(reward, batch, games)


# ----------------------------------------------------------------------------------------------
# Registration and defaults
# ----------------------------------------------------------------------------------------------


def test_register_method(additive_game, batch, games):
    class Halved(KernelShapAttributor):
        name = "halved_test_method"

        def _solve(self, plan, values, v_empty, v_full):
            return super()._solve(plan, values, v_empty, v_full) / 2

    register_method("halved_test_method", Halved)
    try:
        half = _call(additive_game, batch, games, method="halved_test_method", budget=16)
        full = _call(additive_game, batch, games, method="kernel_shap", budget=16)
        assert half.method == "halved_test_method"
        torch.testing.assert_close(half.unit_scores[0] * 2, full.unit_scores[0])
    finally:
        METHODS.pop("halved_test_method")


@pytest.mark.parametrize("name", ["", "sparse", None])
def test_register_method_refuses_bad_names(name):
    with pytest.raises(InvalidArgumentError, match="name="):
        register_method(name, KernelShapAttributor)


def test_default_budget(interaction_game, games):
    response = list(range(5, 15))
    game = interaction_game(0, response)
    tensors = games.make_batch([(PROMPT, response)])
    result = _call(game, None, games, tensors=tensors)
    assert result.method == "kernel_shap"
    assert int(result.rows[0]) == KernelShapAttributor.default_budget == game.rows


def test_tokenizer_taken_from_the_reward_function(additive_game, games):
    class Tok:
        mask_token_id = games.MASK_ID
        pad_token_id = games.PAD_ID
        unk_token_id = 39

    additive_game.tokenizer = Tok()
    tensors = games.make_batch([(PROMPT, RESPONSE)])
    auto = tokenshape.attribute(additive_game, *tensors, method="exact")
    explicit = tokenshape.attribute(additive_game, *tensors, method="exact", masking=games.MASK_ID)
    torch.testing.assert_close(auto.unit_scores[0], explicit.unit_scores[0], atol=0, rtol=0)

    # An explicit tokenizer wins over the reward function's.
    class Unk:
        unk_token_id = 8  # worth 3 in the additive game: a visibly different game
        pad_token_id = games.PAD_ID

    other = tokenshape.attribute(additive_game, *tensors, method="exact", tokenizer=Unk())
    assert float(other.base_value[0]) == pytest.approx(
        float(auto.base_value[0]) + 3.0 * len(RESPONSE)
    )


# ----------------------------------------------------------------------------------------------
# A real string scorer: VADER on text decoded with the real MiniLM tokenizer
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vader_reward(minilm_tokenizer):
    vader = pytest.importorskip("vaderSentiment.vaderSentiment")
    from tokenshape.reward import StringScorerReward

    analyzer = vader.SentimentIntensityAnalyzer()

    def compound(text):
        return analyzer.polarity_scores(text)["compound"]

    return StringScorerReward(compound, minilm_tokenizer)


@pytest.mark.parametrize(
    "method,budget", [("exact", None), ("kernel_shap", 64), ("kernel_shap", 600)]
)
@pytest.mark.parametrize("unit", ["token", "word"])
def test_vader_sentiment_words(vader_reward, minilm_tokenizer, method, budget, unit):
    text = "the film was wonderful but the ending was awful"
    encoded = minilm_tokenizer(text, return_tensors="pt")
    ids, attention = encoded["input_ids"], encoded["attention_mask"]
    special = torch.tensor(
        minilm_tokenizer.get_special_tokens_mask(ids[0].tolist(), already_has_special_tokens=True)
    ).bool()
    response_mask = ~special[None]
    result = tokenshape.attribute(
        vader_reward, ids, attention, response_mask, method=method, budget=budget, unit=unit
    )
    tokens = minilm_tokenizer.convert_ids_to_tokens(ids[0].tolist())
    score = dict(zip(tokens, result.scores[0].tolist()))
    assert score["wonderful"] > 0.05
    assert score["awful"] < -0.05
    # The sentiment-bearing words carry the most weight.
    neutral = [score[w] for w in ("the", "film", "ending")]
    assert min(abs(score["wonderful"]), abs(score["awful"])) > max(abs(s) for s in neutral)
    assert float(result.full_value[0]) == pytest.approx(vader_reward.scorer(text))
    assert float(result.base_value[0]) == pytest.approx(0.0)  # every word hidden: empty text
    assert float(result.efficiency_error[0]) < 1e-5


def test_special_tokens_in_the_response_mask_are_not_players(additive_game, games):
    # TRL's completion mask includes EOS: special tokens leave the players, with a warning, and
    # stay in place in every coalition. The unknown token stands for text: it stays a player.
    from types import SimpleNamespace

    eos, unk = 39, 38
    tokenizer = SimpleNamespace(all_special_ids=[games.PAD_ID, unk, eos], unk_token_id=unk)
    ids, attention, _ = games.make_batch([([2, 3], [5, 6, unk, 7])], suffix=[eos])
    response_mask = attention.bool().clone()
    response_mask[0, :2] = False  # the response and the closing eos
    with pytest.warns(UserWarning, match="special tokens"):
        result = tokenshape.attribute(
            additive_game,
            ids,
            attention,
            response_mask,
            method="exact",
            masking=games.MASK_ID,
            tokenizer=tokenizer,
        )
    assert result.response_mask[0].tolist() == [False, False, True, True, True, True, False]
    assert result.unit_scores[0].tolist() == [1.0, -2.0, 0.0, 0.5]


def test_removal_refuses_rows_that_would_be_empty(games):
    # No prompt and no special token: removing every unit would leave nothing to score.
    ids, attention, response_mask = games.make_batch([([], [5, 6, 7]), ([2], [8, 9])])
    calls = []

    def reward(input_ids, attention_mask):
        calls.append(input_ids.shape)
        return attention_mask.double().sum(1)

    for max_rows in (1, 16):
        with pytest.raises(InvalidArgumentError, match=r"masking='remove'.*rows \[0\]"):
            tokenshape.attribute(
                reward, ids, attention, response_mask, masking="remove", max_rows=max_rows
            )
    assert calls == []  # refused before any forward
