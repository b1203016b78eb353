#!/usr/bin/env bash
# Issue 12, the runs after session 9, for one nvidia-h200-x2 machine (2 GPUs, 32 cores). Session 9's prior `same`
# (session 5's continued for 5,000 SFT steps on its own demos, learning rate decayed to 0: greedy 0.42 and sampled
# 0.44 on 200 test episodes of `train`, vs 0.13 / 0.275 before) and its PPO run (27 iterations at lr 5e-4, flat:
# greedy 0.46, sampled 0.425) are carried as files. One arm per GPU, both PPO with session 5's settings:
#   GPU 0, tag same: that PPO run resumed (optimizer and RNG state) to the blog's budget and past it;
#   GPU 1, tag lr1e4: PPO from the same prior at LoRA lr 1e-4 instead of 5e-4, the learning-rate arm (a 24-episode
#     update is mostly noise, BENCHMARKS.md section 4: smaller steps average more of it out).
# Beside them, the prior on the blog's two siblings (200 greedy episodes each of unseen_target and red_cube).
# First (issue 13, ~2 min, alone on the machine): `bench/env_throughput.py --worker-timing` with 4, 8 and 16
# workers, each worker timing its own step: does the per-worker serial cost measured in session 9 (~1.2 ms per
# added worker) sit inside the workers (their render calls queueing on the GPU) or around them (the main process)?
# Both arms stop by SIGTERM at $STOP_S seconds after they start; then each arm's last checkpoint: 200 greedy and 200 sampled (T = 1)
# episodes of `train`, 200 greedy of each sibling.
# carry: [".device", ".learn/s9/prior_same.tar.xz", ".learn/s9/run_same.tar.xz"]
# On the device (the brief's prefix, then):
#   (setsid bash bench/results/learning_s10/drive.sh </dev/null >/tmp/drive.out 2>&1 &)   # then poll
#   tail /tmp/out/driver.log; copy /tmp/out/* to $OUT before the machine's 30 minutes end
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, evalv
STOP_S=${STOP_S:-1020}  # 17 min of training (~120 iterations per arm at ~8.5 s); ~5 min of evaluation follow
EP=${EP:-200}  # test episodes per evaluation
export LEARN_DIR=/tmp/learn_same EVAL_ENVS=${EVAL_ENVS:-8}
mkdir -p "$LEARN_DIR"
tar -C "$LEARN_DIR" -xJf .learn/s9/prior_same.tar.xz  # -> prior/
tar -C "$LEARN_DIR" -xJf .learn/s9/run_same.tar.xz    # -> ppo/train__ppo_same__1__*/ (checkpoints 15, 27)
arm() {  # gpu tag lr [resume-run]
  local gpu=$1 tag=$2 lr=$3 resume=${4:+--resume $4}
  export CUDA_VISIBLE_DEVICES=$gpu
  TAG=$tag ENVS=24 LR=$lr ITERS=400 SAVE_EVERY=15 RL_ARGS="--eval-every 0 $resume" \
    bash bench/learning.sh ppo > "/tmp/out/ppo_$tag.log" 2>&1; log "ppo $tag rc=$?"
  local last; last=$(pack_run ppo "$tag")
  evalv "eval_key_$tag" "$EP" train -- "$last" > "/tmp/out/eval_key_$tag.log" 2>&1 &
  EXTRA="--temperature 1.0" evalv "eval_t1_$tag" "$EP" train -- "$last" > "/tmp/out/eval_t1_$tag.log" 2>&1 &
  evalv "eval_sib_$tag" "$EP" unseen_target red_cube -- "$last" > "/tmp/out/eval_sib_$tag.log" 2>&1 &
  wait; log "evals $tag done"
  tar -C /tmp/learn -cJf "/tmp/out/eval_$tag.tar.xz" "eval_key_$tag" "eval_t1_$tag" "eval_sib_$tag"
}
log start
for n in 4 8 16; do
  [ "${LEARN_SMOKE:-0}" = 1 ] && break  # CPU smoke runs: no GPU rendering to time
  python3 bench/env_throughput.py --num-workers $n --steps 100 --worker-timing >> /tmp/out/env_worker_timing.jsonl 2>/dev/null
done; log "env worker timing done"
( CUDA_VISIBLE_DEVICES=1 evalv eval_sib_prior "$EP" unseen_target red_cube -- "$LEARN_DIR/prior" \
    > /tmp/out/eval_sib_prior.log 2>&1; log "prior sibling evals rc=$?"
  tar -C /tmp/learn -cJf /tmp/out/eval_prior.tar.xz eval_sib_prior ) &
arm 0 same 5e-4 "$(ls -d "$LEARN_DIR"/ppo/train__ppo_same__*/ | tail -1)" &
arm 1 lr1e4 1e-4 &
( sleep "$STOP_S"; pkill -TERM -f "[p]po_openvla.py"; log "SIGTERM sent" ) &
wait
log DONE
