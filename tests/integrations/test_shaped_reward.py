"""ShapedReward as a TRL reward function: scores, dense token rewards on the policy's tokens,
conversations and turns, logging, and refusal of bad input."""

from __future__ import annotations

import pytest
import torch

from tokenshape.attribution.kernel_shap import KernelShapAttributor
from tokenshape.completions import render_for_reward
from tokenshape.errors import InvalidArgumentError, TokenShapeError
from tokenshape.integrations.trl import ShapedReward
from tokenshape.shaping import ShapingParams

PROMPTS = ["The movie was", "I think", "Overall"]
COMPLETIONS = [" really great fun!", " café ☃ was bad", " meh."]


class CountingReward:
    """Wraps a reward function and counts the rows it scores."""

    def __init__(self, reward):
        self.reward = reward
        self.tokenizer = reward.tokenizer
        self.__name__ = "counting"
        self.rows = 0

    def __call__(self, input_ids, attention_mask):
        self.rows += input_ids.shape[0]
        return self.reward(input_ids, attention_mask)


def policy_ids(tokenizer, completions, *, eos=True):
    """The policy's completion ids of each text, ending in eos when ``eos``."""
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in completions]
    return [row + [tokenizer.eos_token_id] if eos else row for row in ids]


def direct_scores(reward, prompts, completions):
    """The reward model's scores of prompt + completion, computed without ShapedReward."""
    batch = reward.tokenizer(
        [p + c for p, c in zip(prompts, completions)], padding=True, return_tensors="pt"
    )
    return reward(batch["input_ids"], batch["attention_mask"]).double()


def test_scores_are_the_reward_model_scores_and_token_rewards_sum_to_them(
    tiny_bert_reward, policy_tokenizer
):
    shaped = ShapedReward(
        tiny_bert_reward,
        ShapingParams({"kernel_shap": 0.6, "sparse": 0.4}),
        policy_tokenizer=policy_tokenizer,
        budget=16,
    )
    ids = policy_ids(policy_tokenizer, COMPLETIONS)
    scores = shaped(PROMPTS, COMPLETIONS, ids)

    assert isinstance(scores, list) and all(isinstance(s, float) for s in scores)
    torch.testing.assert_close(
        torch.tensor(scores, dtype=torch.float64),
        direct_scores(tiny_bert_reward, PROMPTS, COMPLETIONS),
    )
    last = shaped.last
    width = max(len(row) for row in ids)
    assert last.token_rewards.shape == (3, width)
    torch.testing.assert_close(last.token_rewards.sum(dim=1), last.scores)
    for row, tokens in enumerate(ids):
        assert bool((last.token_rewards[row, len(tokens) :] == 0).all())
        assert bool(last.completion_mask[row, : len(tokens)].all())
        assert not bool(last.completion_mask[row, len(tokens) :].any())
        torch.testing.assert_close(  # moving attributions onto the policy's tokens keeps sums
            last.policy_attributions["kernel_shap"][row].sum(),
            last.attributions["kernel_shap"].scores[row].double().sum(),
        )
    # The sparse part sits on the last completion token (eos), the attributions on the text.
    eos_column = torch.tensor([len(row) - 1 for row in ids])
    assert bool((last.policy_attributions["kernel_shap"][torch.arange(3), eos_column] == 0).all())


def test_sparse_only_puts_the_score_on_the_last_token_with_one_forward_per_row(
    tiny_bert_reward, policy_tokenizer
):
    counting = CountingReward(tiny_bert_reward)
    shaped = ShapedReward(
        counting,
        ShapingParams({"sparse": 1.0, "kernel_shap": 0.0}),
        policy_tokenizer=policy_tokenizer,
    )
    ids = policy_ids(policy_tokenizer, COMPLETIONS, eos=False)
    scores = shaped(PROMPTS, COMPLETIONS, ids)

    assert counting.rows == 3
    assert shaped.last.attributions == {} and shaped.last.policy_attributions == {}
    for row, tokens in enumerate(ids):
        expected = torch.zeros(shaped.last.token_rewards.shape[1], dtype=torch.float64)
        expected[len(tokens) - 1] = scores[row]
        torch.testing.assert_close(shaped.last.token_rewards[row], expected)


