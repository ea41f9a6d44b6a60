"""The SmolLM2 policy: its tokenizer, the fp32 conversion and the cache."""

from __future__ import annotations

import json

import pytest
import torch

from tokenshape.errors import MissingModelError
from tokenshape.models import policy
from tokenshape.models.offline import SMOLLM2_GGUF_FILE, smollm2_folder
from tokenshape.models.policy import (
    build_policy,
    ensure_policy,
    load_policy,
    policy_path,
    smollm2_tokenizer,
)


@pytest.fixture(scope="module")
def tokenizer():
    return smollm2_tokenizer()


def test_tokenizer_special_tokens(tokenizer):
    assert tokenizer.is_fast
    assert len(tokenizer) == 49152
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token_id == 2
    assert tokenizer.bos_token == "<|im_start|>"
    assert tokenizer.unk_token == "<|endoftext|>"
    assert tokenizer.mask_token is None


def test_tokenizer_adds_no_special_tokens_and_gives_offsets(tokenizer):
    text = "The film was great."
    encoded = tokenizer(text, return_offsets_mapping=True)
    assert tokenizer.decode(encoded["input_ids"]) == text
    pieces = [text[start:end] for start, end in encoded["offset_mapping"]]
    assert "".join(pieces) == text


def test_tokenizer_has_a_chat_template(tokenizer):
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_each_call_gives_an_independent_tokenizer(tokenizer):
    other = smollm2_tokenizer()
    other.padding_side = "left" if tokenizer.padding_side == "right" else "right"
    assert smollm2_tokenizer().padding_side == tokenizer.padding_side


def test_tokenizer_is_read_from_gguf_once_then_cached(monkeypatch, tmp_path, tokenizer):
    monkeypatch.setenv("TOKENSHAPE_CACHE", str(tmp_path))
    reads = []

    def gguf_tokenizer():
        reads.append(1)
        return tokenizer

    monkeypatch.setattr(policy, "_gguf_tokenizer", gguf_tokenizer)
    first = smollm2_tokenizer()
    second = smollm2_tokenizer()
    assert reads == [1]
    assert (tmp_path / "smollm2-tokenizer" / "tokenizer_config.json").is_file()
    text = "Hello, world! <|im_end|>"
    assert first(text)["input_ids"] == second(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert second.pad_token_id == 2 and second.chat_template == tokenizer.chat_template


def test_a_missing_policy_says_to_run_prepare(tmp_path):
    with pytest.raises(MissingModelError, match="tokenshape prepare"):
        load_policy(tmp_path / "absent")


def test_the_default_path_is_in_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENSHAPE_CACHE", str(tmp_path))
    assert policy_path() == tmp_path / "smollm2-135m-instruct"
    with pytest.raises(MissingModelError, match="tokenshape prepare"):
        load_policy()


def test_an_interrupted_build_leaves_no_folder(tmp_path):
    def stop(stage, done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_policy(output_dir=tmp_path / "policy", progress=stop)
    assert list(tmp_path.iterdir()) == []


def test_ensure_reuses_a_built_policy(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENSHAPE_CACHE", str(tmp_path))
    (tmp_path / "smollm2-135m-instruct").mkdir()
    (tmp_path / "smollm2-135m-instruct" / "config.json").write_text("{}")

    def no_build(**kwargs):
        raise AssertionError("built although cached")

    monkeypatch.setattr(policy, "build_policy", no_build)
    assert ensure_policy() == tmp_path / "smollm2-135m-instruct"


@pytest.mark.slow
def test_the_fp32_policy_matches_the_gguf_model():
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    path = ensure_policy()
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config
    model, tokenizer = load_policy(path)
    assert type(model) is LlamaForCausalLM
    assert model.dtype == torch.float32
    assert not getattr(model, "is_quantized", False)
    assert tokenizer.pad_token_id == model.config.pad_token_id == 2

    reference = AutoModelForCausalLM.from_pretrained(
        smollm2_folder(), gguf_file=SMOLLM2_GGUF_FILE, local_files_only=True
    )
    batch = tokenizer(["The movie was", "I really liked the"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        ours = model(**batch).logits
        theirs = reference(**batch).logits
    torch.testing.assert_close(ours, theirs, atol=1e-3, rtol=1e-4)
    assert ours[0, -1].argmax() == theirs[0, -1].argmax()
