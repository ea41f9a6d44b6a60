"""The attribution game on the reward-model families RLHF runs use, built tiny from configs.

* ``bert``: BERT with the real MiniLM WordPiece tokenizer (reads ``[CLS]``, absolute positions).
* ``smollm2``: a Llama classifier with the real SmolLM2 tokenizer (byte-level BPE, unk, pad = eos).
* ``llama3``: a Llama classifier with a byte-level BPE tokenizer without unk, BOS prepended,
  pad = eos (Llama-3 style).
* ``qwen2``: a Qwen2 classifier, byte-level BPE without unk or BOS, pad != eos (Qwen2-Instruct).
* ``qwen2_pad_eos``: the same with pad = eos (Qwen2 base).
* ``gpt2``: a GPT-2 classifier (absolute positions), byte-level BPE with pad = unk = eos = bos.

Llama-3's, Qwen2's and GPT-2's own tokenizers are not available offline: their stand-ins are one
byte-level BPE (GPT-2 pre-tokenisation and byte alphabet, so no unknown token) trained here on a
few sentences, wrapped with each family's special tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

import tokenshape
from tokenshape.encoding import encode_pairs
from tokenshape.errors import InvalidArgumentError
from tokenshape.masking import resolve_masking
from tokenshape.reward import SequenceClassifierReward

CORPUS = [
    "Great film overall, loved it! The movie was long and dull.",
    "我喜欢这部电影，非常好看。演员也很棒！",
    "Tab\there and spaces, e.g. U.S.A. is big 😀 👍🏽 ok.",
    "Review: what a great movie, bad ending though.",
]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|end_of_text|>"]


@pytest.fixture(scope="module")
def byte_bpe():
    """A byte-level BPE model trained on :data:`CORPUS` (its ``tokenizers`` JSON)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=SPECIALS,
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 10, trainer)
    return tokenizer.to_str()


def _wrap(byte_bpe: str, *, prepend_bos: bool = False, **special):
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(byte_bpe)
    if prepend_bos:
        bos = special["bos_token"]
        backend.post_processor = processors.Sequence(
            [
                processors.ByteLevel(trim_offsets=False),
                processors.TemplateProcessing(
                    single=f"{bos} $A", special_tokens=[(bos, backend.token_to_id(bos))]
                ),
            ]
        )
    return PreTrainedTokenizerFast(tokenizer_object=backend, **special)


def _seeded(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build()
    return model.eval()


def _decoder_config(kind: str, tokenizer):
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    common = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "num_labels": 1,
    }
    if kind == "gpt2":
        return GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, **common)
    config_class = LlamaConfig if kind == "llama" else Qwen2Config
    return config_class(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        **common,
    )


def _decoder_reward(kind: str, tokenizer) -> SequenceClassifierReward:
    from transformers import (
        GPT2ForSequenceClassification,
        LlamaForSequenceClassification,
        Qwen2ForSequenceClassification,
    )

    model_class = {
        "gpt2": GPT2ForSequenceClassification,
        "llama": LlamaForSequenceClassification,
        "qwen2": Qwen2ForSequenceClassification,
    }[kind]
    config = _decoder_config(kind, tokenizer)
    model = _seeded(lambda: model_class(config))
    with torch.no_grad():  # larger head weights, so that the rewards differ visibly
        model.score.weight.normal_(generator=torch.Generator().manual_seed(1))
    return SequenceClassifierReward(model, tokenizer)


@dataclass(frozen=True)
class Family:
    name: str
    auto_token: str | None  # what masking="auto" picks (None: it raises)
    relative_positions: bool  # left and right padding give the same rewards


FAMILIES = [
    Family("bert", "mask", relative_positions=False),
    Family("smollm2", "unk", relative_positions=True),
    Family("llama3", "bos", relative_positions=True),
    Family("qwen2", "eos", relative_positions=True),
    Family("qwen2_pad_eos", "special", relative_positions=True),
    Family("gpt2", None, relative_positions=False),
]