def test_only_the_weighted_methods_spend_rows(tiny_bert_reward, policy_tokenizer):
    counting = CountingReward(tiny_bert_reward)
    shaped = ShapedReward(
        counting,
        ShapingParams({"kernel_shap": 1.0, "lime": 0.0}),
        budget=8,
        policy_tokenizer=policy_tokenizer,
    )
    shaped(PROMPTS, COMPLETIONS, policy_ids(policy_tokenizer, COMPLETIONS))

    assert set(shaped.last.attributions) == {"kernel_shap"}
    assert counting.rows == int(shaped.last.attributions["kernel_shap"].rows.sum())
    assert bool((shaped.last.attributions["kernel_shap"].rows <= 8).all())


def test_named_signals_map_to_configured_methods(tiny_bert_reward):
    shaped = ShapedReward(
        tiny_bert_reward,
        ShapingParams({"paired_shap": 1.0}),
        methods={"paired_shap": KernelShapAttributor()},
        budget=8,
    )
    shaped(PROMPTS, COMPLETIONS)
    assert shaped.last.attributions["paired_shap"].method == "kernel_shap"
    assert shaped.last.token_rewards is None  # no completion_ids, nothing to align to


def test_log_metric_receives_seconds_rows_and_efficiency_error(tiny_bert_reward):
    logged = {}
    shaped = ShapedReward(tiny_bert_reward, ShapingParams({"kernel_shap": 1.0}), budget=12)
    shaped(PROMPTS, COMPLETIONS, log_metric=lambda name, value: logged.__setitem__(name, value))

    assert set(logged) == {
        "tokenshape/kernel_shap/seconds",
        "tokenshape/kernel_shap/rows_per_sequence",
        "tokenshape/kernel_shap/efficiency_error",
    }
    assert logged["tokenshape/kernel_shap/seconds"] > 0
    rows = shaped.last.attributions["kernel_shap"].rows.double()
    assert logged["tokenshape/kernel_shap/rows_per_sequence"] == pytest.approx(float(rows.mean()))
    assert float(rows.max()) == 12  # the longest completion spends the whole budget
    assert logged["tokenshape/kernel_shap/efficiency_error"] < 1e-6


def test_empty_completions_are_scored_by_the_reward_model(reward_tokenizer, policy_tokenizer):
    from tokenshape.reward import StringScorerReward

    def harsh(text):  # -5 for anything, +1 per "great"
        return -5.0 + text.split().count("great")

    shaped = ShapedReward(
        StringScorerReward(harsh, reward_tokenizer),
        ShapingParams({"exact": 0.5, "sparse": 0.5}),
        policy_tokenizer=policy_tokenizer,
    )
    completions = ["", "  \n", " great", " meh"]
    ids = [[policy_tokenizer.eos_token_id], *policy_ids(policy_tokenizer, completions[1:])]
    scores = shaped(["Verdict:"] * 4, completions, ids)

    assert scores == [-5.0, -5.0, -4.0, -5.0]  # the empty answers do not win their group
    last = shaped.last
    assert last.explained.tolist() == [False, False, True, True]
    torch.testing.assert_close(last.token_rewards.sum(dim=1), last.scores)
    for row in (0, 1):  # no players: the whole score on the last token
        expected = torch.zeros(last.token_rewards.shape[1], dtype=torch.float64)
        expected[len(ids[row]) - 1] = scores[row]
        torch.testing.assert_close(last.token_rewards[row], expected)
        assert bool((last.policy_attributions["exact"][row] == 0).all())


