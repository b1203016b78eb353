#!/usr/bin/env bash
# Session 24, machine 2 (one nvidia-h100-x1): issue 12's `lmstate` arm (PPO with --critic state, the LoRA on the LM
# alone: the blog's setting) from the detour prior remade on machine 1 (learning_s23/machine1.sh, unchanged), then
# issue 13's tiny-model timings (the tokens_to_actions(.cpu()) fix, the opt-in prefill graph's check and time,
# tiny PPO's SPS). Two calls back to back: (a) carry [".learn/s24/prior_det05.tar.xz"]:
#   mkdir -p /tmp/stash && cp .learn/s24/prior_det05.tar.xz /tmp/stash/
# (b) carry [".device"]: the brief's prefix, then
#   rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && (setsid bash /tmp/job/bench/results/learning_s24/machine2.sh \
#   </dev/null >/tmp/drive.out 2>&1 &); sleep 530
# and poll until /tmp/out/machine2.done; each throughput JSON lands in /tmp/out as soon as it is written.
set -u
cd /tmp/job
mkdir -p /tmp/out
STOP_S=${STOP_S:-1000} ARM=lmstate LIKELIHOOD=0 PRIOR_TAR=/tmp/stash/prior_det05.tar.xz bash bench/results/learning_s13/arm.sh
export PYTHONUNBUFFERED=1
python3 bench/throughput.py --sections tiny_rollout tiny_loop --tiny-ppo-envs 16 --tiny-ppo-env-parts 1 2 \
  --out /tmp/out/tiny_loop_16.json > /tmp/out/tiny_loop_16.log 2>&1
echo "tiny_loop rc=$? $(date +%T)" >> /tmp/out/driver.log
python3 bench/throughput.py --sections tiny_loop --tiny-ppo-envs 16 --tiny-ppo-env-parts 2 --tiny-loop-decode cuda_graph_prefill \
  --out /tmp/out/tiny_loop_16_prefill_graph.json > /tmp/out/tiny_loop_16_prefill_graph.log 2>&1
echo "tiny_loop prefill graph rc=$? $(date +%T)" >> /tmp/out/driver.log
python3 bench/throughput.py --sections tiny_ppo --tiny-ppo-envs 16 --tiny-ppo-env-parts 2 \
  --out /tmp/out/tiny_ppo_16.json > /tmp/out/tiny_ppo_16.log 2>&1
echo "tiny_ppo rc=$? $(date +%T)" >> /tmp/out/driver.log
touch /tmp/out/machine2.done
