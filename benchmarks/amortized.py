"""Fidelity of the amortised explainer and of the near-free signals, on the project's reward model.

The reward model is all-MiniLM-L6-v2 fine-tuned on IMDB
(:func:`tokenshape.models.sentiment.load_sentiment_reward_model`, reward = logit(positive) -
logit(negative)), one player per response token, hidden tokens replaced by [MASK].

Parts:

* **amortized**: IMDB held-out reviews (split seed 0) cut into an 8-word prompt and the next 16
  words as the response, read as [CLS] prompt response [SEP]. An :class:`AmortizedExplainer`
  (teacher kernel_shap at 64 rows, audit fraction 0.25, no fallback) explains the first
  ``warmup`` of them in calls of 8 sequences (one GRPO batch), learning as it goes; then it
  explains the next ``test`` sequences the same way (still auditing and learning). Its scores on
  those unseen sequences are compared, sequence by sequence, with kernel_shap at 256 rows (another
  seed): mean Pearson and relative L2 of what it returned, of the head's scores alone (the
  sequences it did not audit) and, on the same sequences, of kernel_shap at the explainer's
  average rows, kernel_shap at 64 rows, attention, gradient and prefix. Rows per sequence are the
  explainer's own count (see :mod:`tokenshape.amortized.explainer`).
* **exact**: the exact Shapley values (2^12 rows each) that the attribution benchmark stored for
  its fidelity part (``benchmarks/results/attribution.json``: held-out reviews cut by tokens into
  a 32-token prompt and a 12-token response) against prefix, gradient, attention, occlusion and
  kernel_shap at 64 rows. The stored values are first checked against this reward model: their
  sum must equal v(all) - v(empty) as computed now (else the part recomputes them, 4,096 rows per
  review).

Every reward-model value goes through one memo (:class:`MemoReward`), so a coalition asked for
twice is computed once; rows are counted by the methods as they ask for them, whether or not the
memo had the value. ``--memo PATH`` keeps the memo between runs (only wall time changes).

Usage::

    python benchmarks/amortized.py                      # -> benchmarks/results/amortized.{md,json}
    python benchmarks/amortized.py --quick --out /tmp/x # smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import tokenshape
from tokenshape.amortized import AmortizedExplainer, pearson, relative_l2
from tokenshape.machine import cpu_model
from tokenshape.models.data import split_reviews
from tokenshape.models.sentiment import load_sentiment_reward_model
from tokenshape.reward import ScoringStates, SequenceClassifierReward

RESULTS = Path(__file__).resolve().parent / "results"
ATTRIBUTION_RESULTS = RESULTS / "attribution.json"
#: How far the stored exact values' sum may be from v(all) - v(empty) of this model.
EXACT_CHECK_TOLERANCE = 1e-4
CALL_SEQUENCES = 8
REFERENCE_SEED = 7919


# ----------------------------------------------------------------------------------------------
# The reward, memoised


class MemoReward:
    """A :class:`SequenceClassifierReward` whose row values and hidden states are memoised by the
    row's attended token ids (a row's value depends on nothing else).

    Args:
        inner: the reward.
        memo: key -> value or states; shared between runs through ``--memo``.
    """

    def __init__(self, inner: SequenceClassifierReward, memo: dict[str, Any]) -> None:
        self.inner = inner
        self.memo = memo
        self.model = inner.model
        self.tokenizer = inner.tokenizer
        self.scoring_position = inner.scoring_position
        self.__name__ = inner.__name__
        self.computed_rows = 0

    @property
    def device(self) -> torch.device:
        return self.inner.device

    @staticmethod
    def _keys(input_ids: Tensor, attention_mask: Tensor, prefix: str) -> list[str]:
        keep = attention_mask.bool().cpu()
        return [prefix + row[k].numpy().tobytes().hex() for row, k in zip(input_ids.cpu(), keep)]

    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        keys = self._keys(input_ids, attention_mask, "v")
        missing = [i for i, key in enumerate(keys) if key not in self.memo]
        if missing:
            values = self.inner(input_ids[missing], attention_mask[missing])
            self.computed_rows += len(missing)
            for i, value in zip(missing, values.tolist()):
                self.memo[keys[i]] = value
        return torch.tensor([self.memo[key] for key in keys], dtype=torch.float64)

    def scoring_states(self, input_ids: Tensor, attention_mask: Tensor) -> ScoringStates:
        keys = self._keys(input_ids, attention_mask, "s")
        missing = [i for i, key in enumerate(keys) if key not in self.memo]
        keep = attention_mask.bool().cpu()
        if missing:
            states = self.inner.scoring_states(input_ids[missing], attention_mask[missing])
            self.computed_rows += len(missing)
            for j, i in enumerate(missing):
                self.memo[keys[i]] = {
                    "reward": float(states.reward[j]),
                    "hidden": states.hidden[j][keep[i]].cpu(),
                    "scoring_hidden": states.scoring_hidden[j].cpu(),
                    "head_scores": states.head_scores[j][keep[i]].cpu(),
                }
        batch, length = input_ids.shape
        first = self.memo[keys[0]]
        hidden = torch.zeros(batch, length, first["hidden"].shape[1])
        head_scores = torch.zeros(batch, length)
        for b, key in enumerate(keys):
            hidden[b, keep[b]] = self.memo[key]["hidden"]
            head_scores[b, keep[b]] = self.memo[key]["head_scores"]
        return ScoringStates(
            reward=torch.tensor([self.memo[key]["reward"] for key in keys]),
            hidden=hidden,
            scoring_hidden=torch.stack([self.memo[key]["scoring_hidden"] for key in keys]),
            head_scores=head_scores,
        )

    def scoring_attention(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.inner.scoring_attention(input_ids, attention_mask)

    def gradient_times_input(
        self, input_ids: Tensor, attention_mask: Tensor, *, baseline_id: int | None = None
    ) -> tuple[Tensor, Tensor]:
        return self.inner.gradient_times_input(input_ids, attention_mask, baseline_id=baseline_id)


# ----------------------------------------------------------------------------------------------
# Sequences


def word_continuations(
    tokenizer: Any, count: int, prompt_words: int, response_words: int
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids) of the first ``count`` held-out reviews with enough words."""
    out = []
    for text in split_reviews(split="heldout", seed=0)["text"].tolist():
        words = text.split()
        if len(words) < prompt_words + response_words:
            continue
        prompt = " ".join(words[:prompt_words])
        response = " ".join(words[prompt_words : prompt_words + response_words])
        out.append(
            (
                tokenizer(prompt, add_special_tokens=False)["input_ids"],
                tokenizer(response, add_special_tokens=False)["input_ids"],
            )
        )
        if len(out) == count:
            return out
    raise RuntimeError(f"only {len(out)} held-out reviews are long enough; {count} needed")


