"""ShapedGRPOTrainer trained for a few steps on a tiny random Llama with the real SmolLM2 tokenizer
and a tiny BERT reward model, and ShapedReward inside GRPO, RLOO and online DPO."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from trl import GRPOTrainer

from tokenshape.errors import InvalidArgumentError
from tokenshape.integrations.trl import ShapedGRPOTrainer, ShapedReward, TokenShapeConfig
from tokenshape.shaping import ShapingParams

from .conftest import PROMPTS


def record(obj, name):
    """Replace ``obj.name`` by a wrapper that records ``(args, result)`` of every call."""
    calls = []
    original = getattr(obj, name)

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append((args, result))
        return result

    setattr(obj, name, wrapper)
    return calls


def shaped_trainer(make_policy, policy_tokenizer, reward, args, dataset, **config):
    return ShapedGRPOTrainer(
        model=make_policy(),
        reward_funcs=reward if isinstance(reward, list) else [reward],
        args=args,
        train_dataset=dataset,
        processing_class=policy_tokenizer,
        shaping_config=TokenShapeConfig(**config),
    )


@pytest.mark.parametrize(
    ("mode", "conversational"),
    [("weight", False), ("hybrid", True)],
    ids=["weight", "hybrid-turns-two-rewards"],
)
def test_training_changes_every_policy_parameter(
    mode, conversational, make_policy, policy_tokenizer, tiny_bert_reward, grpo_config
):
    prompts = [[{"role": "user", "content": p}] for p in PROMPTS] if conversational else PROMPTS
    reward = ShapedReward(
        tiny_bert_reward, ShapingParams({"kernel_shap": 0.5, "sparse": 0.5}), budget=8
    )

    def length(completions, **kwargs):  # a second, sparse reward
        return [float(len(c[0]["content"])) / 100 for c in completions]

    trainer = shaped_trainer(
        make_policy,
        policy_tokenizer,
        [length, reward] if conversational else reward,
        grpo_config(loss_type="dapo"),
        Dataset.from_dict({"prompt": prompts}),
        mode=mode,
        unit="turn" if conversational else "token",
    )
    generated = record(trainer, "_generate_and_score_completions")
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()

    for name, parameter in trainer.model.named_parameters():
        assert not torch.equal(parameter, before[name]), f"{name} did not change"
    logs = trainer.state.log_history[0]
    for key in ("tokenshape/advantages/std", "tokenshape/kernel_shap/rows_per_sequence"):
        assert key in logs
    for _, output in generated:
        advantages, mask = output["advantages"], output["completion_mask"].bool()
        assert advantages.shape == output["completion_ids"].shape
        assert bool((advantages[~mask] == 0).all())
        if conversational:  # one turn per completion: its tokens share one advantage
            for row in range(advantages.shape[0]):
                values = advantages[row][mask[row]]
                assert bool((values == values[0]).all())
        else:
            assert any(len(set(row[m].tolist())) > 1 for row, m in zip(advantages, mask))


@pytest.mark.parametrize(
    ("mode", "level"), [("weight", "token"), ("reward_to_go", "token"), ("hybrid", "sequence")]
)
def test_sparse_shaping_gives_vanilla_grpo_losses_step_for_step(
    mode, level, make_policy, policy_tokenizer, tiny_bert_reward, grpo_config, prompt_dataset
):
    reward = ShapedReward(tiny_bert_reward, ShapingParams({"sparse": 1.0}))
    args = {"max_steps": 3, "importance_sampling_level": level}
    vanilla = GRPOTrainer(
        model=make_policy(),
        reward_funcs=[reward],
        args=grpo_config(**args),
        train_dataset=prompt_dataset,
        processing_class=policy_tokenizer,
    )
    vanilla.train()
    shaped = shaped_trainer(
        make_policy, policy_tokenizer, reward, grpo_config(**args), prompt_dataset, mode=mode
    )
    shaped.train()

    def history(trainer, key):
        return [log[key] for log in trainer.state.log_history if "grad_norm" in log]

    assert len(history(vanilla, "loss")) == 3
    assert all(norm > 0 for norm in history(vanilla, "grad_norm"))
    for key in ("loss", "grad_norm"):
        assert history(shaped, key) == history(vanilla, key)
    if level == "token":  # a sequence-level ratio may round differently (see the trainer's doc)
        for (name, p), q in zip(vanilla.model.named_parameters(), shaped.model.parameters()):
            assert torch.equal(p, q), name


def test_each_token_advantage_reaches_the_loss(
    make_policy, policy_tokenizer, tiny_bert_reward, grpo_config, prompt_dataset
):
    reward = ShapedReward(tiny_bert_reward, ShapingParams({"occlusion": 0.5, "sparse": 0.5}))
    trainer = shaped_trainer(
        make_policy, policy_tokenizer, reward, grpo_config(), prompt_dataset, mode="weight"
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by train() otherwise
    inputs = trainer._generate_and_score_completions(
        [{"prompt": prompt} for prompt in PROMPTS for _ in range(2)]
    )
    loss = trainer._compute_loss(trainer.model, inputs)
    mask = inputs["completion_mask"].bool()
    for row, column in mask.nonzero()[[0, -1]].tolist():
        changed = dict(inputs, advantages=inputs["advantages"].clone())
        changed["advantages"][row, column] += 1.0
        assert trainer._compute_loss(trainer.model, changed) != loss


def test_rows_stay_aligned_through_shuffling_accumulation_padding_and_truncation(
    make_policy, policy_tokenizer, tiny_bert_reward, grpo_config
):
    # With these prompts the tiny policy ends some completions early and runs others to the limit.
    prompt_dataset = Dataset.from_dict({"prompt": ["This film is", "Honestly the"]})
    reward = ShapedReward(tiny_bert_reward, ShapingParams({"occlusion": 0.5, "sparse": 0.5}))
    args = grpo_config(
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        pad_to_multiple_of=16,
        mask_truncated_completions=True,
        max_steps=1,
    )
    trainer = shaped_trainer(make_policy, policy_tokenizer, reward, args, prompt_dataset)
    generated = record(trainer, "_generate_and_score_completions")
    sequence = record(trainer, "_token_advantages")
    micro_batches = record(trainer, "_compute_loss")
    trainer.train()

    ((_, output),) = generated
    ((sequence_args, _),) = sequence
    advantages, ids = output["advantages"], output["completion_ids"]
    mask = output["completion_mask"].bool()
    assert ids.shape[1] % 16 == 0 and ids.shape[1] > args.max_completion_length
    lengths = reward.last.completion_mask.sum(dim=1)
    truncated = ~mask.any(dim=1)
    assert bool(truncated.any()) and not bool(truncated.all())
    assert bool((ids[:, -1][~truncated] != -1).all())

    # The reward's row i is the trainer's row i: rescore each row's own text.
    for row in range(ids.shape[0]):
        prompt = policy_tokenizer.decode(
            output["prompt_ids"][row][output["prompt_mask"][row].bool()], skip_special_tokens=True
        )
        completion = policy_tokenizer.decode(ids[row, : lengths[row]], skip_special_tokens=True)
        text = tiny_bert_reward.tokenizer(prompt + completion, return_tensors="pt")
        expected = tiny_bert_reward(text["input_ids"], text["attention_mask"]).double()
        torch.testing.assert_close(reward.last.scores[row : row + 1], expected)
    # Weight mode keeps each row's mean token advantage at its GRPO advantage; truncated rows
    # and padding get 0.
    assert bool((advantages[~mask] == 0).all())
    for row in (~truncated).nonzero().flatten().tolist():
        torch.testing.assert_close(
            advantages[row][mask[row]].double().mean(), sequence_args[0][row].double()
        )
    # Each shuffled micro-batch row carries the advantages of its own completion.
    seen = 0
    for (_, inputs), _loss in micro_batches:
        for row in range(inputs["completion_ids"].shape[0]):
            match = (ids == inputs["completion_ids"][row]).all(dim=1)
            match &= (output["prompt_ids"] == inputs["prompt_ids"][row]).all(dim=1)
            sources = match.nonzero().flatten().tolist()  # identical completions: several
            assert sources
            assert all(torch.equal(inputs["advantages"][row], advantages[s]) for s in sources)
            seen += 1
    assert seen == ids.shape[0] and len(micro_batches) == 2


@pytest.mark.parametrize(
    ("aggregation", "scale_rewards"),
    [
        ("sum_then_normalize", "group"),
        ("sum_then_normalize", "batch"),
        ("sum_then_normalize", "none"),
        ("normalize_then_sum", "group"),
    ],
)
def test_sparse_shaping_gives_grpo_advantages_in_every_mode(
    aggregation,
    scale_rewards,
    make_policy,
    policy_tokenizer,
    tiny_bert_reward,
    grpo_config,
    prompt_dataset,
):
    reward = ShapedReward(tiny_bert_reward, ShapingParams({"sparse": 1.0}))

    def length(completions, **kwargs):  # a second reward function, sparse by nature
        return [float(len(c)) / 10 for c in completions]

    trainer = shaped_trainer(
        make_policy,
        policy_tokenizer,
        [reward, length],
        grpo_config(scale_rewards=scale_rewards, multi_objective_aggregation=aggregation),
        prompt_dataset,
    )
    trainer.model.train()
    sequence = record(trainer, "_token_advantages")
    for mode in ("weight", "reward_to_go", "hybrid"):
        trainer.shaping_config = TokenShapeConfig(mode=mode, hybrid_coef=0.3)
        output = trainer._generate_and_score_completions(
            [{"prompt": prompt} for prompt in PROMPTS for _ in range(2)]
        )
        grpo = sequence[-1][0][0]
        mask = output["completion_mask"].bool()
        assert grpo.abs().sum() > 0
        expected = grpo.unsqueeze(1).expand_as(output["advantages"])
        assert torch.equal(output["advantages"][mask], expected[mask]), mode


class ShiftedReward:
    """A reward function plus a constant that can be changed between calls. The tiny reward
    model's scores are stretched 1000 times so that TRL's float32 rewards resolve their spread
    next to the constant."""

    def __init__(self, reward, offset=0.0):
        self.reward, self.offset = reward, offset
        self.tokenizer, self.__name__ = reward.tokenizer, "shifted"

    def __call__(self, input_ids, attention_mask):
        return 1000 * self.reward(input_ids, attention_mask) + self.offset


@pytest.mark.parametrize("mode", ["weight", "reward_to_go", "hybrid"])
def test_a_constant_added_to_the_reward_model_changes_no_token_advantage(
    mode, make_policy, policy_tokenizer, tiny_bert_reward, grpo_config, prompt_dataset
):
    shifted = ShiftedReward(tiny_bert_reward)
    reward = ShapedReward(shifted, ShapingParams({"occlusion": 0.7, "sparse": 0.3}))
    trainer = shaped_trainer(
        make_policy, policy_tokenizer, reward, grpo_config(), prompt_dataset, mode=mode
    )
    trainer.model.train()
    inputs = [{"prompt": prompt} for prompt in PROMPTS for _ in range(2)]
    outputs, scores = [], []
    for offset in (0.0, -5.0):
        shifted.offset = offset
        torch.manual_seed(0)  # the same completions for both offsets
        outputs.append(trainer._generate_and_score_completions(inputs))
        scores.append(reward.last.scores.clone())
    assert torch.equal(outputs[0]["completion_ids"], outputs[1]["completion_ids"])
    torch.testing.assert_close(scores[1], scores[0] - 5.0)
    changing = outputs[0]["advantages"][outputs[0]["completion_mask"].bool()]
    assert changing.abs().max() > 0.1
    # Equal up to TRL's float32 rewards (the offset costs them about 1e-5 of the group's spread).
    torch.testing.assert_close(
        outputs[1]["advantages"], outputs[0]["advantages"], atol=1e-3, rtol=0
    )


def test_the_tool_mask_reaches_the_reward_functions(
    make_policy, policy_tokenizer, tiny_bert_reward, grpo_config, prompt_dataset, monkeypatch
):
    received = []

    def spy(completions, tool_mask=None, **kwargs):
        received.append(tool_mask)
        return [0.0] * len(completions)

    reward = ShapedReward(tiny_bert_reward, ShapingParams({"sparse": 1.0}))
    trainer = shaped_trainer(
        make_policy, policy_tokenizer, [reward, spy], grpo_config(), prompt_dataset
    )
    ids = [policy_tokenizer(text, add_special_tokens=False)["input_ids"] for text in ("a", "b")]
    masks = [[1] * len(row) for row in ids]
    generated = ([[1]] * 2, ids, masks, ["a", "b"], None, {}, None, [])
    monkeypatch.setattr(GRPOTrainer, "_generate", lambda self, prompts: generated)
    assert trainer._generate(["p", "q"]) is generated
    trainer._calculate_rewards([{"prompt": "p"}, {"prompt": "q"}], ["p", "q"], ["a", "b"], ids)
    assert received == [masks]
    trainer._calculate_rewards([{"prompt": "p"}, {"prompt": "q"}], ["p", "q"], ["a", "b"], ids)
    assert received[-1] is None  # a mask serves the batch it came with only


def test_the_shaped_reward_must_be_found(
    make_policy, policy_tokenizer, tiny_bert_reward, grpo_config, prompt_dataset
):
    def length(completions, **kwargs):
        return [float(len(c)) for c in completions]

    for funcs, config, named in (
        ([length], {}, "reward_funcs"),
        (
            [length, ShapedReward(tiny_bert_reward, ShapingParams({"sparse": 1.0}))],
            {"reward_index": 0},
            "shaping_config.reward_index=0",
        ),
    ):
        with pytest.raises(InvalidArgumentError, match=named):
            ShapedGRPOTrainer(
                model=make_policy(),
                reward_funcs=funcs,
                args=grpo_config(),
                train_dataset=prompt_dataset,
                processing_class=policy_tokenizer,
                shaping_config=TokenShapeConfig(**config),
            )


def test_rloo_and_online_dpo_train_with_a_shaped_reward(
    make_policy, policy_tokenizer, tiny_bert_reward, prompt_dataset, tmp_path
):
    from trl import RLOOConfig, RLOOTrainer
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    reward = ShapedReward(tiny_bert_reward, ShapingParams({"attention": 0.5, "sparse": 0.5}))
    common = {"report_to": "none", "use_cpu": True, "max_steps": 1, "save_strategy": "no"}
    rloo = RLOOTrainer(
        model=make_policy(),
        reward_funcs=[reward],
        args=RLOOConfig(
            output_dir=str(tmp_path / "rloo"),
            max_completion_length=8,
            num_generations=2,
            per_device_train_batch_size=4,
            logging_steps=1,
            beta=0.0,  # a reference model would be reloaded from disk
            **common,
        ),
        train_dataset=prompt_dataset,
        processing_class=policy_tokenizer,
    )
    rloo.train()
    assert reward.last.scores.shape == (4,) and "attention" in reward.last.attributions
    assert f"rewards/{reward.__name__}/mean" in rloo.state.log_history[0]

    online_dpo = OnlineDPOTrainer(
        model=make_policy(),
        reward_funcs=[reward],
        args=OnlineDPOConfig(
            output_dir=str(tmp_path / "dpo"),
            max_new_tokens=8,
            per_device_train_batch_size=2,
            **common,
        ),
        train_dataset=prompt_dataset,
        processing_class=policy_tokenizer,
    )
    online_dpo.train()
    assert reward.last.scores.shape == (4,)  # two prompts, two completions each
    assert online_dpo.state.global_step == 1