@pytest.fixture(scope="module")
def rewards(byte_bpe, minilm_tokenizer):
    """Family name -> ``() -> SequenceClassifierReward`` (built once, on first use)."""
    from tokenshape.models.policy import smollm2_tokenizer
    from tokenshape.models.tiny import tiny_bert_reward_model, tiny_llama_reward_model

    def bert():
        model = tiny_bert_reward_model(minilm_tokenizer)
        return SequenceClassifierReward(model, minilm_tokenizer, label=1, minus_label=0)

    def smollm2():
        tokenizer = smollm2_tokenizer()
        return SequenceClassifierReward(tiny_llama_reward_model(tokenizer), tokenizer)

    def llama3():
        tokenizer = _wrap(
            byte_bpe,
            prepend_bos=True,
            bos_token="<|begin_of_text|>",
            eos_token="<|end_of_text|>",
            pad_token="<|end_of_text|>",
        )
        return _decoder_reward("llama", tokenizer)

    def qwen2():
        tokenizer = _wrap(
            byte_bpe,
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        )
        return _decoder_reward("qwen2", tokenizer)

    def qwen2_pad_eos():
        tokenizer = _wrap(
            byte_bpe,
            eos_token="<|endoftext|>",
            pad_token="<|endoftext|>",
            additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        )
        return _decoder_reward("qwen2", tokenizer)

    def gpt2():
        token = "<|endoftext|>"
        tokenizer = _wrap(
            byte_bpe, bos_token=token, eos_token=token, unk_token=token, pad_token=token
        )
        return _decoder_reward("gpt2", tokenizer)

    builders = {f.__name__: f for f in (bert, smollm2, llama3, qwen2, qwen2_pad_eos, gpt2)}
    built: dict[str, SequenceClassifierReward] = {}

    def get(name: str) -> SequenceClassifierReward:
        if name not in built:
            built[name] = builders[name]()
        return built[name]

    return get


PROMPTS = ["Review:", "Film:"]
RESPONSES = [" great movie, loved", " dull 😀 我"]


def _encode(reward, *, padding_side: str = "right", prompts=PROMPTS, responses=RESPONSES):
    tokenizer = reward.tokenizer
    previous = tokenizer.padding_side
    tokenizer.padding_side = padding_side
    try:
        return encode_pairs(tokenizer, prompts, responses)
    finally:
        tokenizer.padding_side = previous


def _masking(family: Family) -> str:
    return "auto" if family.auto_token is not None else "remove"


def _attribute(reward, batch, **options):
    options.setdefault("method", "occlusion")  # M + 2 rows: v(all), v(empty), each unit alone off
    return tokenshape.attribute(
        reward, batch.input_ids, batch.attention_mask, batch.response_mask, **options
    )


@pytest.fixture(params=FAMILIES, ids=[f.name for f in FAMILIES])
def family(request) -> Family:
    return request.param


def test_auto_masking_per_family(family, rewards):
    reward = rewards(family.name)
    padding = reward.padding_token_ids
    if family.auto_token is None:
        with pytest.raises(InvalidArgumentError, match=r"masking='auto'.*'remove'"):
            resolve_masking("auto", reward.tokenizer, padding_ids=padding)
        return
    masking = resolve_masking("auto", reward.tokenizer, padding_ids=padding)
    assert masking.token_name == family.auto_token
    assert masking.token_id not in padding and masking.token_id != reward.tokenizer.pad_token_id


def test_scoring_position_is_the_models_own(family, rewards):
    # The position every path reads equals the one the model scores: the score head applied to
    # the final hidden state there gives the model's logits. Rows end with eos too (pad = eos).
    reward = rewards(family.name)
    if reward.scoring_position == "first":
        assert reward.scoring_positions(torch.tensor([[5, 6, 7]])).tolist() == [0]
        return
    tokenizer = reward.tokenizer
    eos = tokenizer.eos_token or ""
    for padding_side in ("right", "left"):
        batch = _encode(
            reward, padding_side=padding_side, responses=[RESPONSES[0] + eos, RESPONSES[1]]
        )
        with torch.inference_mode():
            out = reward.model(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                output_hidden_states=True,
            )
        positions = reward.scoring_positions(batch.input_ids)
        hidden = out.hidden_states[-1][torch.arange(2), positions]
        torch.testing.assert_close(reward.model.score(hidden), out.logits)


