#!/usr/bin/env bash
# Session 26, machine 3 (one nvidia-h100-x1, ~11 minutes held: the device budget's rest), issue 12: the pick prior
# and machine 2's `state` arm at iteration 292 on RL4VLA's 16 other test variants (openvla_envs.SUITES["rl4vla"]
# less `train`), 100 greedy episodes each (seeds 10^7 + i), in four evaluation processes of 8 env workers at once;
# the cells finished within $EVAL_S seconds come back (each (checkpoint, variant) cell is its own file under runs/).
# Calls back to back, never idle 30 s:
# (a) carry [".learn/s25/prior_pick.tar.xz", ".learn/s26/it292_eval.tar.xz"]:
#     mkdir -p /tmp/stash && cp .learn/s25/prior_pick.tar.xz .learn/s26/it292_eval.tar.xz /tmp/stash/
# (b) carry [".device"]: the brief's prefix, then
#     rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && bash /tmp/job/bench/results/learning_s26/machine3.sh && cp /tmp/out/* $OUT/
# (it292_eval.tar.xz: the checkpoint's adapter, towers, value head and metadata, no optimizer, from
# machine 2's run_state_last.tar.xz.)
# Ran in session 26 (~8 min held, EVAL_S=470): ~400 env steps/s in all, 5 of the 16 variants finished for both
# checkpoints (BENCHMARKS.md section 4, session 26).
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, evalv, rl4vla_others
export LEARN_DIR=/tmp/learn_s13 EVAL_ENVS=8
mkdir -p "$LEARN_DIR" && tar -C "$LEARN_DIR" -xJf /tmp/stash/prior_pick.tar.xz && tar -C "$LEARN_DIR" -xJf /tmp/stash/it292_eval.tar.xz
ckpt=$(ls -d "$LEARN_DIR"/ppo/train__ppo_state__*/checkpoints/iter_000292)
log "start $ckpt"
rl4vla_others "${EVAL_S:-480}" "$LEARN_DIR/prior" "$ckpt"
log "evals ended"
tar -C /tmp/learn -cJf /tmp/out/eval_other.tar.xz eval_other_0 eval_other_1 eval_other_2 eval_other_3
tar -C /tmp/out -cf /tmp/out/other_logs.tar driver.log eval_other_0.log eval_other_1.log eval_other_2.log eval_other_3.log
rm -f /tmp/out/*.log
