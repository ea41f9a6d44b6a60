"""Hand-built attributions and a small tokenizer with every kind of piece the views decode."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from tokenshape.types import TokenAttribution

#: id -> piece. Covers WordPiece (``##``), SentencePiece (``▁``) and byte-level BPE (``Ġ``, ``Ċ``)
#: markers, whitespace-only pieces and HTML special characters.
VOCAB = [
    "[PAD]", "[CLS]", "[SEP]", "the", "film", "was", "great", "<script>", "alert(1)", "</script>",
    "##ing", "Ġworld", "▁hi", "Ċ", " ", '"q"&', "dull", "long", "mess", "fun",
]  # fmt: skip


class PieceTokenizer:
    """Maps ids to :data:`VOCAB` pieces; ``decode`` undoes the byte-level markers like GPT-2."""

    pad_token_id = 0

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return [VOCAB[i] for i in ids]

    def decode(self, ids: Sequence[int], clean_up_tokenization_spaces: bool = False) -> str:
        return "".join(VOCAB[i] for i in ids).replace("Ġ", " ").replace("Ċ", "\n")


def make_attribution(
    scores: Sequence[Sequence[float]],
    input_ids: Sequence[Sequence[int]],
    response: Sequence[Sequence[bool]],
    *,
    method: str = "kernel_shap",
    tokenizer=None,
) -> TokenAttribution:
    """A ``TokenAttribution`` with the given ``B x L`` scores, ids and response mask."""
    score_tensor = torch.tensor(scores, dtype=torch.float32)
    mask = torch.tensor(response, dtype=torch.bool)
    index = torch.where(mask, mask.long().cumsum(1) - 1, -1)
    batch = score_tensor.shape[0]
    return TokenAttribution(
        scores=score_tensor,
        base_value=torch.zeros(batch),
        full_value=score_tensor.nan_to_num().sum(1),
        method=method,
        rows=torch.full((batch,), 8),
        unit_scores=[score_tensor[b][mask[b]] for b in range(batch)],
        unit_index=index,
        input_ids=torch.tensor(input_ids),
        response_mask=mask,
        tokenizer=tokenizer,
    )


@pytest.fixture
def piece_tokenizer() -> PieceTokenizer:
    return PieceTokenizer()


@pytest.fixture
def build():
    """``make_attribution``: scores, ids and response mask -> TokenAttribution."""
    return make_attribution


@pytest.fixture
def two_rows() -> TokenAttribution:
    """Two sequences: ``[CLS] the film was | great <script> alert(1) </script> [SEP]`` and
    ``[CLS] the | dull long mess [SEP] [PAD] [PAD]`` (``|`` starts the response, scores on it)."""
    ids = [[1, 3, 4, 5, 6, 7, 8, 9, 2], [1, 3, 16, 17, 18, 2, 0, 0, 0]]
    response = [
        [False, False, False, False, True, True, True, True, False],
        [False, False, True, True, True, False, False, False, False],
    ]
    scores = [[0, 0, 0, 0, 2.0, -1.0, 0.5, 0.0, 0], [0, 0, -2.0, 0.25, 1.0, 0, 0, 0, 0]]
    return make_attribution(scores, ids, response)
