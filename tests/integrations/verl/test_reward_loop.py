"""verl's real RewardLoopManager under a local one-CPU Ray: its reward-loop worker (a Ray actor,
another process) resolves ``tokenshape`` through the entry point, loads the reward model and
returns dense ``rm_scores``."""

from __future__ import annotations

import shutil
import tempfile
import time

import pytest
import torch
from verl.experimental.reward_loop import RewardLoopManager
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase


@pytest.fixture(scope="module")
def local_ray():
    import ray

    temp_dir = tempfile.mkdtemp(prefix="ray-")
    ray.init(
        address="local",
        num_cpus=1,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=temp_dir,
    )
    yield
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


def compute_rm_score(config, data):
    """One RewardLoopManager's output on ``data``; its worker actors are ended afterwards (their
    names are fixed, so two managers cannot live at once)."""
    import ray

    manager = RewardLoopManager(config)
    try:
        return manager.compute_rm_score(data)
    finally:
        for worker in manager.reward_loop_workers:
            ray.kill(worker)
        _wait_until_released([f"reward_loop_worker_{i}" for i in range(config.reward.num_workers)])


def _wait_until_released(names: list[str], *, seconds: float = 60.0) -> None:
    import ray

    def taken(name: str) -> bool:
        try:
            ray.get_actor(name)
        except ValueError:
            return False
        return True

    deadline = time.monotonic() + seconds
    while any(taken(name) for name in names) and time.monotonic() < deadline:
        time.sleep(0.1)


def test_reward_loop_manager_returns_dense_rm_scores(local_ray, trainer_config, make_data):
    settings = {"weights": {"kernel_shap": 0.5, "sparse": 0.5}, "budget": 16}
    data = make_data()
    dense_out = compute_rm_score(trainer_config(settings), data)
    sparse_out = compute_rm_score(trainer_config({"weights": {"sparse": 1.0}}), data)
    rm_scores = dense_out.batch["rm_scores"]
    scores = torch.tensor(dense_out.non_tensor_batch["score"].astype(float))
    assert rm_scores.shape == data.batch["responses"].shape
    torch.testing.assert_close(rm_scores.sum(dim=1).double(), scores, atol=1e-5, rtol=1e-5)
    prompt_width = data.batch["prompts"].size(1)
    lengths = data.batch["attention_mask"][:, prompt_width:].sum(dim=1)
    assert torch.count_nonzero(rm_scores[0, : lengths[0] - 1]) > 0
    # The same reward model scores both; the sparse manager gives verl's default assembly.
    torch.testing.assert_close(
        torch.tensor(sparse_out.non_tensor_batch["score"].astype(float)), scores
    )
    default = RewardManagerBase.assemble_rm_scores(data, scores.tolist())
    assert torch.equal(sparse_out.batch["rm_scores"], default)