def test_empty_completions_get_the_reward_model_score_of_their_text(
    tiny_bert_reward, policy_tokenizer
):
    shaped = ShapedReward(
        tiny_bert_reward,
        ShapingParams({"kernel_shap": 1.0}),
        budget=8,
        policy_tokenizer=policy_tokenizer,
    )
    completions = ["", " good", "   "]
    ids = [[policy_tokenizer.eos_token_id], *policy_ids(policy_tokenizer, completions[1:])]
    scores = shaped(PROMPTS, completions, ids)

    torch.testing.assert_close(
        torch.tensor(scores, dtype=torch.float64),
        direct_scores(tiny_bert_reward, PROMPTS, completions),
    )
    assert shaped(PROMPTS[:2], ["", ""], [[2], [2]]) == scores[:1] + [
        float(direct_scores(tiny_bert_reward, PROMPTS[1:2], [""])[0])
    ]


def test_the_reward_model_moves_to_the_accelerate_device(reward_tokenizer, monkeypatch):
    from accelerate import PartialState

    from tokenshape.models.tiny import tiny_bert_reward_model

    model = tiny_bert_reward_model(reward_tokenizer)
    moved = []
    monkeypatch.setattr(model, "to", lambda device: moved.append(device) or model)
    ShapedReward(model, ShapingParams({"sparse": 1.0}), tokenizer=reward_tokenizer)
    assert moved == [PartialState().device]


def test_conversations_use_the_chat_template_and_only_assistant_turns_are_players(
    policy_tokenizer, reward_tokenizer
):
    prompt = [{"role": "user", "content": "Rate it"}]
    completion = [
        {"role": "assistant", "content": "assistant: great"},
        {"role": "tool", "content": "tool output"},
        {"role": "assistant", "content": "truly great"},
    ]
    text, turns = render_for_reward(prompt, completion, policy_tokenizer)
    assert "<|im_start|>tool" in text and "<|im_start|>assistant" in text
    assert [text[a:b] for a, b in turns] == ["assistant: great", "truly great"]

    joined, joined_turns = render_for_reward(prompt, completion, reward_tokenizer)
    assert joined == "Rate it\nassistant: great\ntool output\ntruly great"
    assert [joined[a:b] for a, b in joined_turns] == ["assistant: great", "truly great"]
    _, plain_turns = render_for_reward(prompt, completion, policy_tokenizer, chat_template=False)
    assert plain_turns == joined_turns


def test_turn_unit_scores_each_turn_once_and_numbers_policy_tokens_by_turn(
    tiny_bert_reward, policy_tokenizer
):
    prompts = [[{"role": "user", "content": "Rate it"}]]
    completions = [
        [
            {"role": "assistant", "content": "great fun"},
            {"role": "tool", "content": "fetched"},
            {"role": "assistant", "content": "so bad"},
        ]
    ]
    first, tool, second = (
        policy_tokenizer(text, add_special_tokens=False)["input_ids"]
        for text in ("great fun", "fetched", "so bad")
    )
    eos = policy_tokenizer.eos_token_id
    ids = [first + [eos] + tool + second + [eos]]
    tool_mask = [[1] * (len(first) + 1) + [0] * len(tool) + [1] * (len(second) + 1)]
    shaped = ShapedReward(
        tiny_bert_reward,
        ShapingParams({"exact": 1.0}),
        unit="turn",
        policy_tokenizer=policy_tokenizer,
    )
    shaped(prompts, completions, ids, tool_mask=tool_mask)

    last = shaped.last
    assert last.attributions["exact"].unit_scores[0].shape == (2,)
    expected_turns = [0] * (len(first) + 1 + len(tool)) + [1] * (len(second) + 1)
    assert last.turn_index[0].tolist() == expected_turns
    assert last.completion_mask[0].tolist() == [bool(value) for value in tool_mask[0]]
    tool_columns = slice(len(first) + 1, len(first) + 1 + len(tool))
    assert bool((last.policy_attributions["exact"][0, tool_columns] == 0).all())
    assert bool((last.token_rewards[0, tool_columns] == 0).all())
    torch.testing.assert_close(last.token_rewards.sum(dim=1), last.scores)
    with pytest.raises(TokenShapeError, match="tool_mask"):  # turns are never guessed
        shaped(prompts, completions, ids)
    with pytest.raises(TokenShapeError, match="2 assistant messages but 1 runs"):
        shaped(prompts, completions, ids, tool_mask=[[1] * len(ids[0])])


