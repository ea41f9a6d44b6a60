"""Tiny randomly initialised models built around real tokenizers, for tests and quick runs.

They exercise real tokenization (byte-level BPE for SmolLM2, WordPiece for MiniLM) at a fraction of
the cost of the real models. Initialisation draws from a private random state seeded by ``seed``,
so building a model never changes the caller's torch random state.
"""

from __future__ import annotations

from typing import Any

import torch

from tokenshape.errors import InvalidArgumentError
from tokenshape.models.data import REVIEW_LABELS
from tokenshape.models.offline import minilm_model_path

__all__ = [
    "minilm_tokenizer",
    "tiny_bert_reward_model",
    "tiny_llama_policy",
    "tiny_llama_reward_model",
]

_HEAD_DIM = 16
_MAX_POSITIONS = 1024


def minilm_tokenizer() -> Any:
    """The real all-MiniLM-L6-v2 tokenizer (uncased WordPiece, 30,522 ids, pad ``[PAD]`` = 0)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_model_path(), local_files_only=True)


def _check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidArgumentError("seed", seed, "an int >= 0")


def _pad_id(tokenizer: Any) -> int:
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    if pad_id is None:
        raise InvalidArgumentError("tokenizer", tokenizer, "a tokenizer with a pad or eos token")
    return pad_id


def _llama_config(tokenizer: Any, *, hidden_size: int, layers: int, num_labels: int = 1) -> Any:
    from transformers import LlamaConfig

    if (
        isinstance(hidden_size, bool)
        or not isinstance(hidden_size, int)
        or hidden_size < 1
        or hidden_size % _HEAD_DIM
    ):
        raise InvalidArgumentError(
            "hidden_size", hidden_size, f"a positive multiple of {_HEAD_DIM}"
        )
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise InvalidArgumentError("layers", layers, "an int >= 1")
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=hidden_size // _HEAD_DIM,
        num_key_value_heads=hidden_size // _HEAD_DIM,
        max_position_embeddings=_MAX_POSITIONS,
        tie_word_embeddings=True,
        pad_token_id=_pad_id(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        num_labels=num_labels,
    )


def _seeded(build: Any, config: Any, seed: int) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(config)
    model.eval()
    return model


def tiny_llama_policy(
    tokenizer: Any, *, seed: int = 0, hidden_size: int = 64, layers: int = 2
) -> Any:
    """A random ``LlamaForCausalLM`` whose vocabulary is ``tokenizer``'s.

    Maps ``input_ids`` (B x L) to ``logits`` (B x L x len(tokenizer)); tied embeddings, pad, bos and
    eos ids taken from the tokenizer (pad falls back to eos).

    Args:
        tokenizer: a Hugging Face tokenizer, usually
            :func:`tokenshape.models.policy.smollm2_tokenizer`.
        seed: seeds the initialisation; the same seed gives the same weights.
        hidden_size: width, a positive multiple of 16 (one attention head per 16).
        layers: decoder layers.

    Returns:
        The model, in eval mode.
    """
    from transformers import LlamaForCausalLM

    _check_seed(seed)
    config = _llama_config(tokenizer, hidden_size=hidden_size, layers=layers)
    return _seeded(LlamaForCausalLM, config, seed)


def tiny_llama_reward_model(tokenizer: Any, *, seed: int = 0) -> Any:
    """A random ``LlamaForSequenceClassification`` with one output: a last-token reward model.

    Maps ``input_ids`` (B x L) to ``logits`` (B x 1), read at each row's last token that is not
    ``config.pad_token_id``. With the SmolLM2 tokenizer pad is eos, so a row ending in eos is scored
    at the token before its trailing eos tokens.

    Args:
        tokenizer: a Hugging Face tokenizer with a pad or eos token.
        seed: seeds the initialisation.

    Returns:
        The model (hidden size 64, 2 layers), in eval mode.
    """
    from transformers import LlamaForSequenceClassification

    _check_seed(seed)
    config = _llama_config(tokenizer, hidden_size=64, layers=2, num_labels=1)
    return _seeded(LlamaForSequenceClassification, config, seed)


def tiny_bert_reward_model(tokenizer: Any, *, seed: int = 0) -> Any:
    """A random ``BertForSequenceClassification`` shaped like the sentiment reward model.

    Two labels, ``id2label = {0: "negative", 1: "positive"}`` as in
    :mod:`tokenshape.models.sentiment`; maps ``input_ids`` (B x L) to ``logits`` (B x 2).

    Args:
        tokenizer: a WordPiece tokenizer, usually :func:`minilm_tokenizer`.
        seed: seeds the initialisation.

    Returns:
        The model (hidden size 32, 2 layers), in eval mode.
    """
    from transformers import BertConfig, BertForSequenceClassification

    _check_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=512,
        pad_token_id=_pad_id(tokenizer),
        num_labels=len(REVIEW_LABELS),
        id2label=dict(enumerate(REVIEW_LABELS)),
        label2id={label: i for i, label in enumerate(REVIEW_LABELS)},
    )
    return _seeded(BertForSequenceClassification, config, seed)
