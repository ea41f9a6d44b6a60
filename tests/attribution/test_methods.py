"""Cross-cutting tests, run once per method enrolled in ``METHOD_CONFIGS`` (see conftest.py)."""

from __future__ import annotations

import pytest
import torch

import tokenshape
from tokenshape.attribution import METHODS

PROMPT = [2, 3, 4]


def _attribute(game, games, rows, method_config, *, padding="right", width=None, **kwargs):
    ids, attention, response_mask = games.make_batch(rows, padding=padding, width=width)
    kwargs.setdefault("budget", method_config.budget)
    kwargs.setdefault("masking", games.MASK_ID)
    return tokenshape.attribute(
        game, ids, attention, response_mask, method=method_config.name, **kwargs
    )


def test_every_enrolled_method_is_registered(method_configs):
    names = {config.name for config in method_configs}
    assert names <= set(METHODS)
    assert {"kernel_shap", "lime", "exact", "occlusion", "attention"} <= names


@pytest.mark.parametrize("n_units", [1, 2, 3, 6])
@pytest.mark.parametrize("budget", [2, 3, 24, 100])
def test_rows_per_sequence_counted_by_the_reward_function(
    interaction_game, games, method_config, n_units, budget
):
    response = list(range(5, 5 + n_units))
    game = interaction_game(3, response)
    result = _attribute(game, games, [(PROMPT, response)], method_config, budget=budget)
    expected = method_config.rows(n_units, budget)
    assert game.rows == expected
    assert result.rows.tolist() == [expected]
    assert result.total_rows == expected


def test_rows_of_a_batch_are_the_sum_of_its_sequences(interaction_game, games, method_config):
    responses = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15, 16, 17]]
    game = interaction_game(4, list(range(5, 18)))
    result = _attribute(game, games, [(PROMPT, r) for r in responses], method_config, budget=20)
    expected = [method_config.rows(len(r), 20) for r in responses]
    assert result.rows.tolist() == expected
    assert game.rows == sum(expected)


@pytest.mark.parametrize("budget", [2, 3, 5, 9, 30, 300])
def test_efficiency_at_any_budget(interaction_game, games, method_config, budget):
    if not method_config.efficient:
        pytest.skip(f"{method_config.name} is not efficient")
    response = [5, 6, 7, 8, 9, 10, 11, 12]  # M = 8 > several of the budgets
    game = interaction_game(5, response)
    result = _attribute(game, games, [(PROMPT, response)], method_config, budget=budget)
    gap = result.full_value[0] - result.base_value[0]
    assert abs(float(result.unit_scores[0].sum() - gap)) < 1e-9
    assert float(result.efficiency_error[0]) < 1e-5  # token scores are float32
    assert abs(float(gap)) > 0.1


def test_full_and_base_values(interaction_game, games, method_config):
    response = [5, 6, 7, 8]
    game = interaction_game(6, response)
    ids, attention, response_mask = games.make_batch([(PROMPT, response)])
    result = _attribute(game, games, [(PROMPT, response)], method_config)
    full = float(game(ids, attention)[0])
    empty = float(game(torch.where(response_mask, games.MASK_ID, ids), attention)[0])
    assert float(result.full_value[0]) == pytest.approx(full, abs=1e-12)
    expected_base = empty if method_config.base_is_empty else 0.0
    assert float(result.base_value[0]) == pytest.approx(expected_base, abs=1e-12)


def test_symmetric_tokens_get_equal_scores(games, method_config):
    # Ids 5 and 6 are interchangeable: the same value and the same interaction with id 7.
    game = games.AnalyticGame(
        games.linear_values({5: 1.0, 6: 1.0, 7: 2.0, 8: -1.0}),
        [
            games.pair_term(5, 7, 1.5),
            games.pair_term(6, 7, 1.5),
            games.pair_term(5, 8, 0.5),
            games.pair_term(6, 8, 0.5),
        ],
    )
    response = [5, 7, 8, 6]
    budget = 2 ** len(response)
    if not (method_config.symmetric or method_config.shapley_at(len(response), budget)):
        pytest.skip(f"{method_config.name} does not treat equal players equally by construction")
    result = _attribute(game, games, [(PROMPT, response)], method_config, budget=budget)
    phi = result.unit_scores[0]
    assert float(phi[0]) == pytest.approx(float(phi[3]), abs=1e-9)
    assert float(phi[0]) != pytest.approx(float(phi[1]), abs=1e-3)


def test_null_player_gets_zero(pair_game, games, method_config):
    # Id 9 has value 0 and no interaction; id 13 does matter.
    response = [5, 9, 8, 13]
    budget = 2 ** len(response)
    if not (method_config.null_player or method_config.shapley_at(len(response), budget)):
        pytest.skip(f"{method_config.name} does not give null players 0 by construction")
    result = _attribute(pair_game, games, [(PROMPT, response)], method_config, budget=budget)
    assert float(result.unit_scores[0][1]) == pytest.approx(0.0, abs=1e-9)
    assert abs(float(result.unit_scores[0][3])) > 0.1


