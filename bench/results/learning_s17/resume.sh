#!/usr/bin/env bash
# Issue 12, the next session's run (one GPU; nvidia-h200 runs the tiny PPO at ~5.9 s per iteration, an H100 at
# 7.3-8.0 s): session 17's `vlr1e5s2` (PPO --train-vision --vision-learning-rate 1e-5 --seed 2 from session 14's
# prior, 120 iterations, `train` 0.535 = the prior's level) resumed exactly (optimizer, RNG) to $ARM_ITERS (240:
# twice the blog's budget, 460 k env steps), then its last checkpoint on 200 test episodes per cell in $ARM_EVALS
# (default `key t1`: `train` greedy and sampled). The question it answers: is PPO from this prior slow or stuck?
# Sessions 6-10 measured the policy gradient's noise scale at 650-2,000 episodes against 24 per update, and the one
# run past 460 k env steps (session 10, LM-only, 603 k) lifted `train` 0.42 -> 0.555 (p = 0.009).
# Carry [".device", ".learn/s13/prior_s13.tar.xz", ".learn/s17/run_vlr1e5s2_last.tar.xz"]; the brief's prefix,
# `rm -rf /tmp/job && cp -r . /tmp/job`, then
#   (setsid bash /tmp/job/bench/results/learning_s17/resume.sh </dev/null >/tmp/drive.out 2>&1 &); sleep 500; cat /tmp/out/driver.log
# and poll until DONE; copy /tmp/out/run_vlr1e5s2_last.tar.xz to $OUT in a call of its own (resumable again: a
# third session can go on from it with RUN_TAR), the rest in another.
# Checked on a 2-core CPU machine (session 17): the tarball loads and PPO starts at iteration 121; its 24 env workers
# then ran out of that machine's 23 GB, so no iteration finished there (the GPU machines have 128 GB).
# Session 18 ran it (bench/results/learning_s18/drive.sh, nvidia-h200, 5.7 s per iteration): `train` 0.585 greedy /
# 0.595 sampled at iteration 240 (p = 0.48 each), rollout success flat (BENCHMARKS.md section 4); the run, resumable
# again, is .learn/s18/run_vlr1e5s2_it240.tar.xz (RUN_TAR=... ARM_ITERS=360 would go on).
# Session 21's `state` arm (from session 21's prior; `train` 0.785 at 120 iterations, rollout success still rising)
# resumes with the same script, not yet run (the next session's): the two tarballs (~21 MB) and .device exceed one
# call's 64 MiB, so a first call carries [".learn/s21/prior_s21.tar.xz", ".learn/s21/arm/run_state_last.tar.xz"] and
# copies them to /tmp/stash; a second, back to back, carries [".device"], copies the tree to /tmp/job and the stash
# into /tmp/job/.learn/s21/ (and arm/), then runs
#   PRIOR_TAR=.learn/s21/prior_s21.tar.xz RUN_TAR=.learn/s21/arm/run_state_last.tar.xz ARM_TAG=state \
#   ARM_FLAGS="--train-vision --vision-learning-rate 1e-5 --critic state --value-learning-rate 1e-3" \
#   ARM_EVALS="key t1 sib" bash /tmp/job/bench/results/learning_s17/resume.sh
# (~14 min of PPO at 6.7 s per iteration on an H100, ~6 min of evaluations). The run's --vla-path is
# /tmp/learn_s13/prior, where PRIOR_TAR unpacks: never resume it on session 14's prior.
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, evalv, pack_run, arm, stop_and_wait
STOP_S=${STOP_S:-1500}  # a safety net: SIGTERM saves the run and exits 0 (resumable), the evaluations then follow
EP=${EP:-200}  # test episodes per evaluation
export LEARN_DIR=/tmp/learn_s13 EVAL_ENVS=${EVAL_ENVS:-12} ARM_ITERS=${ARM_ITERS:-240}  # the run's own --vla-path
ARM_TAG=${ARM_TAG:-vlr1e5s2}  # the run's arm name (bench/results/learning_s13/arm.sh) and its flags:
ARM_FLAGS=${ARM_FLAGS:-"--train-vision --vision-learning-rate 1e-5 --seed 2"}
mkdir -p "$LEARN_DIR" && tar -C "$LEARN_DIR" -xJf "${PRIOR_TAR:-.learn/s13/prior_s13.tar.xz}"  # -> $LEARN_DIR/prior
tar -C "$LEARN_DIR" -xJf "${RUN_TAR:-.learn/s17/run_vlr1e5s2_last.tar.xz}"  # -> $LEARN_DIR/ppo/train__ppo_<tag>__*/
run=$(ls -d "$LEARN_DIR"/ppo/train__ppo_"$ARM_TAG"__*/ | tail -1)
log "resume $run to iteration $ARM_ITERS"
ARM_EVALS=${ARM_EVALS:-key t1} arm 0 ppo "$ARM_TAG" "$ARM_FLAGS --resume $run" &
stop_and_wait
log DONE
