#!/usr/bin/env bash
# Prepared in session 29 for the next device session; run on the CPU only, shrunk (LEARN_SMOKE=1, EP=2 and EVAL_ENVS=2
# in place of 200 and 8: both arms, their packs and their cells came back). Issue 12's last owed arms: GRPO and REINFORCE
# from the pick prior (learning_s25), each at the blog's budget (120 iterations x 24 envs x 80 steps = 230 k env
# steps) on `train` only, with the PPO run's recipe where it applies (LoRA lr 1e-4, --train-vision at 1e-5; GRPO
# groups of 8, 16 minibatches; no critic in either); then each run's last checkpoint on the blog's three cells
# (greedy, 200 episodes, seeds 10^7 + i; the prior's cells are session 26's), three evaluation processes of 8 env
# workers per arm. A safety SIGTERM at $STOP_S (1140 s: the runs save and exit 0) leaves the evaluations time.
# $ALGOS (default "grpo reinforce") runs one arm per GPU, side by side: both on one nvidia-h200-x2 (~25 minutes
# held, counted in full), or one per nvidia-h100-x1 (ALGOS=grpo, then ALGOS=reinforce on a second machine; one chip
# counts 50-67 % of its held time, so two of them cost less device time than one x2, in twice the wall time).
# As run in session 30 (two nvidia-h100-x1, 50 % counted): ALGOS=grpo (GRPO 120 iterations at ~11 s each, its safety
# SIGTERM disarmed by hand so that it reached 120), then ALGOS=reinforce ARM_EXTRA="--micro-batch-size 256" (4.7 s each).
# The tracked tree (13.5 MB) and .device (54 MB) no longer fit one carry of 64 MiB, so site.tar.xz travels in two
# parts (split -b 30000000 .device/site.tar.xz .device/split/site.part.), the first stashed with the prior:
# (a) carry [".learn/s25/prior_pick.tar.xz", ".device/split/site.part.aa"]: mkdir -p /tmp/stash && cp both there
# (b) carry [".device/split/site.part.ab", ".device/gl"]: for f in .device/gl/*.deb; do dpkg -x $f /; done; ldconfig;
#     mkdir -p /tmp/site && cat /tmp/stash/site.part.aa .device/split/site.part.ab | tar -xJ -C /tmp/site &&
#     export PYTHONPATH=/tmp/site:/tmp/job; rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && (ALGOS=grpo setsid bash \
#     /tmp/job/bench/results/learning_s30/machineA.sh </dev/null >/tmp/drive.out 2>&1 &); sleep 520
# (c) POLL_S=540 bash bench/results/learning_s26/collect.sh machineA.done  (repeat until DONE; never idle 30 s)
# Then bench/learning_table.py with the new cells (BENCHMARKS.md section 4, "Session 30").
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, arm, evalv, pack_run, unstash
unstash machineA.done prior_pick.tar.xz
export ARM_EVALS="key plate red" ARM_ITERS=120 EVAL_ENVS=8 EP=200
vision="--train-vision --vision-learning-rate 1e-5 --env-parts 2 ${ARM_EXTRA:-}"
# ARM_EXTRA: e.g. "--micro-batch-size 256" (memory only, the same gradient up to rounding): GRPO's default of 16
# (sized for 7B) made its update 6 s of its 11 s per iteration on the tiny model (session 30, ~100 micro-steps)
log "${ALGOS:=grpo reinforce} from $LEARN_DIR/prior, 120 iterations each"
gpu=0 arms=()
for algo in $ALGOS; do
  arm $gpu "$algo" "$algo" "$vision" & arms+=($!)  # the arm's tag is its algorithm: run_<algo>_last.tar.xz, eval_<algo>
  gpu=$((gpu + 1))
done
# not drive_common's stop_and_wait (whose `wait` would also wait out its own sleep)
sigterm_after "${STOP_S:-1140}"; p_stop=$!
wait "${arms[@]}"; kill $p_stop 2>/dev/null
log DONE
touch /tmp/out/machineA.done
