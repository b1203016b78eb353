#!/usr/bin/env bash
# Session 25, machine 2 (one nvidia-h100-x1, ~24 minutes held): issue 13's tiny PPO SPS with session 24's mapping fix
# (OpenVLAConfig.base_vocab_size without a LlamaConfig per read), at --env-parts 2 and 4; then issue 12's `state` arm
# (PPO --critic state, towers at 1e-5, LoRA 1e-4, 24 envs, 120 iterations = 230 k env steps; sessions 20, 21, 23)
# from session 24's stored prior (the detour recipe's instruction-following draw: `train` 0.81, plate 0.74, red cube
# 0.90): the controlled comparison with session 24's `lmstate` (the same arm with the towers frozen) from the same
# prior instance. Its test cells (`train` greedy and T = 1, both siblings greedy, 200 episodes each) and the prior's
# sampled `train` cell (T = 1, not measured in session 24), started when training ends.
# (Machine 1 of this session was lost: the machine went back idle while its second half was being rescheduled by
# hand; its drivers are in git history, `git show d548a87:bench/results/learning_s25/machine1.sh`; machine3.sh redid it.)
# Two calls back to back: (a) carry [".learn/s24/prior_det05.tar.xz"]:
#   mkdir -p /tmp/stash && cp .learn/s24/prior_det05.tar.xz /tmp/stash/
# (b) carry [".device"]: the brief's prefix, then
#   rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && (setsid bash /tmp/job/bench/results/learning_s25/machine2.sh \
#   </dev/null >/tmp/drive.out 2>&1 &); sleep 530
# and poll with calls back to back (never leave the machine idle 30 s) until /tmp/out/machine2.done.
# Next session, from the stored pick (learning_s25/artifacts/README.md): the same two calls with .learn/s25/prior_pick.tar.xz
# stashed and `PRIOR_TAR=/tmp/stash/prior_pick.tar.xz PRIOR_CELLS=all BENCH=0` before setsid (session 26:
# learning_s26/machine1.sh); ARM (default state) names another arm of learning_s13/arm.sh, one arm only.
set -u
cd /tmp/job
mkdir -p /tmp/out
export PYTHONUNBUFFERED=1
if [ "${BENCH:-1}" = 1 ]; then
  python3 bench/throughput.py --sections tiny_ppo --tiny-ppo-envs 16 --tiny-ppo-env-parts 2 4 \
    --out /tmp/out/tiny_ppo_16.json > /tmp/out/tiny_ppo_16.log 2>&1
  echo "tiny_ppo rc=$? $(date +%T)" >> /tmp/out/driver.log
fi
( # the prior's cells beside the arm's, once its training has ended: PRIOR_CELLS=t1 (what session 25 ran: the
  # sampled `train` cell) or all (drive_common's prior_cells: `train` greedy and sampled, both siblings; for a new
  # prior such as the stored pick)
  source bench/results/drive_common.sh  # log, evalv, prior_cells
  export LEARN_DIR=/tmp/learn_s13 EVAL_ENVS=8 EP=200
  while ! grep -q "ppo ${ARM:-state} rc" /tmp/out/driver.log 2>/dev/null; do sleep 5; done
  if [ "${PRIOR_CELLS:-t1}" = all ]; then prior_cells; else
    EXTRA="--temperature 1.0" evalv eval_t1_prior "$EP" train -- "$LEARN_DIR/prior" > /tmp/out/eval_t1_prior.log 2>&1
    log "prior t1 rc=$?"
    tar -C /tmp/learn -cJf /tmp/out/eval_t1_prior.tar.xz eval_t1_prior
  fi
) &
STOP_S=${STOP_S:-1000} ARM=${ARM:-state} LIKELIHOOD=0 PRIOR_TAR=${PRIOR_TAR:-/tmp/stash/prior_det05.tar.xz} \
  bash bench/results/learning_s13/arm.sh
wait
touch /tmp/out/machine2.done
