#!/usr/bin/env bash
# PPO with a critic (GAE) on one GPU with verl 0.9.1 and tokenshape's dense reward manager:
# SmolLM2-135M-Instruct continues IMDB review openings, the MiniLM sentiment model scores them,
# and KernelSHAP spreads each score over the response tokens (half of it; the other half stays on
# the last token). See docs/verl/README.md for what this needs and what was run.
#
#   POLICY=~/.cache/tokenshape/smollm2-135m-instruct \
#   REWARD_MODEL=~/.cache/tokenshape/minilm-imdb-sentiment \
#   DATA=~/data/imdb_positive bash docs/verl/ppo_one_gpu.sh [more overrides]
set -euo pipefail
: "${POLICY:?the policy folder (tokenshape prepare builds ~/.cache/tokenshape/smollm2-135m-instruct)}"
: "${REWARD_MODEL:?the reward model folder (~/.cache/tokenshape/minilm-imdb-sentiment)}"
: "${DATA:?the folder of train.parquet and val.parquet (docs/verl/imdb_parquet.py)}"

OVERRIDES=(
  algorithm.adv_estimator=gae
  algorithm.gamma=1.0
  algorithm.lam=0.95
  algorithm.use_kl_in_reward=False
  data.train_files="$DATA/train.parquet"
  data.val_files="$DATA/val.parquet"
  data.train_batch_size=32
  data.max_prompt_length=64
  data.max_response_length=32
  actor_rollout_ref.model.path="$POLICY"
  actor_rollout_ref.actor.optim.lr=1e-6
  actor_rollout_ref.actor.ppo_mini_batch_size=16
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8
  actor_rollout_ref.actor.use_kl_loss=False
  actor_rollout_ref.rollout.name=vllm
  actor_rollout_ref.rollout.tensor_model_parallel_size=1
  actor_rollout_ref.rollout.gpu_memory_utilization=0.3
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8
  actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8
  critic.model.path="$POLICY"
  critic.optim.lr=1e-5
  critic.ppo_micro_batch_size_per_gpu=8
  # Dense scores reach the critic only on the colocated reward-model path: a reward model
  # enabled in the trainer's resource pool, and a custom reward function set so that verl's
  # reward loop calls the manager's run_single. The manager never calls that function, and
  # scores with its own copy of the reward model in the reward-loop worker.
  reward.reward_model.enable=True
  reward.reward_model.enable_resource_pool=False
  reward.reward_model.model_path="$REWARD_MODEL"
  reward.reward_model.rollout.name=vllm
  reward.reward_model.rollout.tensor_model_parallel_size=1
  reward.reward_model.rollout.gpu_memory_utilization=0.1
  reward.custom_reward_function.path=pkg://verl.utils.reward_score
  reward.custom_reward_function.name=default_compute_score
  reward.reward_manager.name=tokenshape
  reward.num_workers=2
  +reward.tokenshape.weights="{kernel_shap: 0.5, sparse: 0.5}"
  +reward.tokenshape.budget=64
  +reward.tokenshape.label=1
  +reward.tokenshape.minus_label=0
  trainer.n_gpus_per_node=1
  trainer.nnodes=1
  trainer.total_training_steps=50
  trainer.test_freq=10
  trainer.save_freq=-1
  trainer.val_before_train=True
  trainer.critic_warmup=0
  trainer.logger='["console"]'
  trainer.project_name=tokenshape
  trainer.experiment_name=imdb_positive_ppo_dense
)

exec python -m verl.trainer.main_ppo "${OVERRIDES[@]}" "$@"
