#!/usr/bin/env bash
# Issue 12's next runs, for one nvidia-h200-x2 machine (2 GPUs, 32 cores); written in session 8 (no device time
# left that session), to be run as is by the next one. From session 5's prior, one job per GPU:
#   GPU 0, tag l0: PPO with the `progress` reward and GAE lambda 0, 24 envs per update (otherwise as every earlier
#     arm): the only advantage whose half-split cosine was positive on both the 48 and the 96 CPU episodes of
#     bench/gradient_noise.py (B_noise ~440, 95 % bound >= 230 on 96; PPO's lambda 0.95: unresolved, >= 550).
#   GPU 1: first the same noise scale on 384 episodes of session 7's PPO `progress` it. 78 (a firm estimate
#     instead of a bound, ~5 min), then tag glr: GRPO (sparse) at LoRA lr 1e-4 instead of 5e-4, the learning-rate
#     arm owed since GRPO's lr-5e-4 run walked away from the prior (session 7: approx-KL 7-10x PPO's).
# Both RL arms stop by SIGTERM at $STOP_S seconds (each finishes its iteration, saves a resumable checkpoint with
# optimizer and RNG state, exits); then each arm's last checkpoint on the test seeds: 200 greedy and 200 sampled
# (T = 1) episodes on train, 200 greedy on each sibling. Comparison cells: the prior, session 7's lambda-0.95
# PPO and lr-5e-4 GRPO (learning.json). To continue an arm in a later session, carry its run tar
# (`.learn/s8/run_<tag>.tar.xz`, optimizer included) and set RESUME_FROM to the folder holding it.
# carry: [".device", ".learn/s5/prior.tar.xz", ".learn/s8/prog_it78.tar.xz"] (session 7's PPO `progress` it. 78, for the
# noise run; .learn/s8/prog_it78.tar.xz is built from .learn/s7/run_prog.tar.xz, 0.4 MB).
# On the device (the brief's prefix, then):
#   (setsid bash bench/results/learning_s8/drive.sh </dev/null >/tmp/drive.out 2>&1 &)   # then poll
#   tail /tmp/out/driver.log; copy /tmp/out/* to $OUT before the machine's 30 minutes end
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, $LEARN_DIR, log, evalv
STOP_S=${STOP_S:-960}  # ~16 min of training; ~7 min of evaluation and packing follow
arm() {  # gpu algo tag reward envs lr [rl-args]
  local gpu=$1 algo=$2 tag=$3 reward=$4 envs=$5 lr=$6 args=${7:-} resume=""
  export CUDA_VISIBLE_DEVICES=$gpu
  if [ -n "${RESUME_FROM:-}" ] && [ -f "$RESUME_FROM/run_$tag.tar.xz" ]; then
    tar -C /tmp/learn -xJf "$RESUME_FROM/run_$tag.tar.xz"
    resume="--resume $(ls -d /tmp/learn/$algo/train__${algo}_${tag}__*/ | tail -1)"
  fi
  REWARD=$reward ENVS=$envs LR=$lr ITERS=400 SAVE_EVERY=10 TAG=$tag \
    RL_ARGS="--eval-every 20 --eval-episodes 48 $args $resume" \
    bash bench/learning.sh "$algo" > "/tmp/out/${algo}_$tag.log" 2>&1; log "$algo $tag rc=$?"
  local last; last=$(pack_run "$algo" "$tag")
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
arm 0 ppo l0 progress 24 5e-4 "--gae-lambda 0" &
( export CUDA_VISIBLE_DEVICES=1
  tar -C /tmp/learn -xJf .learn/s8/prog_it78.tar.xz  # session 7's PPO progress, it. 78 only
  python3 bench/gradient_noise.py --checkpoint "$(ls -d /tmp/learn/ppo/train__ppo_prog__*/ | tail -1)checkpoints/iter_000078" \
    --episodes 384 --num-envs 16 --reward progress --seed 2 --out /tmp/out/gradient_noise_prog78_384.json \
    > /tmp/out/gradient_noise_prog78_384.log 2>&1; log "gradient noise 384 rc=$?"
  arm 1 grpo glr sparse 24 1e-4 ) &
( sleep "$STOP_S"; pkill -TERM -f "[p]po_openvla.py|[g]rpo_openvla.py"; log "SIGTERM sent" ) &
wait
log DONE
