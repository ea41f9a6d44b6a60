"""The amortised explainer: learning analytic games, efficiency, rows, fallback, saving."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

import tokenshape
from tokenshape import AmortizedExplainer
from tokenshape.errors import InvalidArgumentError
from tokenshape.reward import ScoringStates, StringScorerReward


class _StateModel(torch.nn.Module):
    """Stands in for a classifier: only its type and ``config.hidden_size`` are read."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.config = SimpleNamespace(hidden_size=hidden_size)


class StatefulGameReward:
    """An analytic game that shows hidden states, as a classifier's reward does.

    The state of a token is the one-hot code of its id, followed (with ``context=True``) by the
    row's presence vector, the ids present in it: the information a Shapley value of the game
    depends on. The scoring state is all ones; the head read at every position is 0. Rows of both
    ``__call__`` and ``scoring_states`` are counted.
    """

    def __init__(self, game, vocab_size: int, *, context: bool) -> None:
        self.game = game
        self.vocab_size = vocab_size
        self.context = context
        self.model = _StateModel(vocab_size * (2 if context else 1))
        self.rows = 0
        self.__name__ = "stateful_game"

    def __call__(self, input_ids, attention_mask):
        self.rows += input_ids.shape[0]
        return self.game(input_ids, attention_mask)

    def scoring_states(self, input_ids, attention_mask):
        self.rows += input_ids.shape[0]
        reward = self.game(input_ids, attention_mask).float()
        codes = torch.nn.functional.one_hot(input_ids, self.vocab_size).float()
        codes = codes * attention_mask[..., None]
        if self.context:
            present = codes.amax(dim=1, keepdim=True).expand_as(codes)
            codes = torch.cat([codes, present], dim=-1)
        batch, length, size = codes.shape
        return ScoringStates(
            reward=reward,
            hidden=codes,
            scoring_hidden=torch.ones(batch, size),
            head_scores=torch.zeros(batch, length),
        )


PLAYERS = list(range(5, 17))


def _assert_efficient(result):
    """Each sequence's unit scores sum to v(all) - v(empty)."""
    sums = torch.stack([phi.sum() for phi in result.unit_scores])
    gap = result.full_value - result.base_value
    torch.testing.assert_close(sums, gap, atol=1e-9, rtol=0)


def _random_rows(generator, count, length=5):
    rows = []
    for _ in range(count):
        ids = torch.randperm(len(PLAYERS), generator=generator)[:length]
        rows.append(((2, 3), tuple(PLAYERS[i] for i in ids.tolist())))
    return rows


def _train(explainer, games, generator, calls, batch=8):
    for _ in range(calls):
        ids, attention, response = games.make_batch(_random_rows(generator, batch))
        explainer.attribute(ids, attention, response, masking=games.MASK_ID)


def _head_only(explainer):
    """Make the explainer audit as little as possible (a tiny credit share) from now on."""
    explainer.settings["audit_fraction"] = 1e-9
    explainer.audit_credit = 0.0
    explainer.settings["min_pearson"] = None


def _explainer(reward, **options):
    defaults = {
        "teacher": "exact",
        "audit_fraction": 1.0,
        "min_pearson": None,
        "learning_rate": 1e-2,
        "train_steps": 40,
    }
    return AmortizedExplainer(reward, **{**defaults, **options})


def test_head_recovers_an_additive_game(games, additive_game):
    reward = StatefulGameReward(additive_game, games.VOCAB_SIZE, context=False)
    explainer = _explainer(reward)
    generator = torch.Generator().manual_seed(0)
    _train(explainer, games, generator, calls=12)
    _head_only(explainer)
    rows = _random_rows(generator, 8)
    result = explainer.attribute(*games.make_batch(rows), masking=games.MASK_ID)
    assert result.rows.tolist() == [2] * 8  # the head's scores: state forward + v(empty)
    for b, (_, response) in enumerate(rows):
        expected = torch.tensor([games.additive_values[t] for t in response], dtype=torch.float64)
        torch.testing.assert_close(result.unit_scores[b], expected, atol=2e-3, rtol=0)


def test_head_learns_a_game_with_interactions(games, interaction_game):
    game = interaction_game(3, PLAYERS)
    reward = StatefulGameReward(game, games.VOCAB_SIZE, context=True)
    explainer = _explainer(reward)
    generator = torch.Generator().manual_seed(1)
    _train(explainer, games, generator, calls=30)
    _head_only(explainer)
    rows = _random_rows(generator, 16)
    ids, attention, response = games.make_batch(rows)
    result = explainer.attribute(ids, attention, response, masking=games.MASK_ID)
    exact = tokenshape.attribute(game, ids, attention, response, method="exact", masking=1)
    errors = [
        float((a - b).norm() / b.norm()) for a, b in zip(result.unit_scores, exact.unit_scores)
    ]
    # Unseen combinations of players: the stated tolerance is a mean relative L2 below 0.2.
    assert sum(errors) / len(errors) < 0.2
    _assert_efficient(result)


