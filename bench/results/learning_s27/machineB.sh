#!/usr/bin/env bash
# Session 27, machine B (one nvidia-h100-x1, ~27 minutes held), issue 12: no more training (machine A's rollout
# success had flattened: 40-iteration means 0.59 -> 0.62 over iterations 320-501), the run's last checkpoint
# (iteration 501, 962 k env steps) tested instead:
# (1) the blog's three cells, greedy, 200 episodes each (seeds 10^7 + i; the prior's are session 26's, same seeds):
#     `train`, `unseen_target` (plate), `red_cube`, one evaluation process of 8 env workers each;
# (2) RL4VLA's 16 other variants (openvla_envs.SUITES["rl4vla"] less `train`), 100 greedy episodes each, for the
#     prior and the checkpoint, in four processes of 8 env workers (session 26's machine3.sh grouping; its finished
#     cells of the prior are carried and not re-run, eval_generalization.py's resume), cut at $DEADLINE_S seconds
#     after this script started: the cells finished by then come back.
# Calls back to back, never idle 30 s:
# (a) carry [".learn/s25/prior_pick.tar.xz", ".learn/s27/a/run_state_last.tar.xz", ".learn/s27/s26_other_cells.tar"]:
#     mkdir -p /tmp/stash && cp .learn/s25/prior_pick.tar.xz .learn/s27/a/run_state_last.tar.xz \
#     .learn/s27/s26_other_cells.tar /tmp/stash/
# (b) carry [".device"]: the brief's prefix, then
#     rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && (setsid bash /tmp/job/bench/results/learning_s27/machineB.sh \
#     </dev/null >/tmp/drive.out 2>&1 &); sleep 530
# (c) POLL_S=540 bash bench/results/learning_s26/collect.sh machineB.done  (repeat until DONE)
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, evalv, rl4vla_others
ls /tmp/stash/prior_pick.tar.xz /tmp/stash/run_state_last.tar.xz /tmp/stash/s26_other_cells.tar \
  || { log "stash missing"; touch /tmp/out/machineB.done; exit 3; }
export LEARN_DIR=/tmp/learn_s13 EVAL_ENVS=8  # the run's own --vla-path is /tmp/learn_s13/prior
mkdir -p "$LEARN_DIR" && tar -C "$LEARN_DIR" -xJf /tmp/stash/prior_pick.tar.xz && tar -C "$LEARN_DIR" -xJf /tmp/stash/run_state_last.tar.xz
tar -C /tmp/learn -xf /tmp/stash/s26_other_cells.tar  # -> /tmp/learn/eval_other_{0..3}/runs/<checkpoint>/<variant>.json
ckpt=$(ls -d "$LEARN_DIR"/ppo/train__ppo_state__*/checkpoints/iter_000501)
log "start $ckpt"
for cell in "key train" "plate unseen_target" "red red_cube"; do
  set -- $cell
  evalv "eval_$1_state501" 200 "$2" -- "$ckpt" > "/tmp/out/eval_$1_state501.log" 2>&1 &
done
wait; log "test cells done"
tar -C /tmp/learn -cJf /tmp/out/eval_state501.tar.xz eval_key_state501 eval_plate_state501 eval_red_state501
rl4vla_others $(( ${DEADLINE_S:-1500} - ($(date +%s) - start) )) "$LEARN_DIR/prior" "$ckpt"
log "variants ended"
tar -C /tmp/learn -cJf /tmp/out/eval_other501.tar.xz eval_other_0 eval_other_1 eval_other_2 eval_other_3
touch /tmp/out/machineB.done
