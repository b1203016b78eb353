#!/usr/bin/env bash
# Issue 12, session 12: PPO-ptx, for one nvidia-h200-x2 machine (2 GPUs, 32 cores). Session 11 measured, from
# session 9's prior `same` (0.42 greedy / 0.44 sampled on test), 24 envs, sparse reward, LoRA lr 1e-4, towers and
# projector trainable at 5e-5 (--train-vision): it. 164 (315 k env steps) lifted `train` to 0.615 greedy / 0.74
# sampled and dropped the siblings (plate 0.315 -> 0.03, red cube 0.30 -> 0.175): the policy went to the towel
# whatever the instruction said, which `train`'s reward cannot see. PPO-ptx (ppo_openvla.py deviation 8) adds the
# behaviour-cloning loss of the prior's own SFT demonstrations (all three SFT variants, both receptacles named) to
# every minibatch. One arm per GPU, both from the prior with session 11's tower arm's flags otherwise:
#   GPU 0, tag ptx1: PPO + ptx (coefficient 1): does `train` still rise, and do the siblings stay (or rise)?
#   GPU 1, tag bc1: the same with --pg-coef 0: behaviour cloning alone on the same demos, the same updates and
#     rollouts: how much of any change is more SFT rather than RL (the prior's SFT ended at loss 0.78, not at 0).
# The session 11 tower arm (no ptx) is the third corner: same seeds, flags and rates, its curve in
# bench/results/learning_s11.
# Demonstrations first (~1.5 min): 64 per SFT variant, seeds from 1,000,000 and expert noise 0.1 as the prior's SFT
# data (bench/learning.sh prior; session 9's `same` prior trained on these layouts), so ptx adds no new layout.
# Both arms stop by SIGTERM at $STOP_S seconds after they start; then each arm's last checkpoint: 200 greedy and
# 200 sampled (T = 1) episodes of `train`, 200 greedy of each sibling (the prior's cells are session 9's and 10's).
# One call, carry [".device", ".learn/s9/prior_same.tar.xz"] (59 MB):
#   for f in .device/gl/*.deb; do dpkg -x $f /; done; ldconfig; mkdir -p /tmp/site /tmp/job /tmp/out &&
#   tar -xJf .device/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:/tmp/job PYTHONUNBUFFERED=1 &&
#   tar --exclude=./.device --exclude=./runs -cf - . | tar -C /tmp/job -xf - && cd /tmp/job &&
#   (setsid bash bench/results/learning_s12/drive.sh </dev/null >/tmp/drive.out 2>&1 &); sleep 540; cat /tmp/out/driver.log
# then poll (sleep; cat /tmp/out/driver.log) until DONE, and copy /tmp/out/*.tar.xz and a tar of the logs to $OUT
# before the machine's 30 minutes end (each file back <= 16 MiB: pack_run keeps the runs under it).
# CPU smoke run of this driver (2 cores): LEARN_SMOKE=1 EP=2 EVAL_ENVS=2 DEMOS_PTX=1 DEMO_ENVS=1 STOP_S=300, from a copy in /tmp/job.
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, evalv, pack_run, arm, unpack_prior_same, ptx_demos,
  # stop_and_wait
STOP_S=${STOP_S:-1020}  # 17 min of training (~150 iterations per arm); ~6 min of evaluation follow
EP=${EP:-200}  # test episodes per evaluation
export LEARN_DIR=/tmp/learn_same EVAL_ENVS=${EVAL_ENVS:-8}
unpack_prior_same  # -> $LEARN_DIR/prior
ptx_demos  # -> $LEARN_DIR/ptx_demos.npz
PTX="--train-vision --vision-learning-rate 5e-5 --ptx-coef 1 --ptx-demos $LEARN_DIR/ptx_demos.npz"
arm 0 ppo ptx1 "$PTX" &
arm 1 ppo bc1 "$PTX --pg-coef 0" &
stop_and_wait
log DONE