def test_auto_masking_never_moves_the_scoring_position(family, rewards):
    reward = rewards(family.name)
    if family.auto_token is None:
        pytest.skip("masking='auto' raises for this family")
    batch = _encode(reward)
    expected = reward.scoring_positions(batch.input_ids)
    seen = []

    class Recording:
        tokenizer = reward.tokenizer
        padding_token_ids = reward.padding_token_ids

        def __call__(self, input_ids, attention_mask):
            seen.append(input_ids)
            return reward(input_ids, attention_mask)

    _attribute(Recording(), batch, method="exact", max_rows=64)  # every coalition
    rows = torch.cat(seen)
    # exact evaluates each sequence's 2^M coalitions, one sequence after the other
    counts = [2 ** int(m) for m in batch.response_mask.sum(1)]
    owners = torch.arange(2).repeat_interleave(torch.tensor(counts))
    assert torch.equal(reward.scoring_positions(rows), expected[owners])


def test_batched_equals_per_example(family, rewards):
    reward = rewards(family.name)
    masking = _masking(family)
    batch = _encode(reward)
    together = _attribute(reward, batch, masking=masking)
    for row in range(2):
        alone = _encode(reward, prompts=PROMPTS[row : row + 1], responses=RESPONSES[row : row + 1])
        single = _attribute(reward, alone, masking=masking)
        torch.testing.assert_close(
            single.full_value[0], together.full_value[row], atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            single.base_value[0], together.base_value[row], atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            single.unit_scores[0], together.unit_scores[row], atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_chunking_does_not_change_values(family, rewards, padding_side):
    # Removal re-packs rows, the one masking whose rows could depend on their chunk (a
    # replacement keeps every row's layout).
    reward = rewards(family.name)
    batch = _encode(reward, padding_side=padding_side)
    small, large = (_attribute(reward, batch, masking="remove", max_rows=r) for r in (3, 64))
    torch.testing.assert_close(small.base_value, large.base_value, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(small.full_value, large.full_value, atol=1e-5, rtol=1e-5)
    for a, b in zip(small.unit_scores, large.unit_scores):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # v(all) is the model's own reward of the row in the batch.
    with torch.inference_mode():
        own = reward(batch.input_ids, batch.attention_mask).double()
    torch.testing.assert_close(large.full_value, own, atol=1e-5, rtol=1e-5)


def test_left_and_right_padding_agree(family, rewards):
    reward = rewards(family.name)
    if not family.relative_positions:
        pytest.skip("absolute positions: left padding shifts them, the model's reward changes")
    for masking in dict.fromkeys([_masking(family), "remove"]):
        right = _attribute(reward, _encode(reward, padding_side="right"), masking=masking)
        left = _attribute(reward, _encode(reward, padding_side="left"), masking=masking)
        torch.testing.assert_close(left.full_value, right.full_value, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(left.base_value, right.base_value, atol=1e-5, rtol=1e-5)
        for a, b in zip(left.unit_scores, right.unit_scores):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_response_starts_at_the_token_holding_its_first_character(family, rewards):
    # "Review: " + "Great film": a byte-level "ĠGreat" starts in the prompt's space.
    reward = rewards(family.name)
    batch = encode_pairs(reward.tokenizer, ["Review: "], ["Great film overall."])
    tokens = batch.input_ids[0][batch.response_mask[0]].tolist()
    text = reward.tokenizer.decode(tokens).strip().lower()
    assert text == "great film overall."


def test_attention_reads_the_scoring_position_when_pad_is_eos(rewards):
    # SmolLM2: pad = eos = <|im_end|>; the model scores the token before a trailing eos.
    reward = rewards("smollm2")
    ids = reward.tokenizer("Review: great movie<|im_end|>", return_tensors="pt")["input_ids"]
    assert ids[0, -1] == reward.tokenizer.eos_token_id == reward.pad_token_id
    mask = torch.ones_like(ids)
    assert reward.scoring_positions(ids).tolist() == [ids.shape[1] - 2]
    value, attention = reward.scoring_attention(ids, mask)
    previous = reward.model.config._attn_implementation
    reward.model.set_attn_implementation("eager")
    with torch.inference_mode():
        out = reward.model(input_ids=ids, attention_mask=mask, output_attentions=True)
    reward.model.set_attn_implementation(previous)
    expected = out.attentions[-1].float().mean(dim=1)[0, ids.shape[1] - 2]
    torch.testing.assert_close(attention[0], expected)
    torch.testing.assert_close(value, out.logits[:, 0].float())
