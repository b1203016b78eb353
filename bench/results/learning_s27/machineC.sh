#!/usr/bin/env bash
# Session 27, machine C (one nvidia-h100-x1, the device budget's last ~17 minutes), issue 12: why the `state` arm
# flattens. From iteration 501 (rollout success, 40-iteration means, 0.59 -> 0.62 over iterations 320-501; `train`
# greedy 0.52 -> 0.57 between iterations 292 and 501), two arms side by side on the one GPU until SIGTERM at $STOP_S:
#   state    the run resumed exactly (LoRA 1e-4, towers 1e-5): the control;
#   state3x  a copy of the same run directory resumed with both step sizes x3 (LoRA 3e-4, towers 3e-5).
# Both start from the same checkpoint and RNG state, so they draw the same env seeds every iteration (the seeds come
# from the run's numpy generator, whose draws do not depend on the policy): their rollout success is a paired
# comparison on the same layouts. If the step size holds the run back, state3x climbs above the control; if not,
# the plateau lies elsewhere (the gradient's noise at 24 envs, or what the small model can resolve).
# Calls back to back, never idle 30 s:
# (a) carry [".learn/s25/prior_pick.tar.xz", ".learn/s27/a/run_state_last.tar.xz"]:
#     mkdir -p /tmp/stash && cp .learn/s25/prior_pick.tar.xz .learn/s27/a/run_state_last.tar.xz /tmp/stash/
# (b) carry [".device"]: the brief's prefix, then
#     rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && (setsid bash /tmp/job/bench/results/learning_s27/machineC.sh \
#     </dev/null >/tmp/drive.out 2>&1 &); sleep 530
# (c) POLL_S=540 bash bench/results/learning_s26/collect.sh machineC.done  (repeat until DONE)
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, arm, pack_run, stop_and_wait, unstash, state_run, twin_run
unstash machineC.done prior_pick.tar.xz run_state_last.tar.xz
run=$(state_run)
run3x=$(twin_run "$run" state3x)
log "resume $run and $run3x side by side"
export ARM_EVALS=none ARM_ITERS=1000
FLAGS="--train-vision --critic state --value-learning-rate 1e-3 --env-parts 2"
arm 0 ppo state "$FLAGS --vision-learning-rate 1e-5 --resume $run" &
ARM_LR=3e-4 arm 0 ppo state3x "$FLAGS --vision-learning-rate 3e-5 --resume $run3x" &
stop_and_wait
log DONE
touch /tmp/out/machineC.done