def test_scores_are_efficient_and_rows_counted(games, pair_game):
    reward = StatefulGameReward(pair_game, games.VOCAB_SIZE, context=True)
    explainer = _explainer(reward, teacher="kernel_shap", teacher_budget=16, audit_fraction=0.25)
    generator = torch.Generator().manual_seed(2)
    total = 0
    for _ in range(3):
        rows = _random_rows(generator, 8)
        reward.rows = 0
        result = explainer.attribute(*games.make_batch(rows), masking=games.MASK_ID)
        audited = result.rows > 2
        assert int(audited.sum()) == 2  # a quarter of 8
        # Audited: the state forward and the teacher's 16 rows; the others: state and v(empty).
        assert result.rows[audited].tolist() == [17, 17]
        assert result.rows[~audited].tolist() == [2] * 6
        assert reward.rows == result.total_rows
        _assert_efficient(result)
        masked = torch.full_like(result.input_ids, games.MASK_ID)
        ids = torch.where(result.response_mask, masked, result.input_ids)
        torch.testing.assert_close(
            result.base_value, pair_game(ids, torch.ones_like(ids)).double(), atol=1e-9, rtol=0
        )
        total += result.total_rows
    assert explainer.fidelity.compared == 6


def test_audit_share_carries_over_between_calls(games, additive_game):
    reward = StatefulGameReward(additive_game, games.VOCAB_SIZE, context=False)
    explainer = _explainer(reward, audit_fraction=0.25)
    generator = torch.Generator().manual_seed(3)
    audited = 0
    for _ in range(6):
        ids, attention, response = games.make_batch(_random_rows(generator, 3))
        result = explainer.attribute(ids, attention, response, masking=games.MASK_ID)
        audited += int((result.rows > 2).sum())
    assert audited == 4  # 18 sequences at a quarter: 4.5 owed, 4 whole ones so far


def test_fallback_engages_when_the_reward_model_changes(games, additive_game, caplog):
    reward = StatefulGameReward(additive_game, games.VOCAB_SIZE, context=False)
    explainer = _explainer(reward, audit_fraction=0.25, min_pearson=0.9, fidelity_window=4)
    generator = torch.Generator().manual_seed(4)
    _train(explainer, games, generator, calls=12)
    assert not explainer.fallback
    assert explainer.fidelity.pearson > 0.99
    ids, attention, response = games.make_batch(_random_rows(generator, 8))
    assert (explainer.attribute(ids, attention, response, masking=1).rows > 2).sum() == 2

    # Swap the model under the reward: the values of the players are reversed.
    reversed_values = games.linear_values(
        {t: games.additive_values[PLAYERS[-1 - i]] for i, t in enumerate(PLAYERS)}
    )
    reward.game = games.AnalyticGame(reversed_values)
    with caplog.at_level(logging.WARNING, logger="tokenshape.amortized"):
        for _ in range(3):
            ids, attention, response = games.make_batch(_random_rows(generator, 8))
            result = explainer.attribute(ids, attention, response, masking=games.MASK_ID)
            if explainer.fallback:
                break
    assert explainer.fallback
    assert result.rows.tolist() == [1 + 2**5] * 8  # the teacher explains every sequence
    assert "below min_pearson=0.9" in caplog.text
    exact = tokenshape.attribute(reward.game, ids, attention, response, method="exact", masking=1)
    for phi, reference in zip(result.unit_scores, exact.unit_scores):
        torch.testing.assert_close(phi, reference)


def test_fallback_before_fidelity_is_measured(games, additive_game):
    reward = StatefulGameReward(additive_game, games.VOCAB_SIZE, context=False)
    explainer = _explainer(reward, audit_fraction=0.25, min_pearson=0.5, fidelity_window=8)
    ids, attention, response = games.make_batch(_random_rows(torch.Generator(), 4))
    result = explainer.attribute(ids, attention, response, masking=games.MASK_ID)
    assert explainer.fallback and result.rows.tolist() == [33] * 4


def _run(explainer, games, seed, calls=3):
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(calls):
        ids, attention, response = games.make_batch(_random_rows(generator, 6))
        out.append(explainer.attribute(ids, attention, response, masking=games.MASK_ID))
    return out


def _same(first, second):
    for a, b in zip(first, second):
        assert torch.equal(a.rows, b.rows)
        for x, y in zip(a.unit_scores, b.unit_scores):
            assert torch.equal(x, y)


def test_save_and_load_continue_identically(games, pair_game, tmp_path):
    reward = StatefulGameReward(pair_game, games.VOCAB_SIZE, context=True)
    explainer = _explainer(reward, teacher="kernel_shap", teacher_budget=16, audit_fraction=0.5)
    _run(explainer, games, seed=5)
    explainer.save(tmp_path / "explainer.pt")
    loaded = AmortizedExplainer.load(tmp_path / "explainer.pt", reward)
    assert loaded.settings == explainer.settings
    assert loaded.fidelity.pearsons == explainer.fidelity.pearsons
    _same(_run(explainer, games, seed=6), _run(loaded, games, seed=6))


