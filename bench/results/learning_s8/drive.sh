#!/usr/bin/env bash
# Issue 12's next arms, for one nvidia-h200-x2 machine (2 GPUs, 32 cores); written in session 8 (no device time
# left that session), to be run as is by the next one. From session 5's prior, one arm per GPU, both PPO with the
# `progress` reward and GAE lambda 0: the per-step credit that bench/gradient_noise.py resolves at ~50 episodes
# (lambda 0.95, session 7's arm, ~120; the sparse return: thousands). Only the batch differs:
#   GPU 0, tag l0:     24 envs per update (as every earlier arm)
#   GPU 1, tag l0e48:  48 envs per update (the same env steps in half the updates: if the noise is what holds
#                      PPO back, each update of B climbs more; B_noise ~50 says 1/3 vs 1/2 of an exact step)
# Both are stopped by SIGTERM at $STOP_S seconds (each finishes its iteration, saves a resumable checkpoint with
# optimizer and RNG state, exits); then each arm's last checkpoint on the test seeds: 200 greedy and 200 sampled
# (T = 1) episodes on train, 200 greedy on each sibling. Comparison cells: the prior and session 7's lambda 0.95
# arm (learning.json). To continue an arm in a later session, carry its run tar (`.learn/s8/run_<tag>.tar.xz`,
# optimizer included) and set RESUME_FROM to the folder holding it: the arm resumes where it stopped.
# On the device (the brief's prefix, then):
#   (setsid bash bench/results/learning_s8/drive.sh </dev/null >/tmp/drive.out 2>&1 &)   # then poll
#   tail /tmp/out/driver.log; copy /tmp/out/* to $OUT before the machine's 30 minutes end
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, $LEARN_DIR, log, evalv
STOP_S=${STOP_S:-960}  # ~16 min of training; ~7 min of evaluation and packing follow
arm() {  # gpu tag envs
  local gpu=$1 tag=$2 envs=$3 resume=""
  export CUDA_VISIBLE_DEVICES=$gpu
  if [ -n "${RESUME_FROM:-}" ] && [ -f "$RESUME_FROM/run_$tag.tar.xz" ]; then
    tar -C /tmp/learn -xJf "$RESUME_FROM/run_$tag.tar.xz"
    resume="--resume $(ls -d /tmp/learn/ppo/train__ppo_${tag}__*/ | tail -1)"
  fi
  REWARD=progress ENVS=$envs ITERS=400 SAVE_EVERY=10 TAG=$tag \
    RL_ARGS="--gae-lambda 0 --eval-every 20 --eval-episodes 48 $resume" \
    bash bench/learning.sh ppo > "/tmp/out/ppo_$tag.log" 2>&1; log "ppo $tag rc=$?"
  local run; run=$(ls -d /tmp/learn/ppo/train__ppo_${tag}__*/ | tail -1); run=${run%/}
  local last; last=$(ls -d "$run"/checkpoints/iter_* | grep -E 'iter_[0-9]+$' | sort | tail -1)
  log "$tag last=$last"
  tar -C /tmp/learn -cJf "/tmp/out/run_$tag.tar.xz" "${run#/tmp/learn/}"  # optimizer kept: resumable
  evalv "eval_key_$tag" 200 train -- "$last" > "/tmp/out/eval_$tag.log" 2>&1 &
  EXTRA="--temperature 1.0" evalv "eval_t1_$tag" 200 train -- "$last" > "/tmp/out/eval_t1_$tag.log" 2>&1 &
  evalv "eval_sib_$tag" 200 unseen_target red_cube -- "$last" > "/tmp/out/eval_sib_$tag.log" 2>&1 &
  wait; log "evals $tag done"
  tar -C /tmp/learn -cJf "/tmp/out/eval_$tag.tar.xz" "eval_key_$tag" "eval_t1_$tag" "eval_sib_$tag"
}
log start
# issue 13: where one env step's time goes on this machine (in-process, with and without the camera), ~1 min
python3 bench/env_throughput.py --num-workers 16 --steps 100 --breakdown > /tmp/out/env_breakdown.json 2>/tmp/out/env_breakdown.err
log "env breakdown rc=$?"
arm 0 l0 24 &
arm 1 l0e48 48 &
( sleep "$STOP_S"; pkill -TERM -f "[p]po_openvla.py"; log "SIGTERM sent" ) &
wait
log DONE
