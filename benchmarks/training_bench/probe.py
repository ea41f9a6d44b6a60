"""The probe: one ShapedReward call alone, on one batch of the run, under a few settings."""

from __future__ import annotations

import statistics
import time

import torch

from training_bench.settings import SEED

PROBE_VARIANTS = (
    ("max_rows=16 (CPU default)", {}),
    ("max_rows=8", {"max_rows": 8}),
    ("max_rows=32", {"max_rows": 32}),
    ("max_rows=64", {"max_rows": 64}),
    ("masking='remove' (deletion game)", {"masking": "remove"}),
    ("masking='remove', max_rows=32", {"masking": "remove", "max_rows": 32}),
)


def _median_seconds(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def probe_reward_call(reward, policy_tokenizer, batch, *, budget: int = 64, repeats: int = 3):
    """Seconds of one ``ShapedReward`` call (kernel_shap at ``budget``) on ``batch`` under a few
    settings, and the floor of the same rows: the unmasked rows repeated ``budget`` times, in
    chunks, padded to the batch's width as the reward game sends them, or trimmed per chunk to
    the chunk's longest row."""
    from tokenshape.integrations.trl import ShapedReward
    from tokenshape.shaping import ShapingParams

    prompts, completions, completion_ids = batch
    params = ShapingParams({"kernel_shap": 0.5, "sparse": 0.5})
    calls = []
    for label, options in PROBE_VARIANTS:
        shaped = ShapedReward(
            reward, params, policy_tokenizer=policy_tokenizer, budget=budget, seed=SEED, **options
        )
        seconds = _median_seconds(
            lambda shaped=shaped: shaped(prompts, completions, completion_ids), repeats
        )
        calls.append({"variant": label, "seconds": seconds})
        print(f"  probe {label}: {seconds:.3f} s", flush=True)
    tokenizer = reward.tokenizer
    encoded = tokenizer(
        [p + c for p, c in zip(prompts, completions)], padding=True, return_tensors="pt"
    )
    ids = encoded["input_ids"].repeat_interleave(budget, 0)
    mask = encoded["attention_mask"].repeat_interleave(budget, 0)
    floors = []
    for chunk in (16, 32):
        for trimmed in (False, True):

            def run(chunk=chunk, trimmed=trimmed):
                with torch.inference_mode():
                    for start in range(0, ids.shape[0], chunk):
                        rows_mask = mask[start : start + chunk]
                        width = int(rows_mask.sum(dim=1).max()) if trimmed else ids.shape[1]
                        reward(ids[start : start + chunk, :width], rows_mask[:, :width])

            seconds = _median_seconds(run, repeats)
            floors.append({"chunk": chunk, "trimmed": trimmed, "seconds": seconds})
            print(
                f"  floor chunk {chunk} {'trimmed' if trimmed else 'padded'}: {seconds:.3f} s",
                flush=True,
            )
    return {
        "budget": budget,
        "rows": int(ids.shape[0]),
        "width": int(encoded["input_ids"].shape[1]),
        "attended": encoded["attention_mask"].sum(dim=1).tolist(),
        "calls": calls,
        "floors": floors,
    }
