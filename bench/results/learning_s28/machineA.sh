#!/usr/bin/env bash
# Session 28, machine A (one nvidia-h100-x1, ~26 minutes held), issue 12: does the gradient's noise hold the `state`
# run at ~0.65? From iteration 584 (1.12 M env steps; rollout success 0.65 over iterations 502-584), two arms side by
# side on the one GPU until SIGTERM at $STOP_S:
#   state    the run resumed exactly (24 envs, LoRA 1e-4, towers 1e-5, 16 minibatches): the control;
#   state48  a copy of the same run directory resumed with 48 envs, everything else equal: the same 16 optimizer
#            steps per epoch on minibatches twice as large, so each step's gradient has half the variance.
# Sessions 6-10 and 20 measured the policy gradient's noise scale at ~270 episodes (state critic) against 24 per
# update; session 27 found three times the step size worse (paired, -0.10). If the noise holds the run, state48
# climbs about twice as fast per iteration, i.e. as fast per env step (the curves are logged against env steps); if
# something else holds it (what the small model can resolve, the critic), state48 gains per iteration what the
# control gains, i.e. half as much per env step. Not paired (48 envs draw other seeds than 24).
# As run (2026-11-24): side by side, both arms died at start-up: 72 env workers rendering on one GPU exhausted its
# channel ids (dmesg: "Failed to allocate Channel ID on heap", SAPIEN: "CUDA error ... out of memory"); 48 workers
# (session 27's two 24-env arms) work. So this machine ran state48 alone (SOLO=1 below, 9.2 s per iteration, 79
# iterations to 1.425 M env steps before SIGTERM), and machine B runs the control alone to the same env step.
# Calls back to back, never idle 30 s:
# (a) carry [".learn/s25/prior_pick.tar.xz", ".learn/s27/run_state_it584.tar.xz"]:
#     mkdir -p /tmp/stash && cp .learn/s25/prior_pick.tar.xz .learn/s27/run_state_it584.tar.xz /tmp/stash/
# (b) carry [".device"]: the brief's prefix, then
#     rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && (setsid bash /tmp/job/bench/results/learning_s28/machineA.sh \
#     </dev/null >/tmp/drive.out 2>&1 &); sleep 530
# (c) POLL_S=540 bash bench/results/learning_s26/collect.sh machineA.done  (repeat until DONE)
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, arm, pack_run, stop_and_wait, unstash, state_run, twin_run
unstash machineA.done prior_pick.tar.xz run_state_it584.tar.xz
run=$(state_run)
run48=$(twin_run "$run" state48)
log "resume $run48 (and $run unless SOLO=1)"
export ARM_EVALS=none ARM_ITERS=2000 STOP_S=${STOP_S:-1380}
FLAGS="--train-vision --vision-learning-rate 1e-5 --critic state --value-learning-rate 1e-3 --env-parts 2"
[ "${SOLO:-1}" = 1 ] || arm 0 ppo state "$FLAGS --resume $run" &
ARM_ENVS=48 arm 0 ppo state48 "$FLAGS --resume $run48" &
stop_and_wait
log DONE
touch /tmp/out/machineA.done
