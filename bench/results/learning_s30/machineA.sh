#!/usr/bin/env bash
# Prepared in session 29 for the next device session (one nvidia-h200-x2, ~25 minutes held; it counts in full). Not
# yet run. Issue 12's last owed arms: GRPO and REINFORCE from the pick prior (learning_s25), each at the blog's budget
# (120 iterations x 24 envs x 80 steps = 230 k env steps) on `train` only, with the PPO run's recipe where it applies
# (LoRA lr 1e-4, --train-vision at 1e-5; GRPO groups of 8, 16 minibatches; no critic in either), side by side, one per
# GPU; then each run's last checkpoint on the blog's three cells (greedy, 200 episodes, seeds 10^7 + i; the prior's
# cells are session 26's), three evaluation processes of 8 env workers per arm. A safety SIGTERM at $STOP_S (1140 s:
# the runs save and exit 0) leaves the evaluations time.
# Calls back to back, never idle 30 s (nothing else between them):
# (a) carry [".learn/s25/prior_pick.tar.xz"]: mkdir -p /tmp/stash && cp .learn/s25/prior_pick.tar.xz /tmp/stash/
# (b) carry [".device"]: the brief's prefix, then
#     rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && (setsid bash /tmp/job/bench/results/learning_s30/machineA.sh \
#     </dev/null >/tmp/drive.out 2>&1 &); sleep 530
# (c) POLL_S=540 bash bench/results/learning_s26/collect.sh machineA.done  (repeat until DONE)
# Then: bench/learning_table.py with the new cells (--labels <run>/checkpoints/iter_000120=grpo_it120 ...).
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, arm, evalv, pack_run, unstash
unstash machineA.done prior_pick.tar.xz
export ARM_EVALS="key plate red" ARM_ITERS=120 EVAL_ENVS=8 EP=200
vision="--train-vision --vision-learning-rate 1e-5 --env-parts 2"
log "grpo and reinforce from $LEARN_DIR/prior, 120 iterations each"
arm 0 grpo pick "$vision" & p_grpo=$!
arm 1 reinforce pick "$vision" & p_reinforce=$!
# not drive_common's stop_and_wait (whose `wait` would also wait out its own sleep)
( sleep "${STOP_S:-1140}"; pkill -TERM -f "[g]rpo_openvla.py|[r]einforce_openvla.py"; log "SIGTERM sent" ) & p_stop=$!
wait $p_grpo $p_reinforce; kill $p_stop 2>/dev/null
log DONE
touch /tmp/out/machineA.done
