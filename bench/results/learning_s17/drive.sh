#!/usr/bin/env bash
# Session 17, one GPU (nvidia-h100-x1 or nvidia-h200), one step after the other so that no timing shares the
# machine: issue 13's compiled prefill timed at 7B (the rollout with LoRA attached, B = 24 and 96, compiled against
# eager prefill in the same run) and the tiny model's PPO at 24 envs eager and with --compile (the SPS target);
# then issue 12's second seed of session 16's arm `vlr1e5` (bench/results/learning_s13/arm.sh, ARM=vlr1e5s2, no
# demonstrations: its likelihoods would cost ~4 GPU minutes). -> /tmp/out: rollout_compile.json, tiny_ppo_compile.json,
# the arm's logs, run_vlr1e5s2_last.tar.xz (resumable), eval_vlr1e5s2.tar.xz.
# One call, carry [".device", ".learn/s13/prior_s13.tar.xz"]; the brief's prefix, `rm -rf /tmp/job && cp -r . /tmp/job`, then
#   (setsid bash /tmp/job/bench/results/learning_s17/drive.sh </dev/null >/tmp/drive.out 2>&1 &); sleep 500; cat /tmp/out/driver.log
# and poll until DONE (~26 minutes held); copy /tmp/out/* to $OUT, the run's tarball in a call of its own.
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, /tmp/out, log, tp
log start
tp rollout_compile --sections rollout --quant bf16 --lora on --batch-sizes 24 96 --hf-loop-max-batch 0 --rollout-compile
tp tiny_ppo_compile --sections tiny_ppo --tiny-ppo-envs 24 --tiny-ppo-env-parts 1 --tiny-ppo-compile False True
ARM=vlr1e5s2 LIKELIHOOD=0 bash bench/results/learning_s13/arm.sh