def fours(text):
    """The reward of the tool-loop reproductions: how many "4"s the text holds."""
    return float(text.count("4"))


def test_a_tool_loop_answer_gets_the_credit_not_the_tool_result(reward_tokenizer, policy_tokenizer):
    from tokenshape.reward import StringScorerReward

    # A completion as TRL's tool loop leaves it: the assistant's tool call, the tool's result "4"
    # (its tokens carry tool_mask 0), and the assistant's answer "4".
    call = {"name": "add", "arguments": {"a": 2, "b": 2}}
    completion = [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": call}],
        },
        {"role": "tool", "name": "add", "content": "4"},
        {"role": "assistant", "content": "4"},
    ]
    encode = lambda text: policy_tokenizer(text, add_special_tokens=False)["input_ids"]
    eos = policy_tokenizer.eos_token_id
    call_ids = encode('<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 2}}\n</tool_call>')
    result_ids = encode("\n<|im_start|>tool\n4<|im_end|>\n<|im_start|>assistant\n")
    answer_ids = encode("4")
    ids = [call_ids + [eos] + result_ids + answer_ids + [eos]]
    tool_mask = [[1] * (len(call_ids) + 1) + [0] * len(result_ids) + [1] * (len(answer_ids) + 1)]
    shaped = ShapedReward(
        StringScorerReward(fours, reward_tokenizer),
        ShapingParams({"exact": 1.0}),
        policy_tokenizer=policy_tokenizer,
    )
    prompt = [{"role": "user", "content": "What is two plus two?"}]
    assert shaped([prompt], [completion], ids, tool_mask=tool_mask) == [2.0]

    answer = len(call_ids) + 1 + len(result_ids)
    expected = torch.zeros(len(ids[0]), dtype=torch.float64)
    expected[answer] = 1.0  # the answer's "4" raised the count from 1 (the tool's) to 2
    torch.testing.assert_close(shaped.last.policy_attributions["exact"][0], expected)
    torch.testing.assert_close(shaped.last.token_rewards[0], 2 * expected)
    assert shaped.last.turn_index[0, answer].item() == 1
    # In weight mode the loss tokens (tool_mask 1) share the row's credit: none of it is lost
    # on the tool result.
    from tokenshape.integrations.trl.advantages import token_credit

    loss_mask = torch.tensor(tool_mask)
    credit = token_credit(shaped.last.policy_attributions, {"exact": 1.0}, loss_mask)
    assert credit[0, answer].item() == pytest.approx(int(loss_mask.sum()))
    assert credit.sum().item() == pytest.approx(int(loss_mask.sum()))


def test_content_before_a_tool_call_is_placed_before_the_call(reward_tokenizer, policy_tokenizer):
    from tokenshape.reward import StringScorerReward

    def adds(text):
        return float(text.count("add"))

    call = {"name": "add", "arguments": {"a": 2, "b": 2}}
    completion = [
        {
            "role": "assistant",
            "content": "add",
            "tool_calls": [{"type": "function", "function": call}],
        },
        {"role": "tool", "name": "add", "content": "4"},
        {"role": "assistant", "content": "4"},
    ]
    encode = lambda text: policy_tokenizer(text, add_special_tokens=False)["input_ids"]
    eos = policy_tokenizer.eos_token_id
    first = encode('add<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 2}}\n</tool_call>')
    result_ids, answer_ids = encode("\n<|im_start|>tool\n4<|im_end|>\n"), encode("4")
    ids = [first + [eos] + result_ids + answer_ids + [eos]]
    tool_mask = [[1] * (len(first) + 1) + [0] * len(result_ids) + [1] * (len(answer_ids) + 1)]
    shaped = ShapedReward(
        StringScorerReward(adds, reward_tokenizer),
        ShapingParams({"exact": 1.0}),
        policy_tokenizer=policy_tokenizer,
    )
    assert shaped(
        [[{"role": "user", "content": "Sum?"}]], [completion], ids, tool_mask=tool_mask
    ) == [1.0]
    phi = shaped.last.policy_attributions["exact"][0]
    assert phi[0].item() == 1.0 and phi[1:].abs().sum().item() == 0  # not the call's "add"


