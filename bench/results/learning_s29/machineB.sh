#!/usr/bin/env bash
# Session 29, machine B (one nvidia-h100-x1, ~27 minutes held), issue 12: machine A's `state48` arm (48 envs per
# update) resumed exactly from its last checkpoint until SIGTERM at $STOP_S seconds, then that checkpoint tested on the
# blog's three cells (greedy, 200 episodes each, seeds 10^7 + i, one evaluation process of 8 env workers per cell, as
# learning_s28/machineB.sh's `cells`; after training, not beside it: 48 + 24 workers rendering on one GPU exhaust its
# channel ids).
# Calls back to back, never idle 30 s:
# (a) carry [".learn/s25/prior_pick.tar.xz", ".learn/s29/a/run_state48_last.tar.xz"] (machine A's output):
#     mkdir -p /tmp/stash && cp .learn/s25/prior_pick.tar.xz .learn/s29/a/run_state48_last.tar.xz /tmp/stash/
# (b) carry [".device"]: the brief's prefix, then
#     rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && (setsid bash /tmp/job/bench/results/learning_s29/machineB.sh \
#     </dev/null >/tmp/drive.out 2>&1 &); sleep 530
# (c) POLL_S=540 bash bench/results/learning_s26/collect.sh machineB.done  (repeat until DONE)
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, evalv, arm, pack_run, stop_and_wait, unstash, state_run
unstash machineB.done prior_pick.tar.xz run_state48_last.tar.xz
run=$(state_run state48)
export ARM_EVALS=none ARM_ITERS=2000 ARM_ENVS=48 EVAL_ENVS=8 EP=200 STOP_S=${STOP_S:-1000}
log "resume $run until SIGTERM in ${STOP_S}s"
arm 0 ppo state48 "--train-vision --vision-learning-rate 1e-5 --critic state --value-learning-rate 1e-3 --env-parts 2 --resume $run" &
stop_and_wait
last=$(ls -d "$run"/checkpoints/iter_* | grep -E 'iter_[0-9]+$' | sort | tail -1)
name=state48_$(basename "$last" | sed 's/iter_0*//')
log "cells of $last"
for c in "key train" "plate unseen_target" "red red_cube"; do
  set -- $c
  evalv "eval_$1_$name" "$EP" "$2" -- "$last" > "/tmp/out/eval_$1_$name.log" 2>&1 &
done
wait; log "cells $name done"
tar -C /tmp/learn -cJf "/tmp/out/eval_$name.tar.xz" "eval_key_$name" "eval_plate_$name" "eval_red_$name"
log DONE
touch /tmp/out/machineB.done
