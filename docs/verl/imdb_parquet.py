"""Write verl's parquet files for the imdb_positive task: IMDB review openings as chat prompts.

Run it in the project's main environment (it reads the embedded movie reviews)::

    .venv/bin/python docs/verl/imdb_parquet.py --out ~/data/imdb_positive

Each row has the columns verl's ``RLHFDataset`` reads: ``prompt`` (chat messages), ``data_source``,
``ability``, ``reward_model`` and ``extra_info``. The reward model scores the whole conversation,
so ``reward_model.ground_truth`` is empty.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from tokenshape.models.data import review_openings
from tokenshape.models.policy import smollm2_tokenizer

INSTRUCTION = "Continue this movie review: "


def prompt_rows(openings: list[str], split: str) -> list[dict]:
    """One verl dataset row per review opening."""
    return [
        {
            "data_source": "imdb_positive",
            "prompt": [{"role": "user", "content": INSTRUCTION + opening}],
            "ability": "sentiment",
            "reward_model": {"style": "model", "ground_truth": ""},
            "extra_info": {"split": split, "index": index},
        }
        for index, opening in enumerate(openings)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the parquet files")
    parser.add_argument("--train", type=int, default=256, help="training prompts")
    parser.add_argument("--val", type=int, default=64, help="held-out prompts")
    parser.add_argument("--tokens", type=int, default=8, help="policy tokens per opening")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the order")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer = smollm2_tokenizer()
    for split, n, name in (("train", args.train, "train"), ("heldout", args.val, "val")):
        openings = review_openings(tokenizer, n, args.tokens, split=split, seed=args.seed)
        pd.DataFrame(prompt_rows(openings, split)).to_parquet(args.out / f"{name}.parquet")
        print(f"{args.out / f'{name}.parquet'}: {n} prompts")


if __name__ == "__main__":
    main()