def test_reasoning_that_holds_the_answer_does_not_take_its_credit(
    reward_tokenizer, policy_tokenizer
):
    from tokenshape.reward import StringScorerReward

    completion = [{"role": "assistant", "reasoning_content": "2 plus 2 is 4.", "content": "4"}]
    encode = lambda text: policy_tokenizer(text, add_special_tokens=False)["input_ids"]
    reasoning_ids, answer_ids = encode("<think>2 plus 2 is 4.</think>"), encode("4")
    ids = [reasoning_ids + answer_ids + [policy_tokenizer.eos_token_id]]
    shaped = ShapedReward(
        StringScorerReward(fours, reward_tokenizer),
        ShapingParams({"exact": 1.0}),
        policy_tokenizer=policy_tokenizer,
    )
    assert shaped([[{"role": "user", "content": "Two plus two?"}]], [completion], ids) == [1.0]

    expected = torch.zeros(len(ids[0]), dtype=torch.float64)
    expected[len(reasoning_ids)] = 1.0
    torch.testing.assert_close(shaped.last.token_rewards[0], expected)


def trimming_tokenizer(tokenizer, template):
    """A copy of ``tokenizer`` with ``template`` as its chat template."""
    import copy

    copied = copy.deepcopy(tokenizer)
    copied.chat_template = template
    return copied


TRIM_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] | trim }}\n{% endfor %}"


def test_the_chat_template_renders_the_content_with_its_filters(reward_tokenizer):
    tokenizer = trimming_tokenizer(reward_tokenizer, TRIM_TEMPLATE)
    prompt = [{"role": "user", "content": " Rate it "}]
    text, turns = render_for_reward(
        prompt, [{"role": "assistant", "content": " \n Great movie! \n"}], tokenizer
    )
    assert text == "user: Rate it\nassistant: Great movie!\n"
    assert [text[a:b] for a, b in turns] == ["Great movie!"]
    upper = trimming_tokenizer(reward_tokenizer, TRIM_TEMPLATE.replace("trim", "upper"))
    with pytest.raises(TokenShapeError, match="chat_template=False"):
        render_for_reward(prompt, [{"role": "assistant", "content": "great"}], upper)


def test_template_text_is_tokenised_without_added_special_tokens(
    tiny_bert_reward, reward_tokenizer, policy_tokenizer
):
    from tokenshape.reward import SequenceClassifierReward

    tokenizer = trimming_tokenizer(reward_tokenizer, TRIM_TEMPLATE)
    counting = CountingReward(SequenceClassifierReward(tiny_bert_reward.model, tokenizer))
    seen = []
    original = counting.reward
    counting.reward = lambda ids, mask: seen.append(ids) or original(ids, mask)
    shaped = ShapedReward(
        counting,
        ShapingParams({"exact": 1.0}),
        tokenizer=tokenizer,
        policy_tokenizer=policy_tokenizer,
    )
    completion = [{"role": "assistant", "content": " Great movie! "}]
    ids = policy_ids(policy_tokenizer, [" Great movie! "])
    shaped([[{"role": "user", "content": "Rate it"}]], [completion], ids)

    # As TRL feeds a reward model: the template's text, no [CLS] / [SEP] added around it.
    expected = tokenizer("user: Rate it\nassistant: Great movie!\n", add_special_tokens=False)
    assert seen[0][0].tolist()[: len(expected["input_ids"])] == expected["input_ids"]
    assert tokenizer.cls_token_id not in seen[0][0].tolist()
    great = ids[0].index(policy_tokenizer(" Great", add_special_tokens=False)["input_ids"][0])
    assert shaped.last.policy_attributions["exact"][0, great] != 0


