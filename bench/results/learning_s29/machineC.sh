#!/usr/bin/env bash
# Session 29, machine C (one nvidia-h100-x1, the session's last ~8 device minutes), issue 12: the final checkpoint
# (`state48`, iteration 900, 2.33 M env steps) on RL4VLA's 16 other test variants, 100 greedy episodes each (seeds
# 10^7 + i), four evaluation processes of 8 env workers, each cut after $SECONDS_EVAL (400) seconds: the cells finished
# by then are kept. Each process takes first the variants the prior solved at all (session 27's table), so that a cut
# drops the ones at 0/100 before and after RL at iteration 501.
# Calls back to back:
# (a) carry [".learn/s25/prior_pick.tar.xz", ".learn/s29/b/run_state48_last.tar.xz"] (machine B's output):
#     mkdir -p /tmp/stash && cp .learn/s25/prior_pick.tar.xz .learn/s29/b/run_state48_last.tar.xz /tmp/stash/
# (b) carry [".device"]: the brief's prefix, then
#     rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && bash /tmp/job/bench/results/learning_s29/machineC.sh; cp /tmp/out/*.tar.xz /tmp/out/driver.log "$OUT"/
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, evalv, unstash, state_run
unstash machineC.done prior_pick.tar.xz run_state48_last.tar.xz
export EVAL_ENVS=8
ckpt=$(state_run state48)/checkpoints/iter_000900
groups=("distractive_receptacle unseen_instructions dynamic_texture_strong unseen_table"
        "object_reposition multi_object_seen unseen_objects unseen_robot_init_pose"
        "similar_to_training dynamic_texture_weak unseen_receptacles multi_object_unseen"
        "unseen_position dynamic_noise_weak dynamic_noise_strong multi_receptacle_unseen")
log "variants of $ckpt"
i=0
for g in "${groups[@]}"; do
  timeout "${SECONDS_EVAL:-400}" bash -c "source bench/results/drive_common.sh; evalv eval_other_$i 100 $g -- $ckpt" \
    > "/tmp/out/eval_other_$i.log" 2>&1 &
  i=$((i + 1))
done
wait; log "variants ended"
tar -C /tmp/learn -cJf /tmp/out/eval_other900.tar.xz eval_other_0 eval_other_1 eval_other_2 eval_other_3
touch /tmp/out/machineC.done
