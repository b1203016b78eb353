#!/usr/bin/env bash
# Issue 13, session 15: what session 14 built, timed on one GPU (nvidia-h100-x1), one measurement after the other
# so that the ratios come from one machine: the update micro-batch profile eager, compiled with symbolic sizes
# (the scripts' --compile) and compiled per shape; the blog's iteration eager and with --compile; the tiny model's
# PPO with the env overlap (--env-parts 1 and 2 at 16 and 24 envs). -> /tmp/out/*.json, a log per step.
# One call, carry [".device"]; the brief's prefix, then
#   (setsid bash bench/results/speed_s15/drive.sh </dev/null >/tmp/drive.out 2>&1 &); sleep 540; cat /tmp/out/driver.log
# and poll (each poll copying /tmp/out/*.json to $OUT) until DONE (~16 minutes held).
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, /tmp/out, log, tp
log start
tp iteration_compiled --sections iteration --iteration-compile
tp iteration_eager --sections iteration
tp tiny_ppo --sections tiny_ppo
tp profile_eager --sections profile --profile-micro-batch 32 --profile-top 30 --no-profile-compile
tp profile_compiled --sections profile --profile-micro-batch 32 --profile-top 30 --profile-compile
tp profile_compiled_static --sections profile --profile-micro-batch 32 --profile-top 30 --profile-compile --profile-compile-static
log DONE
