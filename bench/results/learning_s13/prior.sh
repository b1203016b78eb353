#!/usr/bin/env bash
# Issue 12, session 13, machine 1 of 2 (one GPU: nvidia-h200 or nvidia-h100-x1): a new prior, one command from the
# small random model, and its test cells. Session 9's prior `same` was lost with the session-12 sandbox (the
# checkpoints are git-ignored and the device hands nothing on), and it had been made in two steps (session 5's early
# stop at 3,500 constant-lr steps, then 5,000 cosine steps), which a user cannot repeat from one command. This
# prior is that recipe in one stage: 1,200 scripted demos (400 per SFT variant, seeds from 1,000,000, expert
# noise 0.1), SFT from the small random model for 8,500 steps (batch 128, lr 1e-3, fp32), the rate held at its
# peak for $HOLD steps and then decayed to 0 by cosine, the last step taken (PRIOR_PICK=last: no selection):
#   PRIOR_PICK=last SFT_STEPS=8500 SFT_EVAL=8500 ENVS=32 SFT_ARGS="--lr-schedule cosine --lr-hold-steps $HOLD" \
#     bash bench/learning.sh prior
# Session 13 ran HOLD=0 (decay from the first step): loss 0.88, x-token entropy ~2.95 nats on PPO's rollouts,
# 0.29 on `train`, and PPO did not move it. HOLD=3500 (the default) is session 9's two stages in one: 3,500
# steps at the peak (session 5's prior), then 5,000 decayed (`same`: loss 0.78, ~2.0 nats, 0.42).
# Then the test cells every arm is compared with: 200 greedy and 200 sampled (T = 1) episodes of `train`, 200
# greedy of each sibling (unseen_target, red_cube) -> /tmp/out/eval_prior.tar.xz; the prior -> prior_s13.tar.xz.
# One call, carry [".device"]; the brief's prefix, then
#   (setsid bash bench/results/learning_s13/prior.sh </dev/null >/tmp/drive.out 2>&1 &); sleep 540; cat /tmp/out/driver.log
# and poll until DONE; copy /tmp/out/* to $OUT. Session 13 on an nvidia-h200: 1,200 demos in 340 s, SFT at 1,820
# samples/s (10 min), the prior packed at 1,173 s, its evaluations done at 1,444 s (~25 minutes held).
# CPU smoke run (2 cores, ~8 min): LEARN_SMOKE=1 EP=2 EVAL_ENVS=2 DEMO_ENVS=2 HOLD=10, from a copy in /tmp/job.
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, evalv
EP=${EP:-200}  # test episodes per evaluation
export LEARN_DIR=/tmp/learn_s13 EVAL_ENVS=${EVAL_ENVS:-8}
log start
HOLD=${HOLD:-3500}
PRIOR_PICK=last SFT_STEPS=${SFT_STEPS:-8500} SFT_EVAL=${SFT_STEPS:-8500} ENVS=${DEMO_ENVS:-32} \
  SFT_ARGS="--lr-schedule cosine ${HOLD:+--lr-hold-steps $HOLD}" bash bench/learning.sh prior > /tmp/out/prior.log 2>&1
log "prior rc=$?"
pack_prior prior_s13  # -> /tmp/out/prior_s13.tar.xz, sft.log, prior.json
prior_cells  # -> /tmp/out/eval_prior.tar.xz
log DONE