def token_continuations(
    tokenizer: Any, count: int, prompt_tokens: int, response_tokens: int
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids) cut by tokens from the first long-enough held-out reviews."""
    needed = prompt_tokens + response_tokens
    out = []
    for text in split_reviews(split="heldout", seed=0)["text"].tolist():
        ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=needed)[
            "input_ids"
        ]
        if len(ids) == needed:
            out.append((ids[:prompt_tokens], ids[prompt_tokens:]))
        if len(out) == count:
            return out
    raise RuntimeError(f"only {len(out)} held-out reviews have {needed} tokens; {count} needed")


def batch_tensors(
    tokenizer: Any, pairs: list[tuple[list[int], list[int]]]
) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded ``B x L`` input_ids, attention_mask and response_mask of [CLS] p r [SEP]."""
    rows = [[tokenizer.cls_token_id, *p, *r, tokenizer.sep_token_id] for p, r in pairs]
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    response = torch.zeros_like(ids, dtype=torch.bool)
    for b, (row, (p, r)) in enumerate(zip(rows, pairs)):
        ids[b, : len(row)] = torch.tensor(row)
        attention[b, : len(row)] = 1
        response[b, 1 + len(p) : 1 + len(p) + len(r)] = True
    return ids, attention, response


# ----------------------------------------------------------------------------------------------
# Parts


