"""The framework-neutral core: a batch of (prompt, completion) texts -> scores, attributions,
metrics and token rewards on the policy's tokens, and its settings' checks."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tokenshape.completions import CompletionShaper, CompletionShaping
from tokenshape.errors import InvalidArgumentError
from tokenshape.shaping import ShapingParams

PROMPTS = ["The film", "A movie"]
COMPLETIONS = [" was wonderful and moving", " bored me to tears"]
DENSE = ShapingParams({"kernel_shap": 0.5, "sparse": 0.5})


@pytest.fixture(scope="module")
def policy_tokenizer():
    from tokenshape.models.policy import smollm2_tokenizer

    return smollm2_tokenizer()


def policy_ids(tokenizer, completions):
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in completions]


def test_the_core_scores_explains_and_shapes_onto_the_policy_tokens(bert_reward, policy_tokenizer):
    shaper = CompletionShaper(bert_reward, CompletionShaping(params=DENSE, budget=8, seed=1))
    ids = policy_ids(policy_tokenizer, COMPLETIONS)
    batch = shaper.shape(PROMPTS, COMPLETIONS, ids, policy_tokenizer=policy_tokenizer)

    encoded = bert_reward.tokenizer(
        [p + c for p, c in zip(PROMPTS, COMPLETIONS)], padding=True, return_tensors="pt"
    )
    direct = bert_reward(encoded["input_ids"], encoded["attention_mask"]).double()
    torch.testing.assert_close(batch.scores, direct, atol=1e-6, rtol=1e-6)
    assert batch.token_rewards.shape == (2, max(len(row) for row in ids))
    torch.testing.assert_close(batch.token_rewards.sum(dim=1), batch.scores)
    assert batch.completion_mask.sum(dim=1).tolist() == [len(row) for row in ids]

    result = batch.attributions["kernel_shap"]
    assert set(batch.metrics) == {
        "kernel_shap/seconds",
        "kernel_shap/rows_per_sequence",
        "kernel_shap/efficiency_error",
    }
    assert batch.metrics["kernel_shap/rows_per_sequence"] == float(result.rows.double().mean())
    assert batch.metrics["kernel_shap/efficiency_error"] < 1e-5  # KernelSHAP is efficient


def test_without_policy_ids_only_the_reward_model_fields_are_filled(bert_reward, policy_tokenizer):
    shaper = CompletionShaper(bert_reward, CompletionShaping(params=DENSE, budget=8))
    batch = shaper.shape(PROMPTS, COMPLETIONS)
    assert batch.token_rewards is None and batch.completion_mask is None
    assert batch.explained.tolist() == [True, True]
    # The same call with the policy's ids explains the same scores.
    ids = policy_ids(policy_tokenizer, COMPLETIONS)
    aligned = shaper.shape(PROMPTS, COMPLETIONS, ids, policy_tokenizer=policy_tokenizer)
    torch.testing.assert_close(
        aligned.attributions["kernel_shap"].scores, batch.attributions["kernel_shap"].scores
    )


def test_the_trl_reward_logs_what_the_core_measured(bert_reward):
    from tokenshape.integrations.trl import ShapedReward

    shaped = ShapedReward(bert_reward, DENSE, budget=8)
    logged = {}
    scores = shaped(PROMPTS, COMPLETIONS, log_metric=logged.__setitem__)
    assert scores == shaped.last.scores.tolist()
    assert logged == {f"tokenshape/{name}": value for name, value in shaped.last.metrics.items()}
    assert "tokenshape/kernel_shap/rows_per_sequence" in logged


@pytest.mark.parametrize(
    ("settings", "name", "expected"),
    [
        ({"params": {"sparse": 1.0}}, "params", "a ShapingParams"),
        ({"params": ShapingParams({"bogus": 1.0})}, "params.weights['bogus']", "some method"),
        (
            {"params": ShapingParams({"mine": 1.0}), "methods": {"mine": "no_such"}},
            "methods['mine']",
            "a method name",
        ),
        ({"methods": {"sparse": "lime"}}, "methods", "other than 'sparse'"),
        ({"budget": 1}, "budget", "an int >= 2"),
        ({"seed": -1}, "seed", "an int >= 0"),
        ({"unit": "paragraph"}, "unit", "one of ('token', 'word', 'sentence', 'turn')"),
        ({"masking": "blank"}, "masking", "one of"),
        ({"max_rows": 0}, "max_rows", "an int >= 1"),
        ({"max_length": 1}, "max_length", "an int >= 2"),
        ({"chat_template": "yes"}, "chat_template", "True or False"),
    ],
)
def test_bad_settings_are_named_before_a_model_is_needed(settings, name, expected):
    with pytest.raises(InvalidArgumentError) as raised:
        CompletionShaping(**{"params": DENSE, **settings})
    assert raised.value.name == name
    assert expected in raised.value.expected


def test_the_settings_resolve_each_weighted_signal_to_its_method():
    params = ShapingParams({"mine": 0.5, "attention": 0.5, "lime": 0.0})
    shaping = CompletionShaping(params=params, methods={"mine": "occlusion"})
    assert dict(shaping.signals) == {"mine": "occlusion", "attention": "attention"}


def test_importing_tokenshape_does_not_import_trl():
    code = (
        "import sys, tokenshape\n"
        "assert 'trl' not in sys.modules, 'trl imported'\n"
        "from tokenshape.integrations.trl import ShapedReward\n"
        "assert tokenshape.ShapedReward is ShapedReward\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
