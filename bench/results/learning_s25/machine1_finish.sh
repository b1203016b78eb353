#!/usr/bin/env bash
# Session 25, machine 1's second half, started by hand at t = 1,050 s: the watchers' one-after-another validation
# cells ran at ~3.2 min each beside two SFT runs (not the ~1.5 min planned) and would not have finished in the
# 30-minute hold. So the driver and its watchers were stopped (the SFT runs and the running 3,500-step cells went on)
# and this script ran the 4,500-step and last checkpoints' cells side by side, then machine1.sh's remaining steps
# unchanged (pack, pick, the pick's four test cells).
source /tmp/job/bench/results/drive_common.sh  # /tmp/job, log, evalv
export LEARN_DIR=/tmp/learn_s25 EVAL_ENVS=8
EP=200 SEEDS="2 3"
log "finish: start"
for s in $SEEDS; do
  EXTRA="--seed 20000000" evalv "pick_s${s}_4500" 48 train unseen_target -- "$LEARN_DIR/s$s/sft-step004500" > "/tmp/out/pick_s${s}_4500.log" 2>&1 &
done
while pgrep -f "sft_openvla.py --vla-path" > /dev/null; do sleep 3; done
log "finish: SFT done $(grep -h '^\[done\]' "$LEARN_DIR"/s*/sft.log | cut -c1-40 | tr '\n' ' ')"
for s in $SEEDS; do
  EXTRA="--seed 20000000" evalv "pick_s${s}_last" 48 train unseen_target -- "$LEARN_DIR/s$s/sft" > "/tmp/out/pick_s${s}_last.log" 2>&1 &
  cp runs/sft_s25_s"$s"__*/events.* "$LEARN_DIR/s$s/" 2>/dev/null
  (cd "$LEARN_DIR/s$s" && tar -cJf "/tmp/out/prior_s${s}_last.tar.xz" sft sft.log events.*)
done
wait
while pgrep -f "pick_s" > /dev/null; do sleep 3; done  # the 3,500-step cells the stopped watchers had started
log "finish: pick cells done"
(cd /tmp/learn && tar -cJf /tmp/out/evals_pick.tar.xz pick_* -C /tmp/out $(cd /tmp/out && ls pick_*.log demos.log))
python3 bench/results/learning_s25/pick.py --evals /tmp/learn/pick_* --learn-dir "$LEARN_DIR" --out /tmp/out/pick.json \
  >> /tmp/out/driver.log 2>&1 || { log "pick failed"; exit 1; }
cp /tmp/out/pick.json "$LEARN_DIR/prior.json"
(cd "$LEARN_DIR" && tar -cJf /tmp/out/prior_pick.tar.xz prior prior.json s*/sft.log)
log "picked $(python3 -c "import json; print(json.load(open('/tmp/out/pick.json'))['chosen'])")"
evalv eval_key_prior "$EP" train -- "$LEARN_DIR/prior" > /tmp/out/eval_key_prior.log 2>&1 &
EXTRA="--temperature 1.0" evalv eval_t1_prior "$EP" train -- "$LEARN_DIR/prior" > /tmp/out/eval_t1_prior.log 2>&1 &
evalv eval_plate_prior "$EP" unseen_target -- "$LEARN_DIR/prior" > /tmp/out/eval_plate_prior.log 2>&1 &
evalv eval_red_prior "$EP" red_cube -- "$LEARN_DIR/prior" > /tmp/out/eval_red_prior.log 2>&1 &
wait
log "prior test cells done"
tar -C /tmp/learn -cJf /tmp/out/eval_prior.tar.xz eval_key_prior eval_t1_prior eval_plate_prior eval_red_prior
touch /tmp/out/machine1.done
log DONE