def _agreement(scores: list[Tensor], reference: list[Tensor]) -> dict[str, float]:
    pearsons = [pearson(a, b) for a, b in zip(scores, reference)]
    errors = [relative_l2(a, b) for a, b in zip(scores, reference)]
    pearsons = [p for p in pearsons if not math.isnan(p)]
    return {
        "pearson": sum(pearsons) / len(pearsons) if pearsons else math.nan,
        "relative_l2": sum(errors) / len(errors),
        "sequences": len(scores),
    }


def _explain(reward: Any, batch: tuple[Tensor, Tensor, Tensor], **options: Any) -> Any:
    return tokenshape.attribute(reward, *batch, **options)


def run_amortized(reward: MemoReward, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    tokenizer = reward.tokenizer
    pairs = word_continuations(tokenizer, args.warmup + args.test, 8, 16)
    explainer = AmortizedExplainer(
        reward,
        teacher="kernel_shap",
        teacher_budget=args.teacher_budget,
        audit_fraction=args.audit_fraction,
        seed=0,
        min_pearson=None,
    )
    curve = []
    warmup_rows = 0
    started = time.perf_counter()
    for start in range(0, args.warmup, CALL_SEQUENCES):
        batch = batch_tensors(tokenizer, pairs[start : start + CALL_SEQUENCES])
        result = explainer.attribute(*batch)
        warmup_rows += result.total_rows
        curve.append(
            {
                "sequences": start + batch[0].shape[0],
                "running_pearson": explainer.fidelity.pearson,
                "running_relative_l2": explainer.fidelity.relative_l2,
            }
        )
        log(
            f"warm-up {start + batch[0].shape[0]}/{args.warmup}: running pearson "
            f"{explainer.fidelity.pearson:.3f} ({time.perf_counter() - started:.0f} s)"
        )
    warmup_seconds = time.perf_counter() - started
    test_pairs = pairs[args.warmup :]
    returned, rows, audited = [], [], []
    for start in range(0, len(test_pairs), CALL_SEQUENCES):
        batch = batch_tensors(tokenizer, test_pairs[start : start + CALL_SEQUENCES])
        result = explainer.attribute(*batch)
        returned.extend(result.unit_scores)
        rows.extend(result.rows.tolist())
        audited.extend((result.rows > 2).tolist())
    log(f"test: {len(returned)} sequences explained, {sum(rows) / len(rows):.2f} rows each")
    everything = batch_tensors(tokenizer, test_pairs)
    reference = _explain(
        reward, everything, method="kernel_shap", budget=256, seed=REFERENCE_SEED
    ).unit_scores
    log("reference kernel_shap@256 done")
    head = [i for i, a in enumerate(audited) if not a]
    matched_budget = max(2, round(sum(rows) / len(rows)))
    comparisons = {
        "amortized (returned)": {
            **_agreement(returned, reference),
            "rows_per_sequence": sum(rows) / len(rows),
        },
        "amortized (head only)": {
            **_agreement([returned[i] for i in head], [reference[i] for i in head]),
            "rows_per_sequence": 2.0,
        },
    }
    for label, options in (
        (f"kernel_shap@{matched_budget}", {"method": "kernel_shap", "budget": matched_budget}),
        ("attention", {"method": "attention"}),
        ("gradient", {"method": "gradient"}),
        ("prefix", {"method": "prefix"}),
    ):
        result = _explain(reward, everything, seed=1, **options)
        comparisons[label] = {
            **_agreement(result.unit_scores, reference),
            "rows_per_sequence": float(result.rows.double().mean()),
        }
        log(f"{label}: {comparisons[label]}")
    return {
        "warmup_sequences": args.warmup,
        "test_sequences": len(test_pairs),
        "teacher": "kernel_shap",
        "teacher_budget": args.teacher_budget,
        "audit_fraction": args.audit_fraction,
        "reference": "kernel_shap@256",
        "mean_response_tokens": sum(len(r) for _, r in test_pairs) / len(test_pairs),
        "warmup_rows_per_sequence": warmup_rows / args.warmup,
        "warmup_teacher_sequences": explainer.fidelity.compared,
        "warmup_seconds": warmup_seconds,
        "curve": curve,
        "comparisons": comparisons,
        "settings": explainer.settings,
    }


def _stored_exact(reward: MemoReward) -> tuple[Any, list[Tensor], dict[str, Any]]:
    """The attribution benchmark's sequences and exact values, if they fit this reward model."""
    stored = json.loads(ATTRIBUTION_RESULTS.read_text())["fidelity"]
    prompt_tokens = json.loads(ATTRIBUTION_RESULTS.read_text())["settings"]["prompt_tokens"]
    frame = split_reviews(split="heldout", seed=0)
    texts = frame.loc[stored["review_rows"], "text"].tolist()
    needed = prompt_tokens + stored["tokens"]
    pairs = []
    for text in texts:
        ids = reward.tokenizer(text, add_special_tokens=False, truncation=True, max_length=needed)
        pairs.append((ids["input_ids"][:prompt_tokens], ids["input_ids"][prompt_tokens:]))
    batch = batch_tensors(reward.tokenizer, pairs)
    exact = [torch.tensor(phi, dtype=torch.float64) for phi in stored["exact"]]
    n_units = [int(r.sum()) for r in batch[2]]
    full = reward(batch[0], batch[1])
    masked = torch.where(batch[2], reward.tokenizer.mask_token_id, batch[0])
    empty = reward(masked, batch[1])
    gap_error = max(abs(float(phi.sum()) - float(f - e)) for phi, f, e in zip(exact, full, empty))
    check = {
        "source": str(ATTRIBUTION_RESULTS.relative_to(RESULTS.parent.parent)),
        "prompt_tokens": prompt_tokens,
        "max_efficiency_gap": gap_error,
        "units_match": n_units == [phi.shape[0] for phi in exact],
    }
    return batch, exact, check


def run_exact(reward: MemoReward, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    batch, exact, check = _stored_exact(reward)
    if not (check["units_match"] and check["max_efficiency_gap"] < EXACT_CHECK_TOLERANCE):
        log(f"stored exact values do not fit this model ({check}); recomputing")
        pairs = token_continuations(reward.tokenizer, args.exact_reviews, 32, 12)
        batch = batch_tensors(reward.tokenizer, pairs)
        exact = _explain(reward, batch, method="exact").unit_scores
        check = {"source": "computed", "prompt_tokens": 32}
    log(f"exact values: {check}")
    out = {}
    for label, options in (
        ("prefix", {"method": "prefix"}),
        ("gradient", {"method": "gradient"}),
        ("attention", {"method": "attention"}),
        ("occlusion", {"method": "occlusion"}),
        ("kernel_shap@64", {"method": "kernel_shap", "budget": 64}),
    ):
        result = _explain(reward, batch, seed=1, **options)
        out[label] = {
            **_agreement(result.unit_scores, exact),
            "rows_per_sequence": float(result.rows.double().mean()),
        }
        log(f"{label}: {out[label]}")
    return {
        "reviews": len(exact),
        "response_tokens": 12,
        "prompt_tokens": check["prompt_tokens"],
        "exact_values": check,
        "methods": out,
    }


# ----------------------------------------------------------------------------------------------
# Report


def machine() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpu_model": cpu_model(),
        "nproc": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "commit": commit,
    }


def _fmt(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def render(results: dict[str, Any]) -> str:
    lines = [
        "# Amortised explainer and near-free signals: fidelity",
        "",
        f"Command: `{results['command']}`  ",
        (
            f"Machine: {results['machine']['cpu_model']}, {results['machine']['nproc']} cores "
            f"(shared; load average at start {results['machine']['load_average_at_start'][0]:.1f}), "
            f"torch {results['machine']['torch']}, commit {results['machine']['commit']}  "
        ),
        (
            f"Date: {results['date']}. Wall times below are not speed figures (the machine was "
            "shared); rows are."
        ),
        "",
    ]
    if "amortized" in results:
        a = results["amortized"]
        lines += [
            "## Amortised explainer against kernel_shap@256 on unseen continuations",
            "",
            (
                f"Warm-up: {a['warmup_sequences']} IMDB continuations (8-word prompt, 16-word "
                f"response, {a['mean_response_tokens']:.1f} tokens on average) in calls of "
                f"{CALL_SEQUENCES}, teacher {a['teacher']}@{a['teacher_budget']}, audit fraction "
                f"{a['audit_fraction']}: {a['warmup_teacher_sequences']} teacher-explained sequences, "
                f"{a['warmup_rows_per_sequence']:.2f} rows per sequence. Test: the next "
                f"{a['test_sequences']} continuations, explained the same way (auditing and "
                "learning go on)."
            ),
            "",
            "| scores | mean Pearson | mean relative L2 | rows per sequence | sequences |",
            "|---|---|---|---|---|",
        ]
        for label, c in a["comparisons"].items():
            lines.append(
                f"| {label} | {_fmt(c['pearson'])} | {_fmt(c['relative_l2'])} | "
                f"{c['rows_per_sequence']:.2f} | {c['sequences']} |"
            )
        returned = a["comparisons"]["amortized (returned)"]
        budget = 0.35 * a["teacher_budget"]
        met = returned["pearson"] >= 0.85 and returned["rows_per_sequence"] <= budget
        lines += [
            "",
            (
                f"Target: mean Pearson >= 0.85 at <= {budget:.1f} rows per sequence: "
                f"{'met' if met else 'missed'} (returned scores: {_fmt(returned['pearson'])} at "
                f"{returned['rows_per_sequence']:.2f} rows)."
            ),
            "",
            (
                "Running fidelity during the warm-up (head against teacher, before learning from "
                "each audited sequence; mean over the last 16):"
            ),
            "",
            "| sequences seen | running Pearson | running relative L2 |",
            "|---|---|---|",
        ]
        step = max(1, len(a["curve"]) // 8)
        for point in a["curve"][step - 1 :: step]:
            lines.append(
                f"| {point['sequences']} | {_fmt(point['running_pearson'])} | "
                f"{_fmt(point['running_relative_l2'])} |"
            )
        lines.append("")
    if "exact" in results:
        e = results["exact"]
        lines += [
            (
                f"## Near-free signals against exact Shapley ({e['reviews']} held-out reviews, "
                f"{e['prompt_tokens']}-token prompt, {e['response_tokens']}-token response)"
            ),
            "",
            "| method | mean Pearson | mean relative L2 | rows per sequence |",
            "|---|---|---|---|",
        ]
        for label, c in e["methods"].items():
            lines.append(
                f"| {label} | {_fmt(c['pearson'])} | {_fmt(c['relative_l2'])} | "
                f"{c['rows_per_sequence']:.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "amortized", "exact"), default="all")
    parser.add_argument("--warmup", type=int, default=512)
    parser.add_argument("--test", type=int, default=16)
    parser.add_argument("--teacher-budget", type=int, default=64)
    parser.add_argument("--audit-fraction", type=float, default=0.25)
    parser.add_argument(
        "--exact-reviews", type=int, default=3, help="reviews when exact values are recomputed"
    )
    parser.add_argument("--memo", type=Path, default=None, help="keep reward values here")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.test, args.exact_reviews, args.teacher_budget = 16, 8, 1, 16
    name = "amortized" if args.part == "all" else f"amortized_{args.part}"

    def log(message: str) -> None:
        print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)

    # A terminated run still keeps its memo (the finally clause below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    memo = torch.load(args.memo, weights_only=False) if args.memo and args.memo.exists() else {}
    model, tokenizer = load_sentiment_reward_model()
    reward = MemoReward(SequenceClassifierReward(model, tokenizer, label=1, minus_label=0), memo)
    results: dict[str, Any] = {
        "command": "python benchmarks/amortized.py " + " ".join(argv or sys.argv[1:]),
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": machine(),
    }
    try:
        if args.part in ("all", "amortized"):
            results["amortized"] = run_amortized(reward, args, log)
        if args.part in ("all", "exact"):
            results["exact"] = run_exact(reward, args, log)
    finally:
        if args.memo:
            torch.save(reward.memo, args.memo)
    results["computed_rows"] = reward.computed_rows
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(render(results))
    log(f"wrote {args.out / name}.md")
    return results


if __name__ == "__main__":
    main()
