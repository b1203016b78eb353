#!/usr/bin/env bash
# Session 26, machine 1 (one nvidia-h100-x1, ~25 minutes held), issue 12: the in-range prior session 25 picked by a
# pre-registered rule (learning_s25/pick.py: the detour recipe's SFT seed 2 at step 3,000; `train` 15/48 and plate
# 9/48 on validation seeds) on its four test cells (`train` greedy and T = 1, both siblings greedy, 200 episodes
# each, seeds 10^7 + i), and the `state` arm from it (PPO --critic state, towers at 1e-5, LoRA 1e-4, 24 envs, 120
# iterations = 230 k env steps) on the same cells. Hypothesis (session 25): from a prior that still fails by placing,
# the motor gain RL gives is shared by the siblings and outweighs the receptacle erosion seen from the strong prior.
# Calls back to back, never idle 30 s:
# (a) carry [".learn/s25/prior_pick.tar.xz"]: mkdir -p /tmp/stash && cp .learn/s25/prior_pick.tar.xz /tmp/stash/
# (b) carry [".device"]: the brief's prefix, then
#     rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && (setsid bash /tmp/job/bench/results/learning_s26/machine1.sh \
#     </dev/null >/tmp/drive.out 2>&1 &); sleep 530
# (c) bash bench/results/learning_s26/collect.sh machine2.done  (repeat until it says DONE; it copies /tmp/out to $OUT)
# ARM=lmstate (the towers frozen: the blog's setting) runs the controlled twin the same way (machine 2).
# Ran in session 26 (22 min held): the pick 0.32 / plate 0.135 / red 0.26; the arm at 120 iterations 0.35 / 0.265 (p =
# 0.0017) / 0.235 (BENCHMARKS.md section 4, session 26).
PRIOR_TAR=/tmp/stash/prior_pick.tar.xz PRIOR_CELLS=all BENCH=0 ARM=${ARM:-state} \
  exec bash /tmp/job/bench/results/learning_s25/machine2.sh