def test_a_batch_mixing_conversations_and_plain_text_is_refused(reward_tokenizer, tiny_bert_reward):
    tokenizer = trimming_tokenizer(reward_tokenizer, TRIM_TEMPLATE)
    shaped = ShapedReward(tiny_bert_reward, ShapingParams({"sparse": 1.0}), tokenizer=tokenizer)
    with pytest.raises(InvalidArgumentError, match="completions"):
        shaped(["Rate it", "Rate it"], [" fine", [{"role": "assistant", "content": "fine"}]])


def test_unknown_signal_is_named_with_the_available_ones(tiny_bert_reward):
    with pytest.raises(InvalidArgumentError, match="bogus") as error:
        ShapedReward(tiny_bert_reward, ShapingParams({"bogus": 0.5, "sparse": 0.5}))
    assert "kernel_shap" in str(error.value) and "'sparse'" in str(error.value)
    # A signal weighted 0 needs no method.
    ShapedReward(tiny_bert_reward, ShapingParams({"bogus": 0.0, "sparse": 1.0}))


@pytest.mark.parametrize(
    "weights", [{"kernel_shap": 0.7, "sparse": 0.7}, {"kernel_shap": -0.5, "sparse": 1.5}]
)
def test_weights_off_the_simplex_are_refused(weights):
    with pytest.raises(InvalidArgumentError, match="weights"):
        ShapingParams(weights)


def test_bad_arguments_are_named(tiny_bert_reward):
    with pytest.raises(InvalidArgumentError, match="params"):
        ShapedReward(tiny_bert_reward, {"sparse": 1.0})
    with pytest.raises(InvalidArgumentError, match="unit='paragraph'"):
        ShapedReward(tiny_bert_reward, ShapingParams({"sparse": 1.0}), unit="paragraph")
    shaped = ShapedReward(tiny_bert_reward, ShapingParams({"sparse": 1.0}))
    with pytest.raises(InvalidArgumentError, match="completions"):
        shaped(PROMPTS, COMPLETIONS[:2])


def test_a_slow_reward_tokenizer_is_refused_with_what_to_do(tiny_bert_reward):
    class SlowTokenizer:
        is_fast = False

        def __call__(self, text):
            return {}

    with pytest.raises(InvalidArgumentError, match="use_fast=True") as error:
        ShapedReward(tiny_bert_reward, ShapingParams({"sparse": 1.0}), tokenizer=SlowTokenizer())
    assert "tokenizer=" in str(error.value) and "offsets" in str(error.value)


def test_a_policy_tokenizer_that_does_not_decode_the_completion_is_refused(
    tiny_bert_reward, policy_tokenizer
):
    shaped = ShapedReward(
        tiny_bert_reward, ShapingParams({"sparse": 1.0}), policy_tokenizer=policy_tokenizer
    )
    wrong_ids = policy_ids(policy_tokenizer, [" something else", " x", " y"])
    with pytest.raises(TokenShapeError, match="policy_tokenizer"):
        shaped(PROMPTS, COMPLETIONS, wrong_ids)


def test_a_string_scorer_credits_the_policy_token_that_earned_the_reward(
    reward_tokenizer, policy_tokenizer
):
    from tokenshape.reward import StringScorerReward

    def good_count(text):
        return float(text.split().count("good"))

    shaped = ShapedReward(
        StringScorerReward(good_count, reward_tokenizer),
        ShapingParams({"exact": 1.0}),
        policy_tokenizer=policy_tokenizer,
    )
    completions = [" a good film", " not bad"]
    ids = policy_ids(policy_tokenizer, completions)
    assert shaped(["Verdict:", "Verdict:"], completions, ids) == [1.0, 0.0]

    good = ids[0].index(policy_tokenizer(" good", add_special_tokens=False)["input_ids"][0])
    expected = torch.zeros(len(ids[0]), dtype=torch.float64)
    expected[good] = 1.0
    torch.testing.assert_close(shaped.last.token_rewards[0, : len(ids[0])], expected)
    assert bool((shaped.last.token_rewards[1] == 0).all())
