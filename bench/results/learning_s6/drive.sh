#!/usr/bin/env bash
# Session 6, one nvidia-h200-x2 machine (32 cores, 2 GPUs): four arms from session 5's prior, side by side,
# each 120 iterations x 24 envs x 80 steps = 230 k env steps on `train`, greedy validation evals every 20
# iterations (48 episodes), then each arm's iteration 120 on the test seeds (200 episodes: train, then the
# two siblings). Beside them: the prior and session 5's PPO (it. 120) with sampled actions (T = 1) on test.
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, $LEARN_DIR, log, evalv
arm() {  # gpu algo tag rl-args
  local gpu=$1 algo=$2 tag=$3 args=$4
  export CUDA_VISIBLE_DEVICES=$gpu
  ITERS=120 SAVE_EVERY=20 TAG=$tag RL_ARGS="--eval-every 20 --eval-episodes 48 $args" \
    bash bench/learning.sh "$algo" > "/tmp/out/${algo}_$tag.log" 2>&1; log "$algo $tag rc=$?"
  local run; run=$(ls -d /tmp/learn/$algo/train__${algo}_${tag}__*/ | tail -1); run=${run%/}
  local last; last=$(ls -d "$run"/checkpoints/iter_* | grep -v tmp | tail -1)
  tar -C /tmp/learn --exclude=optimizer.pt --exclude=rng_states.pt -cJf "/tmp/out/run_$tag.tar.xz" "${run#/tmp/learn/}"
  evalv "eval_key_$tag" 200 train -- "$last" > "/tmp/out/eval_$tag.log" 2>&1; log "eval key $tag rc=$?"
  tar -C /tmp/learn -cJf "/tmp/out/eval_$tag.tar.xz" "eval_key_$tag"
  evalv "eval_sib_$tag" 200 unseen_target red_cube -- "$last" >> "/tmp/out/eval_$tag.log" 2>&1; log "eval sib $tag rc=$?"
  tar -C /tmp/learn -cJf "/tmp/out/eval_$tag.tar.xz" "eval_key_$tag" "eval_sib_$tag"
}
log start
arm 0 ppo e4 "--update-epochs 4" &
arm 0 ppo vis "--train-vision --vision-learning-rate 1e-5" &
arm 1 grpo g "" &
arm 1 reinforce r "" &
( export CUDA_VISIBLE_DEVICES=1 EXTRA="--temperature 1.0"
  evalv eval_sampled 200 train -- /tmp/learn/prior /tmp/learn/ppo/train__ppo__1__1795331056/checkpoints/iter_000120 \
    > /tmp/out/eval_sampled.log 2>&1; log "eval sampled rc=$?"
  tar -C /tmp/learn -cJf /tmp/out/eval_sampled.tar.xz eval_sampled ) &
wait
log DONE
