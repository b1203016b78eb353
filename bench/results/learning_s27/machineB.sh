#!/usr/bin/env bash
# Session 27, machine B (one nvidia-h100-x1, the device budget's rest), issue 12: machine A's run resumed exactly
# until SIGTERM at $STOP_S seconds, then its last checkpoint on session 26's test cells (`train` greedy and T = 1,
# both siblings greedy; 200 episodes each, seeds 10^7 + i; the prior's cells are session 26's, same seeds).
# Calls back to back, never idle 30 s:
# (a) carry [".learn/s25/prior_pick.tar.xz", ".learn/s27/a/run_state_last.tar.xz"]:
#     mkdir -p /tmp/stash && cp .learn/s25/prior_pick.tar.xz .learn/s27/a/run_state_last.tar.xz /tmp/stash/
# (b) carry [".device"]: the brief's prefix, then
#     rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && (setsid bash /tmp/job/bench/results/learning_s27/machineB.sh \
#     </dev/null >/tmp/drive.out 2>&1 &); sleep 530
# (c) POLL_S=540 bash bench/results/learning_s26/collect.sh machineB.done  (repeat until DONE)
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log
ls /tmp/stash/prior_pick.tar.xz /tmp/stash/run_state_last.tar.xz || { log "stash missing"; touch /tmp/out/machineB.done; exit 3; }
PRIOR_TAR=/tmp/stash/prior_pick.tar.xz RUN_TAR=/tmp/stash/run_state_last.tar.xz ARM_TAG=state \
  ARM_FLAGS="--train-vision --vision-learning-rate 1e-5 --critic state --value-learning-rate 1e-3 --env-parts 2" \
  ARM_EVALS="key t1 sib" ARM_ITERS=1000 STOP_S=${STOP_S:-1000} EVAL_ENVS=8 bash /tmp/job/bench/results/learning_s17/resume.sh
touch /tmp/out/machineB.done
