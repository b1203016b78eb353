#!/usr/bin/env bash
# Issue 13, proposed for the next session: what session 18 could not time on an H100, one step after the other
# (~15 minutes held): the blog iteration with --compile and without gradient checkpointing at micro-batch 16 (32 ran
# out of memory there beside the 24 render workers) and, in the same run, with checkpointing and whole minibatches
# (session 15's setting, now with the compiled rollout); the rollout with the decode steps compiled (timed on an
# H200 only); the tiny model's PPO at 16 envs with --compile, with and without the env overlap (the 400-SPS target).
# One call, carry [".device"]; the brief's prefix, `rm -rf /tmp/job && cp -r . /tmp/job`, then
#   (setsid bash /tmp/job/bench/results/speed_s18/next_h100.sh </dev/null >/tmp/drive.out 2>&1 &); sleep 500; cat /tmp/out/driver.log
# and poll back to back, copying /tmp/out/*.json to $OUT at each poll, until DONE.
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, /tmp/out, log, tp
log start
tp iteration_nockpt_mb16 --sections iteration --iteration-compile --no-iteration-gradient-checkpointing --iteration-micro-batch 16
tp iteration_ckpt --sections iteration --iteration-compile
tp rollout_compile --sections rollout --quant bf16 --lora on --batch-sizes 24 96 --hf-loop-max-batch 0 --rollout-compile
tp tiny_ppo_compile --sections tiny_ppo --tiny-ppo-envs 16 --tiny-ppo-env-parts 1 2 --tiny-ppo-compile True
log DONE