@pytest.mark.parametrize("padding", ["left", "right"])
def test_padding_invariance(interaction_game, games, method_config, padding):
    response = [5, 6, 7, 8, 9, 10]
    game = interaction_game(7, response)
    alone = _attribute(game, games, [(PROMPT, response)], method_config)
    padded = _attribute(
        game,
        games,
        [(PROMPT, response), (PROMPT[:1], [11, 12])],
        method_config,
        padding=padding,
        width=len(PROMPT) + len(response) + 4,
    )
    torch.testing.assert_close(padded.unit_scores[0], alone.unit_scores[0], atol=1e-10, rtol=0)
    scores = padded.scores[0][padded.response_mask[0]]
    torch.testing.assert_close(scores, alone.scores[0][alone.response_mask[0]])
    assert padded.scores[0][~padded.response_mask[0]].abs().max() == 0
    assert int(padded.rows[0]) == int(alone.rows[0])


def test_batched_equals_per_example(interaction_game, games, method_config):
    rows = [(PROMPT, [5, 6, 7, 8, 9]), (PROMPT[:1], [10, 11, 12]), ([2, 4], [13, 5, 14, 6, 15, 7])]
    game = interaction_game(8, list(range(5, 16)))
    batched = _attribute(game, games, rows, method_config)
    for b, row in enumerate(rows):
        single = _attribute(game, games, [row], method_config)
        torch.testing.assert_close(
            batched.unit_scores[b], single.unit_scores[0], atol=1e-10, rtol=0
        )
        assert float(batched.full_value[b]) == pytest.approx(float(single.full_value[0]))
        assert float(batched.base_value[b]) == pytest.approx(float(single.base_value[0]))
        assert int(batched.rows[b]) == int(single.rows[0])


