"""The ``tokenshape`` reward manager on hand-built verl batches: run_single -> assemble_rm_scores
-> verl's own compute_gae_advantage_return, and the invariants of the dense scores."""

from __future__ import annotations

import asyncio

import pytest
import torch
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
from verl.trainer.ppo.core_algos import compute_gae_advantage_return
from verl.trainer.ppo.reward import load_reward_manager

from tokenshape.errors import RewardFunctionError
from tokenshape.integrations.verl import TokenShapeRewardManager
from tokenshape.reward import SequenceClassifierReward

DENSE = {"weights": {"kernel_shap": 0.5, "sparse": 0.5}, "budget": 32}


def run_batch(manager, data) -> list[dict]:
    """Await ``run_single`` on every trajectory of ``data`` at once, as a reward-loop worker's
    ``compute_score_batch`` does."""

    async def run():
        return await asyncio.gather(
            *(manager.run_single(data[row : row + 1]) for row in range(len(data)))
        )

    return asyncio.run(run())


def rm_scores_of(manager, data) -> tuple[torch.Tensor, list[float]]:
    outputs = run_batch(manager, data)
    scores = [output["reward_score"] for output in outputs]
    sequence = [output["reward_extra_info"]["score"] for output in outputs]
    return type(manager).assemble_rm_scores(data, scores), sequence


