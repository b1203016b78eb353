#!/usr/bin/env bash
# Session 28, machine B (one nvidia-h100-x1, ~27 minutes held), issue 12, the noise control's other arm: the control
# (`state`, 24 envs, everything as in sessions 26-27) resumed exactly from iteration 584 to iteration 742, i.e. to
# 1,424,640 env steps, where machine A's 48-env arm (`state48`, from the same iteration 584) stopped (iteration 663).
# Meanwhile the 48-env arm's last checkpoint is tested on the blog's three cells (greedy, 200 episodes each, seeds
# 10^7 + i, one evaluation process of 8 env workers per cell: 24 + 24 workers render on the GPU, which works; 72 did
# not, machine A); then the control's last checkpoint on the same cells.
# Calls back to back, never idle 30 s:
# (a) carry [".learn/s25/prior_pick.tar.xz", ".learn/s27/run_state_it584.tar.xz", ".learn/s28/a/run_state48_last.tar.xz"]:
#     mkdir -p /tmp/stash && cp .learn/s25/prior_pick.tar.xz .learn/s27/run_state_it584.tar.xz \
#     .learn/s28/a/run_state48_last.tar.xz /tmp/stash/
# (b) carry [".device"]: the brief's prefix, then
#     rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && (setsid bash /tmp/job/bench/results/learning_s28/machineB.sh \
#     </dev/null >/tmp/drive.out 2>&1 &); sleep 530
# (c) POLL_S=540 bash bench/results/learning_s26/collect.sh machineB.done  (repeat until DONE)
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, evalv, arm, pack_run, unstash, state_run
unstash machineB.done prior_pick.tar.xz run_state_it584.tar.xz run_state48_last.tar.xz
export EVAL_ENVS=8 EP=200
run=$(state_run)
ckpt48=$(state_run state48)/checkpoints/iter_000663
cells() {  # name checkpoint: the three test cells at once -> /tmp/out/eval_<name>.tar.xz
  local name=$1 ckpt=$2 c
  for c in "key train" "plate unseen_target" "red red_cube"; do
    set -- $c
    evalv "eval_$1_$name" "$EP" "$2" -- "$ckpt" > "/tmp/out/eval_$1_$name.log" 2>&1 &
  done
  wait; log "cells $name done"
  set -- "$name"
  tar -C /tmp/learn -cJf "/tmp/out/eval_$1.tar.xz" "eval_key_$1" "eval_plate_$1" "eval_red_$1"
}
log "control $run to iteration 742; cells of $ckpt48"
cells state48_663 "$ckpt48" & p_cells=$!
ARM_EVALS=none ARM_ITERS=742 \
  arm 0 ppo state "--train-vision --vision-learning-rate 1e-5 --critic state --value-learning-rate 1e-3 --env-parts 2 --resume $run" &
p_arm=$!
# a safety net, not drive_common's stop_and_wait (whose `wait` would also wait out its own sleep): SIGTERM saves the
# run and exits 0 if iteration 742 is not reached by $STOP_S
( sleep "${STOP_S:-1200}"; pkill -TERM -f "[p]po_openvla.py"; log "SIGTERM sent" ) & p_stop=$!
wait $p_cells $p_arm; kill $p_stop 2>/dev/null
last=$(ls -d "$run"/checkpoints/iter_* | grep -E 'iter_[0-9]+$' | sort | tail -1)
cells "state_$(basename "$last" | sed 's/iter_0*//')" "$last"
log DONE
touch /tmp/out/machineB.done