@pytest.mark.parametrize(
    "chunking",
    [
        {"max_rows": 1},
        {"max_rows": 3},
        {"max_rows": 10_000},
        {"max_tokens": 40},
        {"max_rows": 5, "max_tokens": 1},
    ],
    ids=["rows1", "rows3", "rows-large", "tokens40", "tokens1"],
)
def test_chunked_equals_unchunked(interaction_game, games, method_config, chunking):
    rows = [(PROMPT, [5, 6, 7, 8, 9]), (PROMPT[:1], [10, 11, 12, 13])]
    game = interaction_game(9, list(range(5, 14)))
    reference = _attribute(game, games, rows, method_config, max_rows=10_000)
    chunked_game = interaction_game(9, list(range(5, 14)))
    chunked = _attribute(chunked_game, games, rows, method_config, **chunking)
    for b in range(len(rows)):
        torch.testing.assert_close(
            chunked.unit_scores[b], reference.unit_scores[b], atol=1e-10, rtol=0
        )
    assert chunked_game.rows == game.rows
    width = len(PROMPT) + 5
    limit = chunking.get("max_rows", 10_000)
    if "max_tokens" in chunking:
        limit = min(limit, max(1, chunking["max_tokens"] // width))
    assert max(shape[0] for shape in chunked_game.calls) <= limit
    if limit < chunked_game.rows:
        assert len(chunked_game.calls) > 1


def test_seed(interaction_game, games, method_config):
    response = [5, 6, 7, 8, 9, 10, 11, 12]  # 2^8 = 256 > the sampling budget
    game = interaction_game(10, response)
    rows = [(PROMPT, response)]
    first = _attribute(game, games, rows, method_config, seed=3)
    again = _attribute(game, games, rows, method_config, seed=3)
    other = _attribute(game, games, rows, method_config, seed=4)
    assert torch.equal(first.unit_scores[0], again.unit_scores[0])
    if method_config.sampling:
        assert (first.unit_scores[0] - other.unit_scores[0]).abs().max() > 1e-6
    else:
        assert torch.equal(first.unit_scores[0], other.unit_scores[0])


def test_removal_equals_replacement_when_the_mask_token_is_worth_nothing(
    interaction_game, games, method_config
):
    # In the analytic games MASK_ID is worth nothing, so deleting a token or replacing it by the
    # mask token define the same game, for right and left padding alike.
    rows = [(PROMPT, [5, 6, 7, 8, 9]), (PROMPT[:2], [10, 11, 12])]
    game = interaction_game(11, list(range(5, 13)))
    for padding in ("right", "left"):
        replaced = _attribute(game, games, rows, method_config, padding=padding)
        removed = _attribute(game, games, rows, method_config, padding=padding, masking="remove")
        for b in range(len(rows)):
            torch.testing.assert_close(
                removed.unit_scores[b], replaced.unit_scores[b], atol=1e-10, rtol=0
            )


def test_result_layout(interaction_game, games, method_config):
    rows = [(PROMPT, [5, 6, 7]), (PROMPT[:1], [8, 9, 10, 11])]
    game = interaction_game(12, list(range(5, 12)))
    ids, _, response_mask = games.make_batch(rows)
    result = _attribute(game, games, rows, method_config)
    assert result.method == method_config.name
    assert result.scores.shape == ids.shape and result.scores.dtype == torch.float32
    assert result.base_value.shape == (2,) and result.full_value.shape == (2,)
    assert [u.shape[0] for u in result.unit_scores] == [3, 4]
    assert torch.equal(result.input_ids, ids)
    assert torch.equal(result.response_mask, response_mask)
    assert result.scores[~response_mask].abs().max() == 0
    assert torch.equal(result.unit_index[response_mask], torch.tensor([0, 1, 2, 0, 1, 2, 3]))
    assert bool((result.unit_index[~response_mask] == -1).all())
    # Token scores are the unit scores (one token per unit).
    torch.testing.assert_close(
        result.scores[0, 3:6].double(), result.unit_scores[0], atol=1e-6, rtol=0
    )
    moved = result.to("cpu")
    assert torch.equal(moved.scores, result.scores)


def test_accepts_an_attributor_instance(interaction_game, games, method_config):
    from tokenshape.attribution import make_attributor

    response = [5, 6, 7, 8]
    game = interaction_game(13, response)
    by_name = _attribute(game, games, [(PROMPT, response)], method_config)
    ids, attention, response_mask = games.make_batch([(PROMPT, response)])
    by_instance = tokenshape.attribute(
        game,
        ids,
        attention,
        response_mask,
        method=make_attributor(method_config.name),
        budget=method_config.budget,
        masking=games.MASK_ID,
    )
    torch.testing.assert_close(by_instance.unit_scores[0], by_name.unit_scores[0], atol=0, rtol=0)


def test_attribute_game_without_a_budget_takes_the_default(interaction_game, games, method_config):
    from tokenshape.attribution import make_attributor
    from tokenshape.evaluation import ChunkedEvaluator
    from tokenshape.game import RewardGame
    from tokenshape.masking import Masking
    from tokenshape.units import unit_index

    response = list(range(5, 15))
    game = interaction_game(14, response)
    ids, attention, response_mask = games.make_batch([(PROMPT, response)])
    index, n_units = unit_index("token", ids, response_mask)
    reward_game = RewardGame(
        ids,
        attention,
        index,
        n_units,
        Masking(remove=False, token_id=games.MASK_ID),
        ChunkedEvaluator(game, max_rows=64),
    )
    attributor = make_attributor(method_config.name)
    direct = attributor.attribute_game(reward_game, budget=None, seed=0)
    through_api = tokenshape.attribute(
        game, ids, attention, response_mask, method=method_config.name, masking=games.MASK_ID
    )
    torch.testing.assert_close(direct.unit_scores[0], through_api.unit_scores[0], atol=0, rtol=0)
    if attributor.default_budget is not None:
        assert int(direct.rows[0]) == attributor.default_budget


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_equals_cuda(tiny_bert, minilm_tokenizer, method_config):
    import copy

    from tokenshape.reward import SequenceClassifierReward

    encoded = minilm_tokenizer(
        ["great film", "a dull and far too long film"], padding=True, return_tensors="pt"
    )
    ids, attention = encoded["input_ids"], encoded["attention_mask"]
    special = (ids == minilm_tokenizer.cls_token_id) | (ids == minilm_tokenizer.sep_token_id)
    response_mask = attention.bool() & ~special
    cpu_reward = SequenceClassifierReward(tiny_bert, minilm_tokenizer, label=1, minus_label=0)
    cuda_model = copy.deepcopy(tiny_bert).to("cuda")
    cuda_reward = SequenceClassifierReward(cuda_model, minilm_tokenizer, label=1, minus_label=0)
    on_cpu = tokenshape.attribute(
        cpu_reward, ids, attention, response_mask, method=method_config.name, budget=32
    )
    on_cuda = tokenshape.attribute(
        cuda_reward, ids, attention, response_mask, method=method_config.name, budget=32
    )
    assert on_cuda.scores.device.type == "cuda"
    assert on_cuda.base_value.device.type == "cuda"
    torch.testing.assert_close(on_cuda.scores.cpu(), on_cpu.scores, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(on_cuda.full_value.cpu(), on_cpu.full_value, atol=1e-4, rtol=1e-3)
    assert torch.equal(on_cuda.rows.cpu(), on_cpu.rows)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_inputs_with_cpu_units(interaction_game, games, method_config):
    response = [5, 6, 7, 8, 9, 10]
    game = interaction_game(15, response)
    ids, attention, response_mask = games.make_batch([(PROMPT, response)])
    turns = torch.full_like(ids, -1)
    turns[response_mask] = torch.tensor([0, 0, 1, 1, 1, 2])
    on_cpu = _attribute(game, games, [(PROMPT, response)], method_config, unit=turns)
    on_cuda = tokenshape.attribute(
        game,
        ids.cuda(),
        attention.cuda(),
        response_mask.cuda(),
        method=method_config.name,
        budget=method_config.budget,
        masking=games.MASK_ID,
        unit=turns,
    )
    assert on_cuda.scores.device.type == "cuda"
    torch.testing.assert_close(on_cuda.unit_scores[0].cpu(), on_cpu.unit_scores[0])
