#!/usr/bin/env bash
# Session 7, one nvidia-h200-x4 machine (64 cores, 4 GPUs): four arms from session 5's prior side by side, one
# per GPU, each 120 iterations x 24 envs x 80 steps = 230 k env steps on `train` (greedy validation evals every
# 20 iterations, 48 episodes); then each arm's last checkpoint on the test seeds: 200 greedy episodes on
# train, 200 sampled (T = 1) on train, 200 greedy on each sibling. Beside them, the gradient's noise scale of
# session 5's PPO (it. 120) with the sparse, shaped and progress rewards on the same episodes.
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, $LEARN_DIR, log, evalv
arm() {  # gpu algo tag reward [rl-args]
  local gpu=$1 algo=$2 tag=$3 reward=$4 args=${5:-}
  export CUDA_VISIBLE_DEVICES=$gpu
  REWARD=$reward ITERS=120 SAVE_EVERY=20 TAG=$tag RL_ARGS="--eval-every 20 --eval-episodes 48 $args" \
    bash bench/learning.sh "$algo" > "/tmp/out/${algo}_$tag.log" 2>&1; log "$algo $tag rc=$?"
  local run; run=$(ls -d /tmp/learn/$algo/train__${algo}_${tag}__*/ | tail -1); run=${run%/}
  local last; last=$(ls -d "$run"/checkpoints/iter_* | grep -E 'iter_[0-9]+$' | sort | tail -1)
  log "$tag last=$last"
  tar -C /tmp/learn --exclude=optimizer.pt --exclude=rng_states.pt -cJf "/tmp/out/run_$tag.tar.xz" "${run#/tmp/learn/}"
  evalv "eval_key_$tag" 200 train -- "$last" > "/tmp/out/eval_$tag.log" 2>&1; log "eval key $tag rc=$?"
  tar -C /tmp/learn -cJf "/tmp/out/eval_$tag.tar.xz" "eval_key_$tag"
  EXTRA="--temperature 1.0" evalv "eval_t1_$tag" 200 train -- "$last" >> "/tmp/out/eval_$tag.log" 2>&1
  log "eval T1 $tag rc=$?"
  tar -C /tmp/learn -cJf "/tmp/out/eval_$tag.tar.xz" "eval_key_$tag" "eval_t1_$tag"
  evalv "eval_sib_$tag" 200 unseen_target red_cube -- "$last" >> "/tmp/out/eval_$tag.log" 2>&1; log "eval sib $tag rc=$?"
  tar -C /tmp/learn -cJf "/tmp/out/eval_$tag.tar.xz" "eval_key_$tag" "eval_t1_$tag" "eval_sib_$tag"
}
log start
arm 0 ppo prog progress &
arm 1 ppo shaped shaped &
arm 2 grpo g sparse &
arm 3 reinforce r sparse &
( export CUDA_VISIBLE_DEVICES=3
  for reward in progress shaped; do
    python3 bench/gradient_noise.py --checkpoint /tmp/learn/ppo/train__ppo__1__1795331056/checkpoints/iter_000120 \
      --episodes 96 --num-envs 16 --reward $reward --out /tmp/out/gradient_noise_$reward.json \
      > /tmp/out/gradient_noise_$reward.log 2>&1; log "gradient noise $reward rc=$?"
  done ) &
wait
log DONE
