"""Two shaped GRPO steps in two CPU processes; each process writes what it saw to OUT_DIR.

Run as ``torchrun --nproc_per_node 2 two_process_run.py OUT_DIR``: accelerate (inside TRL) picks
up the process group torchrun sets up and trains on the CPU with gloo. Four completions per
prompt and two rows per process put every prompt group across both processes.

Both processes meet at a barrier once their results are written, then destroy the process group
while the interpreter is fully alive. A gloo group left to interpreter exit is destroyed during
finalisation: its worker threads may still hold finished work whose tensors reference Python
objects, and freeing them then (or destroying a thread still joinable) aborts the process with
"terminate called without an active exception" (SIGABRT), now and then, after a run that
succeeded (pytorch/pytorch#190489 reproduces it; #179291 proposed an atexit hook in torch and was
abandoned).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import PartialState
from datasets import Dataset
from trl import GRPOConfig

from tokenshape.integrations.trl import ShapedGRPOTrainer, ShapedReward, TokenShapeConfig
from tokenshape.models.policy import smollm2_tokenizer
from tokenshape.models.tiny import minilm_tokenizer, tiny_bert_reward_model, tiny_llama_policy
from tokenshape.reward import SequenceClassifierReward
from tokenshape.shaping import ShapingParams


def main(out_dir: Path) -> None:
    state = PartialState()
    policy_tokenizer = smollm2_tokenizer()
    reward_tokenizer = minilm_tokenizer()
    reward = SequenceClassifierReward(
        tiny_bert_reward_model(reward_tokenizer), reward_tokenizer, label=1, minus_label=0
    )
    shaped = ShapedReward(reward, ShapingParams({"kernel_shap": 0.5, "sparse": 0.5}), budget=8)
    policy = tiny_llama_policy(policy_tokenizer)
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    args = GRPOConfig(
        output_dir=str(out_dir / "trainer"),
        report_to="none",
        use_cpu=True,
        max_completion_length=8,
        num_generations=4,
        per_device_train_batch_size=2,
        max_steps=2,
        logging_steps=1,
        save_strategy="no",
        seed=0,
        learning_rate=1e-3,
        loss_type="dapo",
        disable_tqdm=True,
    )
    trainer = ShapedGRPOTrainer(
        model=policy,
        reward_funcs=[shaped],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": ["The movie was", "I think that"] * 4}),
        processing_class=policy_tokenizer,
        shaping_config=TokenShapeConfig(mode="weight"),
    )
    seen = []
    original = trainer._generate_and_score_completions

    def record(inputs):
        output = original(inputs)
        mask = output["completion_mask"].bool()
        seen.append(
            {
                "shape": list(output["advantages"].shape),
                "row_means": [float(a[m].mean()) for a, m in zip(output["advantages"], mask)],
                "zero_off_mask": bool((output["advantages"][~mask] == 0).all()),
            }
        )
        return output

    trainer._generate_and_score_completions = record
    trainer.train()
    model = trainer.accelerator.unwrap_model(trainer.model)
    changed = [not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters()]
    checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    result = {
        "rank": state.process_index,
        "world": state.num_processes,
        "batches": seen,
        "all_changed": all(changed),
        "checksum": checksum,
    }
    (out_dir / f"rank{state.process_index}.json").write_text(json.dumps(result))
    state.wait_for_everyone()


if __name__ == "__main__":
    try:
        main(Path(sys.argv[1]))
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
