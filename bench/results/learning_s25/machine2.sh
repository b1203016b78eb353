#!/usr/bin/env bash
# Session 25, machine 2 (one nvidia-h100-x1, ~25 minutes held): issue 13's tiny PPO SPS with session 24's mapping fix
# (OpenVLAConfig.base_vocab_size without a LlamaConfig per read), then issue 12's `state` arm (PPO --critic state,
# towers at 1e-5, LoRA 1e-4, 24 envs, 120 iterations = 230 k env steps; sessions 20, 21, 23) from machine 1's pick
# (learning_s25/machine1.sh: a prior in the issue's range that reads the instruction), its test cells (`train`
# greedy and T = 1, both siblings greedy, 200 episodes each). PRIOR_CELLS=1: also the prior's four test cells, when
# machine 1 could not finish them. Two calls back to back: (a) carry [".learn/s25/prior_pick.tar.xz"]:
#   mkdir -p /tmp/stash && cp .learn/s25/prior_pick.tar.xz /tmp/stash/
# (b) carry [".device"]: the brief's prefix, then
#   rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && (setsid bash /tmp/job/bench/results/learning_s25/machine2.sh \
#   </dev/null >/tmp/drive.out 2>&1 &); sleep 530
# and poll until /tmp/out/machine2.done.
set -u
cd /tmp/job
mkdir -p /tmp/out
export PYTHONUNBUFFERED=1
if [ "${BENCH:-1}" = 1 ]; then
  python3 bench/throughput.py --sections tiny_ppo --tiny-ppo-envs 16 --tiny-ppo-env-parts 2 4 \
    --out /tmp/out/tiny_ppo_16.json > /tmp/out/tiny_ppo_16.log 2>&1
  echo "tiny_ppo rc=$? $(date +%T)" >> /tmp/out/driver.log
fi
STOP_S=${STOP_S:-1000} ARM=state LIKELIHOOD=0 PRIOR_TAR=/tmp/stash/prior_pick.tar.xz bash bench/results/learning_s13/arm.sh
if [ "${PRIOR_CELLS:-0}" = 1 ]; then
  source bench/results/drive_common.sh  # log, evalv
  export LEARN_DIR=/tmp/learn_s13 EVAL_ENVS=8 EP=200
  evalv eval_key_prior "$EP" train -- "$LEARN_DIR/prior" > /tmp/out/eval_key_prior.log 2>&1 &
  EXTRA="--temperature 1.0" evalv eval_t1_prior "$EP" train -- "$LEARN_DIR/prior" > /tmp/out/eval_t1_prior.log 2>&1 &
  evalv eval_plate_prior "$EP" unseen_target -- "$LEARN_DIR/prior" > /tmp/out/eval_plate_prior.log 2>&1 &
  evalv eval_red_prior "$EP" red_cube -- "$LEARN_DIR/prior" > /tmp/out/eval_red_prior.log 2>&1 &
  wait
  tar -C /tmp/learn -cJf /tmp/out/eval_prior.tar.xz eval_key_prior eval_t1_prior eval_plate_prior eval_red_prior
  log "prior test cells done"
fi
touch /tmp/out/machine2.done
