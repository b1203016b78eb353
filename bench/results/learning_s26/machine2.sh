#!/usr/bin/env bash
# Session 26, machine 2 (one nvidia-h100-x1, ~26 minutes held), issue 12: machine 1's `state` arm from the in-range
# pick (`train` 0.32 -> 0.35 greedy at 120 iterations, plate 0.135 -> 0.265, rollout success still rising 0.345 ->
# 0.472 over the run's fifths) resumed exactly (optimizer, RNG) toward 320 iterations (615 k env steps; SIGTERM at
# STOP_S saves it earlier), then its last checkpoint on the same three test cells (`train` greedy and T = 1, both
# siblings greedy, 200 episodes each). The question: is PPO from this prior slow or stuck (issue 12's cause 4, budget)?
# Calls back to back, never idle 30 s:
# (a) carry [".learn/s25/prior_pick.tar.xz", ".learn/s26/m1/run_state_last.tar.xz"]:
#     mkdir -p /tmp/stash && cp .learn/s25/prior_pick.tar.xz .learn/s26/m1/run_state_last.tar.xz /tmp/stash/
# (b) carry [".device"]: the brief's prefix, then
#     rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && (setsid bash /tmp/job/bench/results/learning_s26/machine2.sh \
#     </dev/null >/tmp/drive.out 2>&1 &); sleep 530
# (c) bash bench/results/learning_s26/collect.sh machine2.done  (repeat until DONE)
# Ran in session 26 (~25 min held; SIGTERM at iteration 292): `train` 0.52 (p = 7e-5), plate 0.30, red cube 0.405
# (BENCHMARKS.md section 4, session 26); the run, resumable, is in git history (artifacts/README.md).
PRIOR_TAR=/tmp/stash/prior_pick.tar.xz RUN_TAR=/tmp/stash/run_state_last.tar.xz ARM_TAG=state \
  ARM_FLAGS="--train-vision --vision-learning-rate 1e-5 --critic state --value-learning-rate 1e-3" \
  ARM_EVALS="key t1 sib" ARM_ITERS=${ARM_ITERS:-320} STOP_S=${STOP_S:-1080} EVAL_ENVS=8 \
  bash /tmp/job/bench/results/learning_s17/resume.sh
touch /tmp/out/machine2.done
