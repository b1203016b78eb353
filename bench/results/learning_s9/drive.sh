#!/usr/bin/env bash
# Issue 12, session 9: does a sharper prior let PPO learn? For one nvidia-h200-x2 machine (2 GPUs, 32 cores).
# Sessions 6-8 measured the policy gradient's noise scale at >= 230-1,600 episodes with session 5's prior, whose
# translation tokens carry ~3 nats each: that prior was stopped early (the first SFT checkpoint in the 30-50 %
# range, at a constant learning rate of 1e-3), so it is an under-trained, broad policy. RL4VLA's warm-up trains
# to convergence instead. Two priors, each continued from session 5's for 5,000 more SFT steps with the learning
# rate decayed to 0 (cosine), the last step taken as the prior (no selection, so no winner's curse):
#   GPU 0, tag same: on session 5's own 1,200 demos (seeds from 1,000,000): more training on the same data;
#   GPU 1, tag new:  on 1,200 new demos (seeds from 3,000,000): more training and twice the layouts.
# Each prior is then measured on the test seeds (200 greedy and 200 sampled (T = 1) episodes on `train`) beside
# PPO from it (session 5's settings: sparse reward, 24 envs x 80 steps, LoRA r16, lr 5e-4), which stops by
# SIGTERM at $STOP_S seconds after the start (finishes its iteration, saves a resumable checkpoint); then PPO's
# last checkpoint gets the same two evaluations. The priors' SFT logs carry their token entropies.
# To continue an arm's PPO in a later session: unpack prior_<tag>.tar.xz into /tmp/learn_<tag>/ and
# run_<tag>.tar.xz into /tmp/learn_<tag>/, then `--resume /tmp/learn_<tag>/ppo/<run>` (the checkpoints name
# /tmp/learn_<tag>/prior as their vla_path).
# carry: [".device", ".learn/s5/prior.tar.xz"]
# On the device (the brief's prefix, then):
#   (setsid bash bench/results/learning_s9/drive.sh </dev/null >/tmp/drive.out 2>&1 &)   # then poll
#   tail /tmp/out/driver.log; copy /tmp/out/* to $OUT before the machine's 30 minutes end
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, session 5's prior in /tmp/learn/prior, log, evalv
STOP_S=${STOP_S:-1200}  # PPO gets what is left of 20 min after its prior; ~5 min of evaluation and packing follow
SFT_STEPS=${SFT_STEPS:-5000}
EP=${EP:-200}  # test episodes per evaluation
arm() {  # gpu tag demo-seed
  local gpu=$1 tag=$2 seed=$3
  export CUDA_VISIBLE_DEVICES=$gpu LEARN_DIR=/tmp/learn_$tag EVAL_ENVS=${EVAL_ENVS:-8}
  PRIOR_FROM=/tmp/learn/prior DEMO_SEED=$seed ENVS=16 SFT_STEPS=$SFT_STEPS SFT_EVAL=$((SFT_STEPS / 2)) \
    PRIOR_PICK=last SFT_ARGS="--lr-schedule cosine" bash bench/learning.sh prior > "/tmp/out/prior_$tag.log" 2>&1
  log "prior $tag rc=$?"
  cp "$LEARN_DIR/sft.log" "/tmp/out/sft_$tag.log"; cp "$LEARN_DIR/prior.json" "/tmp/out/prior_$tag.json"
  tar -C "$LEARN_DIR" -cJf "/tmp/out/prior_$tag.tar.xz" prior
  ( evalv "eval_key_prior_$tag" "$EP" train -- "$LEARN_DIR/prior" > "/tmp/out/eval_prior_$tag.log" 2>&1
    EXTRA="--temperature 1.0" evalv "eval_t1_prior_$tag" "$EP" train -- "$LEARN_DIR/prior" \
      > "/tmp/out/eval_t1_prior_$tag.log" 2>&1; log "prior evals $tag done" ) &
  local evals=$!
  TAG=$tag ENVS=24 ITERS=400 SAVE_EVERY=15 RL_ARGS="--eval-every 0" \
    bash bench/learning.sh ppo > "/tmp/out/ppo_$tag.log" 2>&1; log "ppo $tag rc=$?"
  local last; last=$(pack_run ppo "$tag")
  evalv "eval_key_ppo_$tag" "$EP" train -- "$last" > "/tmp/out/eval_ppo_$tag.log" 2>&1 &
  EXTRA="--temperature 1.0" evalv "eval_t1_ppo_$tag" "$EP" train -- "$last" > "/tmp/out/eval_t1_ppo_$tag.log" 2>&1 &
  wait; wait $evals; log "evals $tag done"
  tar -C /tmp/learn -cJf "/tmp/out/eval_$tag.tar.xz" "eval_key_prior_$tag" "eval_t1_prior_$tag" \
    "eval_key_ppo_$tag" "eval_t1_ppo_$tag"
}
log start
arm 0 same 1000000 &
arm 1 new 3000000 &
( sleep "$STOP_S"; pkill -TERM -f "[p]po_openvla.py"; log "SIGTERM sent" ) &
wait
log DONE
