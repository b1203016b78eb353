#!/usr/bin/env bash
# Session 27, machine A (one nvidia-h100-x1, ~26 minutes held). Issue 13 first: tiny PPO at 16 envs and --env-parts 2
# on the GPU machine after session 26's CPU step fast paths (session 25: 357 SPS; target 400), ~4 min. Then issue 12:
# session 26's `state` arm (the pick prior, 292 iterations = 561 k env steps, `train` 0.32 -> 0.52, rollout success
# still rising) resumed exactly (optimizer, RNG) until SIGTERM at $DEADLINE_S seconds after this script started; no
# evaluation here (machine B goes on from the run this one hands back and tests the last checkpoint).
# --env-parts 2 from here on: the envs step in two halves, one half's CPU workers simulating while the GPU samples the
# other's; the gradient is the same function of the rollout, only the order of the sampling draws differs
# (ppo_openvla.py's rollout comment), so the run stays the same experiment, ~15 % faster (session 22: 285 -> 337 SPS).
# Calls back to back, never idle 30 s:
# (a) carry [".learn/s25/prior_pick.tar.xz", ".learn/s26/run_state_it292.tar.xz"]:
#     mkdir -p /tmp/stash && cp .learn/s25/prior_pick.tar.xz .learn/s26/run_state_it292.tar.xz /tmp/stash/
# (b) carry [".device"]: the brief's prefix, then
#     rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && (setsid bash /tmp/job/bench/results/learning_s27/machineA.sh \
#     </dev/null >/tmp/drive.out 2>&1 &); sleep 530
# (c) POLL_S=540 bash bench/results/learning_s26/collect.sh machineA.done  (repeat until DONE)
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, tp
ls /tmp/stash/prior_pick.tar.xz /tmp/stash/run_state_it292.tar.xz || { log "stash missing"; touch /tmp/out/machineA.done; exit 3; }
tp tiny_ppo_16 --sections tiny_ppo --tiny-ppo-envs 16 --tiny-ppo-env-parts 2
left=$(( ${DEADLINE_S:-1380} - ($(date +%s) - start) ))
log "PPO until SIGTERM in ${left}s"
PRIOR_TAR=/tmp/stash/prior_pick.tar.xz RUN_TAR=/tmp/stash/run_state_it292.tar.xz ARM_TAG=state \
  ARM_FLAGS="--train-vision --vision-learning-rate 1e-5 --critic state --value-learning-rate 1e-3 --env-parts 2" \
  ARM_EVALS=none ARM_ITERS=1000 STOP_S=$left bash /tmp/job/bench/results/learning_s17/resume.sh
touch /tmp/out/machineA.done