def test_the_same_seed_gives_the_same_scores(games, pair_game):
    reward = StatefulGameReward(pair_game, games.VOCAB_SIZE, context=True)
    options = {"teacher": "kernel_shap", "teacher_budget": 16, "audit_fraction": 0.5}
    first = _run(_explainer(reward, seed=7, **options), games, seed=8)
    _same(first, _run(_explainer(reward, seed=7, **options), games, seed=8))
    other = _run(_explainer(reward, seed=9, **options), games, seed=8)
    assert any(
        not torch.equal(x, y)
        for a, b in zip(first, other)
        for x, y in zip(a.unit_scores, b.unit_scores)
    )


def test_loading_for_another_model_is_an_error(games, additive_game, pair_game, tmp_path):
    reward = StatefulGameReward(additive_game, games.VOCAB_SIZE, context=False)
    _explainer(reward).save(tmp_path / "explainer.pt")
    wider = StatefulGameReward(pair_game, games.VOCAB_SIZE, context=True)
    with pytest.raises(InvalidArgumentError, match="reward=.*hidden size 80.*hidden size 40"):
        AmortizedExplainer.load(tmp_path / "explainer.pt", wider)


@pytest.mark.parametrize(
    "option,value,pattern",
    [
        ("audit_fraction", 0.0, r"audit_fraction=0.0: expected a number in \(0, 1\]"),
        ("audit_fraction", 1.5, r"audit_fraction=1.5"),
        ("teacher", "lime", r"teacher='lime': expected a Shapley method name"),
        ("teacher", "no_such_method", r"teacher='no_such_method'"),
        ("teacher_budget", 1, r"teacher_budget=1: expected an int >= 2"),
        ("min_pearson", 2.0, r"min_pearson=2.0"),
    ],
)
def test_bad_options_are_named(games, additive_game, option, value, pattern):
    reward = StatefulGameReward(additive_game, games.VOCAB_SIZE, context=False)
    with pytest.raises(InvalidArgumentError, match=pattern):
        AmortizedExplainer(reward, **{option: value})


def test_a_reward_without_hidden_states_cannot_be_amortised(games, additive_game, minilm_tokenizer):
    for reward in (additive_game, StringScorerReward(len, minilm_tokenizer)):
        with pytest.raises(InvalidArgumentError, match="reward=.*exposes its hidden states"):
            AmortizedExplainer(reward)


def test_amortized_on_a_bert_reward_model(bert_reward, minilm_tokenizer):
    encoded = minilm_tokenizer(
        ["a", "review:"], ["the film was wonderful", "awful"], padding=True, return_tensors="pt"
    )
    ids, attention = encoded["input_ids"], encoded["attention_mask"]
    response = (encoded["token_type_ids"] == 1) & (ids != minilm_tokenizer.sep_token_id)
    response &= attention.bool()
    states = bert_reward.scoring_states(ids, attention)
    torch.testing.assert_close(states.head_scores[:, 0], bert_reward(ids, attention))
    explainer = AmortizedExplainer(bert_reward, teacher_budget=8, audit_fraction=0.5)
    result = explainer.attribute(ids, attention, response)
    torch.testing.assert_close(result.full_value.float(), bert_reward(ids, attention))
    assert float(result.efficiency_error.max()) < 1e-5
    assert explainer.last_call["teacher_sequences"] == 2  # no fidelity yet: the teacher for all


def test_shaped_reward_blends_and_logs_the_amortized_signal(bert_reward):
    from tokenshape import ShapedReward, ShapingParams

    params = ShapingParams({"amortized": 0.5, "sparse": 0.5})
    built = ShapedReward(bert_reward, params, budget=12, seed=3)
    assert isinstance(built.signals["amortized"], AmortizedExplainer)
    assert built.signals["amortized"].settings["teacher_budget"] == 12
    explainer = AmortizedExplainer(bert_reward, teacher_budget=8, fidelity_window=2)
    shaped = ShapedReward(bert_reward, params, methods={"amortized": explainer})
    metrics = {}
    prompts = ["The film", "A movie"]
    completions = [" was wonderful and moving", " bored me to tears"]
    for _ in range(2):
        scores = shaped(prompts, completions, log_metric=metrics.__setitem__)
    torch.testing.assert_close(
        torch.tensor(scores, dtype=torch.float64),
        shaped.last.attributions["amortized"].full_value.cpu(),
        atol=1e-6,
        rtol=1e-6,
    )
    assert metrics["tokenshape/amortized/pearson"] == explainer.fidelity.pearson
    assert metrics["tokenshape/amortized/rows_per_sequence"] == 9.0  # state row + 8 teacher rows


def test_config_keys_of_the_amortized_explainer():
    from tokenshape.experiments.config import config_from_dict

    config = config_from_dict({"attribution": {"amortized_audit_fraction": 0.5}})
    assert config.attribution.amortized_audit_fraction == 0.5
    assert config.attribution.amortized_teacher == "kernel_shap"
    with pytest.raises(InvalidArgumentError, match="attribution.amortized_audit_fraction=0.0"):
        config_from_dict({"attribution": {"amortized_audit_fraction": 0.0}})
    with pytest.raises(InvalidArgumentError, match="attribution.amortized_teacher='lime'"):
        config_from_dict({"attribution": {"amortized_teacher": "lime"}})
