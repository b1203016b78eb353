#!/usr/bin/env bash
# Session 18, one nvidia-h200, one step after the other so that no timing shares the machine:
# 1. issue 12: session 17's `vlr1e5s2` resumed exactly from iteration 120 to 240 (460 k env steps) and evaluated on
#    `train` greedy and sampled (bench/results/learning_s17/resume.sh; the run's tarball is stashed in /tmp/stash by
#    an earlier call, since .device + prior + run exceed one call's 64 MiB carry);
# 2. issue 13: the rollout at 7B with LoRA, prefill and decode steps through the compiled layer halves (not timed on
#    a GPU before), against eager in the same run;
# 3. issue 13: the blog iteration with --compile, without gradient checkpointing, micro-batch 32.
# Calls: (a) carry [".learn/s17/run_vlr1e5s2_last.tar.xz"]: `mkdir -p /tmp/stash && cp .learn/s17/*.tar.xz /tmp/stash/`;
# (b) carry [".device", ".learn/s13/prior_s13.tar.xz"]: the brief's prefix, `rm -rf /tmp/job && cp -r . /tmp/job`, then
#   (setsid bash /tmp/job/bench/results/learning_s18/drive.sh </dev/null >/tmp/drive.out 2>&1 &); sleep 500; cat /tmp/out/driver.log
# and poll back to back; copy the run's tarball to $OUT in a call of its own, the rest in another.
# Ran in session 18 (~24 of 30 device minutes; the H100 part in a second machine): BENCHMARKS.md sections 1 and 4.
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, /tmp/out, log
log start
RUN_TAR=/tmp/stash/run_vlr1e5s2_last.tar.xz STOP_S=${STOP_S:-960} bash bench/results/learning_s17/resume.sh
log "resume finished"
timeout 420 python3 bench/throughput.py --sections rollout --quant bf16 --lora on --batch-sizes 24 96 --hf-loop-max-batch 0 \
  --rollout-compile --out /tmp/out/rollout_compile_decode.json > /tmp/out/rollout_compile_decode.log 2>&1
log "rollout_compile_decode rc=$?"
timeout 480 python3 bench/throughput.py --sections iteration --iteration-compile --no-iteration-gradient-checkpointing \
  --iteration-micro-batch 32 --out /tmp/out/iteration_compiled_nockpt.json > /tmp/out/iteration_compiled_nockpt.log 2>&1
log "iteration_compiled_nockpt rc=$?"
log "ALL DONE"
