"""The held-out evaluator: the KL estimator against an exact KL, standard errors, checkpoint
steps, and interpolation at a KL budget."""

from __future__ import annotations

import math

import pytest
import torch

from tokenshape.errors import InvalidArgumentError
from tokenshape.experiments.checkpoints import (
    Checkpoint,
    HeldOutEvaluator,
    _mean_and_sem,
    checkpoint_steps,
    reward_at_kl,
)


def test_checkpoint_steps_are_even_and_end_at_the_last_step():
    assert checkpoint_steps(50, 5) == [10, 20, 30, 40, 50]
    assert checkpoint_steps(10, 3) == [3, 7, 10]
    assert checkpoint_steps(3, 10) == [1, 2, 3]
    assert checkpoint_steps(7, 1) == [7]


def test_mean_and_sem_treat_prompts_as_the_sampling_unit():
    values = torch.tensor([[1.0, 3.0], [5.0, 7.0], [0.0, 0.0]])
    mean, sem = _mean_and_sem(values)
    per_prompt = [2.0, 6.0, 0.0]
    sd = math.sqrt(sum((v - 8 / 3) ** 2 for v in per_prompt) / 2)
    assert mean == pytest.approx(8 / 3)
    assert sem == pytest.approx(sd / math.sqrt(3))


def _cp(step, reward, kl):
    return Checkpoint(step, 0.0, 0, 0, reward, 0.0, kl, 0.0)


def test_reward_at_kl_interpolates_along_the_non_decreasing_kl_path():
    # KL estimates 0.5, 1.5, 0.2, 3.0: the middle two pool to 0.85 with their mean reward 2.0,
    # so the path is (0, 0), (0.5, 2), (0.85, 2), (3, 9).
    path = [_cp(1, 2.0, 0.5), _cp(2, 4.0, 1.5), _cp(3, 0.0, 0.2), _cp(4, 9.0, 3.0)]
    assert reward_at_kl(0.0, path, 0.25) == (pytest.approx(1.0), True)
    assert reward_at_kl(0.0, path, 0.7) == (pytest.approx(2.0), True)
    assert reward_at_kl(0.0, path, 1.0) == (pytest.approx(2.0 + 7.0 * 0.15 / 2.15), True)
    assert reward_at_kl(0.0, path, 10.0) == (9.0, False)
    # Negative estimates (noise around 0) are read as the start: the budget lies further on.
    early = [_cp(1, 5.0, -0.02), _cp(2, 1.0, 0.2)]
    assert reward_at_kl(0.0, early, 0.1) == (pytest.approx(0.5), True)
    with pytest.raises(InvalidArgumentError, match="budget"):
        reward_at_kl(0.0, path, 0.0)


class _ConstantReward:
    """Scores every row 1.0; only its tokenizer matters here."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, input_ids, attention_mask):
        return torch.ones(input_ids.shape[0], dtype=torch.float64)


def test_the_kl_estimate_matches_the_exact_kl_of_one_token(minilm_tokenizer):
    """With one new token the exact KL is a sum over the vocabulary. Scaling the final norm of a
    random tiny policy sharpens its distribution to a KL of about 2 nats, spread over many
    tokens: sampling with transformers' default top_k=50 estimated 5.75 here, the policy's own
    distribution (top_k=0, top_p=1, at the temperature) 2.03 against an exact 2.03."""
    from tokenshape.models.policy import smollm2_tokenizer
    from tokenshape.models.tiny import tiny_llama_policy

    tokenizer = smollm2_tokenizer()
    start = tiny_llama_policy(tokenizer, seed=0).eval()
    policy = tiny_llama_policy(tokenizer, seed=0).eval()
    with torch.no_grad():
        policy.model.norm.weight.mul_(10.0)
    prompts = ["The film was", "I watched this movie"]
    temperature = 0.8
    evaluator = HeldOutEvaluator(
        _ConstantReward(minilm_tokenizer),
        tokenizer,
        prompts,
        samples=150,
        seed=0,
        max_new_tokens=1,
        temperature=temperature,
    )
    estimate = evaluator.evaluate(policy, start)
    exact = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            p = torch.log_softmax(policy(ids).logits[0, -1].double() / temperature, -1)
            q = torch.log_softmax(start(ids).logits[0, -1].double() / temperature, -1)
        exact.append(float((p.exp() * (p - q)).sum()))
    truth = sum(exact) / len(exact)
    assert truth > 1.0, truth
    assert abs(estimate.kl - truth) < 0.05 * truth, (estimate.kl, truth)
    assert estimate.reward_mean == 1.0 and estimate.reward_sem == 0.0
    assert [prompt for prompt, _, _ in estimate.samples] == prompts
