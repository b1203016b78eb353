#!/usr/bin/env bash
# Issue 12, queued by session 12: where PPO-ptx may keep RL's lift, for one nvidia-h200-x2 machine (2 GPUs, 32
# cores). Session 12 measured, from session 9's prior `same` (0.42 greedy / 0.44 sampled), towers trainable at 5e-5,
# LoRA lr 1e-4, 24 envs, 230 k env steps (it. 120): PPO-ptx with coefficient 1 on all three SFT variants' demos held
# the policy at the demonstrations (their NLL 6.0 nats per action, the prior's 6.3) and nothing moved (train 0.44 /
# 0.42 sampled, plate 0.28, red 0.32; its BC-only control likewise). bench/demo_likelihood.py showed why: RL's gain
# lies away from the expert's actions on `train` itself (session 11's tower arm: +1.7 nats per action on `train`'s
# demonstrations, +1.5 on red_cube's) and most under the plate instruction (+2.9, the x token +1.4 of it), while the
# instruction still steers the policy as much as before (KL(towel || plate) ~0.74-0.87 nats on the expert's states
# in every arm). One arm per GPU, both from the prior, 120 iterations (the blog's budget, as session 12):
#   GPU 0, tag ptxplate: coefficient 1 on the plate demonstrations only (--ptx-variants unseen_target): pin the
#     behaviour that broke and leave the towel instructions free for RL (red_cube's policy hardly reads the colour:
#     KL(red || green) ~0.05 nats, so its demonstrations would pin `train`'s behaviour too).
#   GPU 1, tag ptx01: coefficient 0.1 on all three: a restoring force weak enough for RL's ~2 nats?
# Compare with session 11's tower arm (coefficient 0, same seeds and flags) and session 12's ptx1 (coefficient 1).
# Demonstrations first (~3.5 min on the machine): 64 per SFT variant, seeds from 1,000,000 and expert noise 0.1,
# as session 12. Then each arm's last checkpoint: 200 greedy and 200 sampled (T = 1) episodes of `train`, 200
# greedy of each sibling, and bench/demo_likelihood.py on the demonstrations (-> /tmp/out/demo_likelihood.json).
# One call, carry [".device", ".learn/s9/prior_same.tar.xz"] (59 MB):
#   for f in .device/gl/*.deb; do dpkg -x $f /; done; ldconfig; mkdir -p /tmp/site /tmp/job /tmp/out &&
#   tar -xJf .device/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:/tmp/job PYTHONUNBUFFERED=1 &&
#   tar --exclude=./.device --exclude=./runs -cf - . | tar -C /tmp/job -xf - && cd /tmp/job &&
#   (setsid bash bench/results/learning_s13/drive.sh </dev/null >/tmp/drive.out 2>&1 &); sleep 560; cat /tmp/out/driver.log
# then `sleep 540; cat /tmp/out/driver.log`, then poll until DONE (session 12: 120 iterations at ~7.4 s, evaluation
# ~5.5 min; ~25 of the 30 device minutes) and copy /tmp/out/*.tar.xz and a tar of the logs and JSON to $OUT.
# CPU smoke run of this driver (2 cores): LEARN_SMOKE=1 EP=2 EVAL_ENVS=2 DEMOS_PTX=1 DEMO_ENVS=1, from a copy in /tmp/job.
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, evalv, pack_run, arm, unpack_prior_same, ptx_demos,
  # stop_and_wait
STOP_S=${STOP_S:-1050}  # a safety net: 120 iterations took ~890 s in session 12
EP=${EP:-200}  # test episodes per evaluation
export LEARN_DIR=/tmp/learn_same EVAL_ENVS=${EVAL_ENVS:-8} ARM_ITERS=${ARM_ITERS:-120}
unpack_prior_same  # -> $LEARN_DIR/prior
ptx_demos  # -> $LEARN_DIR/ptx_demos.npz
PTX="--train-vision --vision-learning-rate 5e-5 --ptx-demos $LEARN_DIR/ptx_demos.npz"
arm 0 ppo ptxplate "$PTX --ptx-coef 1 --ptx-variants unseen_target" &
arm 1 ppo ptx01 "$PTX --ptx-coef 0.1" &
stop_and_wait
# how far each arm's last checkpoint moved from the demonstrations, per variant, and the instruction's pull
# (bench/demo_likelihood.py; session 12 ran it on the CPU for 15 min, here it takes seconds)
python3 bench/demo_likelihood.py --demos "$LEARN_DIR/ptx_demos.npz" --checkpoints "$LEARN_DIR/prior" \
  "$(ls -d "$LEARN_DIR"/ppo/train__ppo_ptxplate__*/ | tail -1)" "$(ls -d "$LEARN_DIR"/ppo/train__ppo_ptx01__*/ | tail -1)" \
  --labels prior ptxplate ptx01 --out /tmp/out/demo_likelihood.json > /tmp/out/demo_likelihood.log 2>&1
log "demo_likelihood rc=$?"
log DONE
