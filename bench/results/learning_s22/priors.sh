#!/usr/bin/env bash
# Issue 12, session 22, machine 1 of 2 (one GPU: nvidia-h100-x1 or nvidia-h200): is session 21's prior deaf to the
# instruction by chance or by its state loss? Session 21's prior (session 14's recipe + sft_openvla
# --state-aux-coef 1) grasped (never held 5/200 on `train`) but took the wrong receptacle in 90/200 episodes of
# `train` and 91/200 of the plate, the same rate under either instruction, and its instruction's pull
# (bench/demo_likelihood.py) was a third of session 14's prior's; PPO from it lifted `train` to 0.785 by learning
# "towel" and dropped the plate. Three priors, one change each from session 21's, trained side by side on one
# collection of session 21's demonstrations (1,200: 400 per SFT variant, seeds from 1,000,000, expert noise 0.1,
# with the simulator's states):
#   aux1s2: --state-aux-coef 1, SFT --seed 2    (session 21's recipe, another seed: chance?)
#   aux03:  --state-aux-coef 0.3                 (the state loss at a third of the weight)
#   aux01:  --state-aux-coef 0.1                 (at a tenth)
# each 8,500 SFT steps (batch 128, lr 1e-3, fp32, 3,500 at the peak then cosine to 0; the last step is the prior;
# one validation evaluation at the end, 48 episodes), then 200 greedy test episodes of `train` (the
# wrong-receptacle rate and the success together; bench/failure_modes.py reads them).
#   -> /tmp/out/prior_<name>.tar.xz (prior/, sft.log, prior.json, the SFT events), /tmp/out/evals.tar.xz (the test
#      cells and every log), /tmp/out/driver.log
# One call, carry [".device"]; the brief's prefix, then
#   export PYTHONPATH=/tmp/site:/tmp/job; rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && \
#   (setsid bash /tmp/job/bench/results/learning_s22/priors.sh </dev/null >/tmp/drive.out 2>&1 &); sleep 540
# and poll until DONE; copy /tmp/out/* to $OUT. CANDS lists name:coef:seed triples (default the three above).
# CPU smoke run (2 cores, ~6 min): DEMOS=1 DEMO_ENVS=2 SFT_STEPS=20 SFT_EVAL=10 HOLD=10 EP=2 EVAL_ENVS=2
#   CANDS="a:1:1 b:0.3:1", from a copy in /tmp/job.
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, evalv
EP=${EP:-200}  # test episodes of `train` per prior
CANDS=${CANDS:-"aux1s2:1:2 aux03:0.3:1 aux01:0.1:1"}
export LEARN_DIR=/tmp/learn_s22 EVAL_ENVS=${EVAL_ENVS:-8}
mkdir -p "$LEARN_DIR"
log start
python3 sft_openvla.py --demos-only --variants train red_cube unseen_target --demos-per-task "${DEMOS:-400}" \
  --demo-seed 1000000 --expert-noise 0.1 --state-aux-coef 1 --num-envs "${DEMO_ENVS:-32}" \
  --demos-path "$LEARN_DIR/demos.npz" > /tmp/out/demos.log 2>&1
log "demos rc=$? $(grep -a '\[demos\] [0-9]* demos' /tmp/out/demos.log)"
for c in $CANDS; do
  IFS=: read -r name coef seed <<< "$c"
  mkdir -p "$LEARN_DIR/$name" && ln -sf "$LEARN_DIR/demos.npz" "$LEARN_DIR/$name/demos.npz"
  (
    LEARN_DIR=$LEARN_DIR/$name REUSE_DEMOS=1 PRIOR_PICK=last SFT_STEPS=${SFT_STEPS:-8500} SFT_EVAL=${SFT_EVAL:-8500} \
      ENVS=${EVAL_ENVS} SFT_ARGS="--lr-schedule cosine --lr-hold-steps ${HOLD:-3500} --state-aux-coef $coef --seed $seed \
      --exp-name sft_$name" bash bench/learning.sh prior > "/tmp/out/prior_$name.log" 2>&1
    log "prior $name rc=$?"
    cp runs/sft_"$name"__*/events.* "$LEARN_DIR/$name/" 2>/dev/null
    (cd "$LEARN_DIR/$name" && tar -cJf "/tmp/out/prior_$name.tar.xz" prior sft.log prior.json events.*)
    evalv "eval_key_$name" "$EP" train -- "$LEARN_DIR/$name/prior" > "/tmp/out/eval_key_$name.log" 2>&1
    log "eval $name rc=$?"
  ) &
done
wait
(cd /tmp/learn && tar -cJf /tmp/out/evals.tar.xz eval_key_* -C /tmp/out demos.log $(cd /tmp/out && ls prior_*.log eval_*.log))
log DONE