class CountingShaper:
    """A CompletionShaper that records the batch size of each call."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.batch_sizes: list[int] = []

    def shape(self, prompts, completions, completion_ids, **options):
        self.batch_sizes.append(len(prompts))
        return self.inner.shape(prompts, completions, completion_ids, **options)


def valid_lengths(data) -> torch.Tensor:
    prompt_width = data.batch["prompts"].size(1)
    return data.batch["attention_mask"][:, prompt_width:].sum(dim=1)


@pytest.fixture(scope="module")
def dense_manager(trainer_config, policy_tokenizer):
    return load_reward_manager(trainer_config(DENSE), policy_tokenizer)


@pytest.fixture(scope="module")
def sparse_manager(trainer_config, policy_tokenizer):
    return load_reward_manager(trainer_config({"weights": {"sparse": 1.0}}), policy_tokenizer)


def test_load_reward_manager_builds_the_tokenshape_manager(dense_manager):
    assert type(dense_manager) is TokenShapeRewardManager
    assert dense_manager.settings.budget == 32


def test_row_sums_are_the_reward_model_scores(dense_manager, make_data, texts, reward_model_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    data = make_data()
    rm_scores, sequence = rm_scores_of(dense_manager, data)
    tokenizer = AutoTokenizer.from_pretrained(reward_model_path)
    reward = SequenceClassifierReward(
        AutoModelForSequenceClassification.from_pretrained(reward_model_path),
        tokenizer,
        label=1,
        minus_label=0,
    )
    encoded = tokenizer(
        [prompt + completion for prompt, completion in zip(*texts)],
        padding=True,
        return_tensors="pt",
    )
    expected = reward(encoded["input_ids"], encoded["attention_mask"]).double()
    torch.testing.assert_close(torch.tensor(sequence, dtype=torch.float64), expected)
    torch.testing.assert_close(rm_scores.sum(dim=1).double(), expected, atol=1e-5, rtol=1e-5)


def test_scores_are_dense_and_zero_after_the_response(dense_manager, make_data):
    data = make_data()
    rm_scores, _ = rm_scores_of(dense_manager, data)
    lengths = valid_lengths(data)
    columns = torch.arange(rm_scores.size(1))
    assert rm_scores.shape == data.batch["responses"].shape
    assert rm_scores.dtype == torch.float32
    assert torch.all(rm_scores[columns >= lengths[:, None]] == 0)
    inside = columns < lengths[:, None] - 1
    # Half the weight is on the explained tokens: the tokens before the last carry rewards.
    assert (rm_scores[inside] != 0).sum() > inside.sum() // 2


def test_sparse_weights_give_verls_default_assembly(sparse_manager, make_data):
    data = make_data()
    rm_scores, sequence = rm_scores_of(sparse_manager, data)
    default = RewardManagerBase.assemble_rm_scores(data, sequence)
    assert torch.equal(rm_scores, default)


def test_padding_and_left_padded_prompts_leave_the_rewards_unchanged(dense_manager, make_data):
    narrow, _ = rm_scores_of(dense_manager, make_data(prompt_width=6, response_width=12))
    wide, _ = rm_scores_of(dense_manager, make_data(prompt_width=20, response_width=30))
    assert torch.equal(wide[:, :12], narrow)
    assert torch.all(wide[:, 12:] == 0)


def test_responses_cut_at_the_maximum_length(dense_manager, make_data):
    data = make_data(response_width=4, eos=False)
    assert torch.all(valid_lengths(data) == torch.tensor([4, 4, 3, 1]))
    rm_scores, sequence = rm_scores_of(dense_manager, data)
    torch.testing.assert_close(
        rm_scores.sum(dim=1).double(), torch.tensor(sequence, dtype=torch.float64)
    )
    assert torch.all(rm_scores[:2, :-1] != 0)


def test_a_response_without_text_is_scored_by_the_reward_model_on_its_last_token(
    dense_manager, make_data, reward_model_path
):
    # An empty response (only the end-of-sequence token) has no players: the reward model scores
    # the prompt alone and the whole score goes to the response's last valid token.
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    data = make_data(["The movie was", "A"], ["", " ok"])
    rm_scores, sequence = rm_scores_of(dense_manager, data)
    assert valid_lengths(data).tolist() == [1, 2]
    tokenizer = AutoTokenizer.from_pretrained(reward_model_path)
    reward = SequenceClassifierReward(
        AutoModelForSequenceClassification.from_pretrained(reward_model_path),
        tokenizer,
        label=1,
        minus_label=0,
    )
    encoded = tokenizer(["The movie was"], return_tensors="pt")
    alone = float(reward(encoded["input_ids"], encoded["attention_mask"]))
    assert sequence[0] == pytest.approx(alone, abs=1e-6)
    assert rm_scores[0, 0].item() == pytest.approx(alone, abs=1e-6)
    assert torch.all(rm_scores[0, 1:] == 0)
    torch.testing.assert_close(rm_scores[1].sum().double(), torch.tensor(sequence[1]).double())


def test_raw_prompt_messages_are_scored(dense_manager, make_data):
    rm_scores, sequence = rm_scores_of(dense_manager, make_data(raw_prompt=True))
    torch.testing.assert_close(
        rm_scores.sum(dim=1).double(), torch.tensor(sequence, dtype=torch.float64)
    )


def test_a_batch_equals_its_trajectories_one_by_one(trainer_config, policy_tokenizer, make_data):
    settings = {"weights": {"attention": 0.5, "sparse": 0.5}}
    manager = load_reward_manager(trainer_config(settings), policy_tokenizer)
    manager.shaper = CountingShaper(manager.shaper)
    data = make_data()
    batched = run_batch(manager, data)
    assert manager.shaper.batch_sizes == [len(data)]
    for row in range(len(data)):
        alone = run_batch(manager, data[row : row + 1])[0]
        torch.testing.assert_close(
            torch.tensor(alone["reward_score"]), torch.tensor(batched[row]["reward_score"])
        )


def test_gae_consumes_the_token_rewards(dense_manager, sparse_manager, make_data):
    data = make_data()
    lengths = valid_lengths(data)
    response_mask = (torch.arange(data.batch["responses"].size(1)) < lengths[:, None]).float()
    returns = {}
    for name, manager in (("dense", dense_manager), ("sparse", sparse_manager)):
        rm_scores, sequence = rm_scores_of(manager, data)
        _, returns[name] = compute_gae_advantage_return(
            token_level_rewards=rm_scores,
            values=torch.zeros_like(rm_scores),
            response_mask=response_mask,
            gamma=torch.tensor(1.0),
            lam=torch.tensor(1.0),
        )
        # gamma = lambda = 1 and zero values: each return is the reward to go.
        to_go = rm_scores.flip(1).cumsum(1).flip(1) * response_mask
        torch.testing.assert_close(returns[name] * response_mask, to_go)
        torch.testing.assert_close(
            returns[name][:, 0].double(), torch.tensor(sequence, dtype=torch.float64)
        )
    # Sparse returns are flat along the response; dense ones change from token to token.
    flat = returns["sparse"][:, :1] * response_mask
    assert torch.allclose(returns["sparse"] * response_mask, flat)
    assert not torch.allclose(returns["dense"] * response_mask, flat)


def test_assemble_rejects_a_length_that_is_not_the_response(make_data):
    data = make_data()
    lengths = valid_lengths(data).tolist()
    scores = [[0.1] * length for length in lengths]
    scores[1] = scores[1][:-1]
    with pytest.raises(RewardFunctionError, match="row 1: .* token rewards for"):
        TokenShapeRewardManager.assemble_rm_scores(data, scores)
    with pytest.raises(RewardFunctionError, match="expected one per trajectory"):
        TokenShapeRewardManager.assemble_rm_scores(data, scores[:2])


def test_assemble_places_plain_numbers_like_verl(make_data):
    data = make_data()
    numbers = [0.5, -1.0, 2.0, 0.25]
    assert torch.equal(
        TokenShapeRewardManager.assemble_rm_scores(data, numbers),
        RewardManagerBase.assemble_rm_scores(data, numbers),
    )
