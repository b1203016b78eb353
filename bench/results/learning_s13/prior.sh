#!/usr/bin/env bash
# Issue 12, session 13, machine 1 of 2 (one GPU: nvidia-h200 or nvidia-h100-x1): a new prior, one command from the
# small random model, and its test cells. Session 9's prior `same` was lost with the session-12 sandbox (the
# checkpoints are git-ignored and the device hands nothing on), and it had been made in two steps (session 5's early
# stop at 3,500 constant-lr steps, then 5,000 cosine steps), which a user cannot repeat from one command. This
# prior is the same recipe in one stage: 1,200 scripted demos (400 per SFT variant, seeds from 1,000,000, expert
# noise 0.1), SFT from the small random model for 8,500 steps (batch 128, lr 1e-3 decayed to 0 by cosine, fp32),
# the last step taken (PRIOR_PICK=last: no selection, no winner's curse):
#   PRIOR_PICK=last SFT_STEPS=8500 SFT_EVAL=8500 ENVS=32 SFT_ARGS="--lr-schedule cosine" bash bench/learning.sh prior
# Then the test cells every arm is compared with: 200 greedy and 200 sampled (T = 1) episodes of `train`, 200
# greedy of each sibling (unseen_target, red_cube) -> /tmp/out/eval_prior.tar.xz; the prior -> prior_s13.tar.xz.
# One call, carry [".device"]; the brief's prefix, then
#   (setsid bash bench/results/learning_s13/prior.sh </dev/null >/tmp/drive.out 2>&1 &); sleep 540; cat /tmp/out/driver.log
# and poll until DONE; copy /tmp/out/* to $OUT. Expected (session 9: 1,200 demos in 292 s, SFT 1,932 samples/s):
# ~4 + 9.5 + 1 minutes for the prior, ~5 for the evaluations.
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, evalv
EP=${EP:-200}  # test episodes per evaluation
export LEARN_DIR=/tmp/learn_s13 EVAL_ENVS=${EVAL_ENVS:-8}
log start
PRIOR_PICK=last SFT_STEPS=${SFT_STEPS:-8500} SFT_EVAL=${SFT_STEPS:-8500} ENVS=${DEMO_ENVS:-32} \
  SFT_ARGS="--lr-schedule cosine" bash bench/learning.sh prior > /tmp/out/prior.log 2>&1
log "prior rc=$?"
cp "$LEARN_DIR/sft.log" /tmp/out/sft.log; cp "$LEARN_DIR/prior.json" /tmp/out/prior.json
tar -C "$LEARN_DIR" -cJf /tmp/out/prior_s13.tar.xz prior
log "packed prior"
evalv eval_key_prior "$EP" train -- "$LEARN_DIR/prior" > /tmp/out/eval_key_prior.log 2>&1 &
EXTRA="--temperature 1.0" evalv eval_t1_prior "$EP" train -- "$LEARN_DIR/prior" > /tmp/out/eval_t1_prior.log 2>&1 &
evalv eval_sib_prior "$EP" unseen_target red_cube -- "$LEARN_DIR/prior" > /tmp/out/eval_sib_prior.log 2>&1 &
wait
log "prior evals done"
tar -C /tmp/learn -cJf /tmp/out/eval_prior.tar.xz eval_key_prior eval_t1_prior eval_sib_prior
log DONE
