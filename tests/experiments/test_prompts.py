"""Prompt sources: every file format reads the same prompts, the held-out split is seeded and
disjoint, counts are checked, chat messages are written with the policy's chat template."""

from __future__ import annotations

import pandas as pd
import pytest

from tokenshape.errors import InvalidArgumentError
from tokenshape.experiments.config import config_from_dict
from tokenshape.experiments.prompts import load_prompts, read_prompt_rows


@pytest.fixture(scope="module")
def tokenizer():
    from tokenshape.models.policy import smollm2_tokenizer

    return smollm2_tokenizer()


def test_every_format_reads_the_same_prompts(user_files, tmp_path):
    from datasets import Dataset

    prompts = user_files.train_prompts
    frame = pd.DataFrame({"text": prompts, "label": range(len(prompts))})
    frame.to_csv(tmp_path / "p.csv", index=False)
    frame.to_parquet(tmp_path / "p.parquet")
    Dataset.from_pandas(frame).save_to_disk(str(tmp_path / "saved"))
    for source in ("p.csv", "p.parquet", "saved"):
        rows = read_prompt_rows(str(tmp_path / source), column="text", field="data.train")
        assert rows == prompts
    assert read_prompt_rows(str(user_files.train), column="prompt", field="data.train") == prompts


def test_chat_prompts_survive_parquet_and_saved_datasets(user_files, tmp_path):
    from datasets import Dataset

    chat = read_prompt_rows(str(user_files.chat), column="prompt", field="data.train")
    assert chat[0] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "The movie was..."},
    ]
    pd.DataFrame({"prompt": chat}).to_parquet(tmp_path / "chat.parquet")
    Dataset.from_dict({"prompt": chat}).save_to_disk(str(tmp_path / "saved"))
    for source in ("chat.parquet", "saved"):
        assert read_prompt_rows(str(tmp_path / source), column="prompt", field="f") == chat


def test_a_saved_dataset_dict_is_refused_with_its_splits(user_files, tmp_path):
    from datasets import Dataset, DatasetDict

    split = Dataset.from_dict({"prompt": user_files.train_prompts})
    DatasetDict({"train": split, "test": split}).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(InvalidArgumentError, match=r"holds splits \['test', 'train'\]"):
        read_prompt_rows(str(tmp_path / "dict"), column="prompt", field="data.train")


def test_the_held_out_fraction_is_a_seeded_disjoint_split(user_files, tokenizer):
    def split(seed: int):
        config = config_from_dict(
            {"seed": seed, "data": {"train": str(user_files.train), "eval_fraction": 0.25}}
        )
        return load_prompts(config, tokenizer)

    train, held_out = split(0)
    assert len(held_out) == 2 and len(train) == 6
    assert sorted(train + held_out) == sorted(user_files.train_prompts)
    assert split(0) == (train, held_out)
    assert any(split(seed)[1] != held_out for seed in range(1, 6))


def test_counts_take_the_first_prompts_and_refuse_more_than_there_are(user_files, tokenizer):
    data = {"train": str(user_files.train), "eval": str(user_files.eval)}
    config = config_from_dict({"data": {**data, "train_prompts": 3, "eval_prompts": 2}})
    assert load_prompts(config, tokenizer) == (
        user_files.train_prompts[:3],
        user_files.eval_prompts[:2],
    )
    too_many = config_from_dict({"data": {**data, "eval_prompts": 5}})
    with pytest.raises(InvalidArgumentError) as raised:
        load_prompts(too_many, tokenizer)
    assert raised.value.name == "data.eval_prompts" and "at most the 4 prompts" in str(raised.value)


def test_a_fraction_that_leaves_one_side_empty_is_refused(user_files, tokenizer):
    config = config_from_dict({"data": {"train": str(user_files.train), "eval_fraction": 0.01}})
    with pytest.raises(InvalidArgumentError) as raised:
        load_prompts(config, tokenizer)
    assert raised.value.name == "data.eval_fraction"


def test_chat_prompts_are_written_with_the_policy_chat_template(user_files, tokenizer):
    config = config_from_dict({"data": {"train": str(user_files.chat), "eval": "imdb"}})
    train, held_out = load_prompts(config, tokenizer)
    messages = read_prompt_rows(str(user_files.chat), column="prompt", field="data.train")
    assert train == [
        tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
        for m in messages
    ]
    assert len(held_out) == 16  # IMDB's held-out openings, the default count


def test_chat_prompts_need_a_chat_template(user_files):
    from tokenshape.models.tiny import minilm_tokenizer

    config = config_from_dict({"data": {"train": str(user_files.chat), "eval": "imdb"}})
    with pytest.raises(InvalidArgumentError, match="no chat template") as raised:
        load_prompts(config, minilm_tokenizer())
    assert raised.value.name == "data.train"
