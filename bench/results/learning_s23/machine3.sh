#!/usr/bin/env bash
# Session 23, machine 3 (one nvidia-h100-x1, ~9 minutes held): where does the plate's loss after PPO live? The arm
# `state` from the detour prior (bench/results/learning_s13/arm.sh ARM=state PRIOR_TAR=<prior_det05>, iteration 120)
# took `train` 0.405 -> 0.64 and the plate 0.355 -> 0.255. Its two hybrids (bench/hybrid_checkpoints.py --name it120:
# the run's LM adapter with the prior's towers, the run's towers with the prior's LM), each on the 200 greedy test
# episodes of `train` and of the plate (seeds 10^7 + i, as every cell) -> /tmp/out/hybrid_evals.tar.xz. Then issue
# 13's host breakdown of tiny PPO's rollout step (bench/throughput.py --sections tiny_loop, 16 envs, --env-parts 1
# and 2) -> /tmp/out/tiny_loop_16.json.
# Inputs in /tmp/stash/stash.tar (prior_det05.tar.xz: the prior, unpacked to /tmp/learn_s13/prior where the run's
# openvla_rl.json finds its base; hybrids/: the two checkpoints). Two calls back to back: (a) carry
# [".learn/s23/stash.tar"]: `mkdir -p /tmp/stash && cp .learn/s23/stash.tar /tmp/stash/`; (b) carry [".device"]:
# the brief's prefix, then `rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && (setsid bash
# /tmp/job/bench/results/learning_s23/machine3.sh </dev/null >/tmp/drive.out 2>&1 &); sleep 480`; poll until DONE.
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, evalv
export EVAL_ENVS=${EVAL_ENVS:-8}
EP=${EP:-200}
mkdir -p /tmp/learn_s13 /tmp/stash/x && tar -C /tmp/stash/x -xf /tmp/stash/stash.tar
tar -C /tmp/learn_s13 -xJf /tmp/stash/x/prior_det05.tar.xz && cp -r /tmp/stash/x/hybrids/* /tmp/learn/
log start
for h in lora_prior_towers towers_prior_lm; do
  evalv "eval_key_$h" "$EP" train -- "/tmp/learn/it120_$h" > "/tmp/out/eval_key_$h.log" 2>&1 &
  evalv "eval_plate_$h" "$EP" unseen_target -- "/tmp/learn/it120_$h" > "/tmp/out/eval_plate_$h.log" 2>&1 &
done
wait
log "hybrid evals done"
(cd /tmp/learn && tar -cJf /tmp/out/hybrid_evals.tar.xz eval_key_* eval_plate_*)
tp tiny_loop_16 --sections tiny_loop --tiny-ppo-envs 16 --tiny-ppo-env-parts 1 2
log DONE
