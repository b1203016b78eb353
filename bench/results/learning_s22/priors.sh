#!/usr/bin/env bash
# Issue 12, session 22, machine 1 of 2 (one GPU: nvidia-h100-x1 or nvidia-h200): small priors made side by side on
# one collection of demonstrations, each then tested on 200 greedy episodes of `train`, the plate (unseen_target) and
# the red cube. Why: session 21's prior (session 14's recipe + sft_openvla --state-aux-coef 1) grasped (never held
# 5/200 on `train`) but took the wrong receptacle in 90/200 episodes of `train` and 91/200 of the plate, and PPO
# from it learnt "towel" (train 0.43 -> 0.785, plate 0.42 -> 0.13).
# The demonstrations: 400 per SFT variant (train, red_cube, unseen_target), seeds from 1,000,000, expert noise 0.1,
# with the simulator's states (session 21's, step for step), stored raw; DETOUR=p adds sft_openvla's decoy
# detours (--expert-detour-prob p, deviation 8) to the executed expert. CANDS lists the priors, name:coef:seed
# (the state loss's weight, the SFT seed), each 8,500 SFT steps (batch 128, lr 1e-3, fp32, 3,500 at the peak then
# cosine to 0; the last step is the prior; one validation evaluation at the end, 48 episodes).
#   -> /tmp/out/prior_<name>.tar.xz (prior/, sft.log, prior.json, the SFT events), /tmp/out/evals.tar.xz (the test
#      cells eval_{key,plate,red}_<name> and every log), /tmp/out/driver.log
# Session 22 ran CANDS="aux03:0.3:1" (the state loss at 0.3; 23 minutes held on one nvidia-h100-x1; the first
# machine, running three priors at ~1,000 samples/s each, went back idle between two polls): `train` 0.475, the
# plate 0.505, red cube 0.94, never held 0/200, wrong receptacle 99 and 92 of 200; bench/receptacle_choice.py: the
# wrong receptacle is mostly the one nearer the cube's start (BENCHMARKS.md section 4).
# Next (session 23): DETOUR=0.5 CANDS="det05:0.3:1": the same prior with half the demonstrations detoured over
# the decoy: does it read the instruction (bench/receptacle_choice.py's split even, wrong receptacle down) and
# still grasp? Then, if so, on machine 2 the arm from it:
#   ARM=state LIKELIHOOD=0 PRIOR_TAR=.learn/s22/prior_det05.tar.xz bash bench/results/learning_s13/arm.sh
# (carry that tarball by the stash trick of bench/results/learning_s17/resume.sh's header: .device and the tree
# leave ~3 MiB of the 64).
# One call, carry [".device"]; the brief's prefix, then
#   export PYTHONPATH=/tmp/site:/tmp/job; rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && \
#   (DETOUR=0.5 CANDS="det05:0.3:1" setsid bash /tmp/job/bench/results/learning_s22/priors.sh </dev/null \
#    >/tmp/drive.out 2>&1 &); sleep 540
# and poll with calls back to back (a machine left idle 30 s goes back) until DONE, ~22 minutes for one prior
# (demos ~6, SFT ~9.5 at ~1,950 samples/s, cells ~3.5); copy /tmp/out/* to $OUT. Two priors side by side train at
# ~1,000 samples/s each (~17 minutes): they do not fit one 30-minute machine with the demonstrations.
# CPU smoke run (2 cores, ~6 min): DEMOS=1 DEMO_ENVS=2 SFT_STEPS=20 SFT_EVAL=10 HOLD=10 EP=2 EVAL_ENVS=2
#   CANDS="a:1:1 b:0.3:1", from a copy in /tmp/job.
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, evalv
EP=${EP:-200}  # test episodes of `train` per prior
CANDS=${CANDS:-"aux1s2:1:2 aux03:0.3:1 aux01:0.1:1"}
export LEARN_DIR=/tmp/learn_s22 EVAL_ENVS=${EVAL_ENVS:-8}
mkdir -p "$LEARN_DIR"
log start
python3 sft_openvla.py --demos-only --variants train red_cube unseen_target --demos-per-task "${DEMOS:-400}" \
  --demo-seed 1000000 --expert-noise 0.1 --expert-detour-prob "${DETOUR:-0}" --state-aux-coef 1 \
  --num-envs "${DEMO_ENVS:-32}" --no-compress-demos --demos-path "$LEARN_DIR/demos.npz" > /tmp/out/demos.log 2>&1
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
    evalv "eval_key_$name" "$EP" train -- "$LEARN_DIR/$name/prior" > "/tmp/out/eval_key_$name.log" 2>&1 &
    evalv "eval_plate_$name" "$EP" unseen_target -- "$LEARN_DIR/$name/prior" > "/tmp/out/eval_plate_$name.log" 2>&1 &
    evalv "eval_red_$name" "$EP" red_cube -- "$LEARN_DIR/$name/prior" > "/tmp/out/eval_red_$name.log" 2>&1 &
    wait
    log "evals $name done"
  ) &
done
wait
(cd /tmp/learn && tar -cJf /tmp/out/evals.tar.xz eval_* -C /tmp/out demos.log $(cd /tmp/out && ls prior_*.log eval_*.log))
log DONE
