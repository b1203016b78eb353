#!/usr/bin/env bash
# Session 25, machine 3 (one nvidia-h100-x1, ~16 minutes held, the session's last device minutes): machine 1's prior
# pick (`git show d548a87:bench/results/learning_s25/machine1.sh`, lost) made lean enough to fit: the same demonstrations (the detour recipe, 1,200),
# one SFT draw (seed $SEED) of $STEPS steps ($HOLD at the peak 1e-3, then cosine to 0, state loss 0.3, a checkpoint
# every 500 steps), then, once SFT has ended, the checkpoints at $PICK_STEPS (the last included) on $EP_PICK greedy
# validation episodes of `train` and of the plate, side by side at 4 envs each, and learning_s25/pick.py's
# pre-registered rule (`train` in [0.30, 0.50], then the most plate successes). No test cells: the next session
# measures the pick on the test seeds before its arm. Outputs in /tmp/out: prior_pick.tar.xz (prior/, pick.json,
# sft.log, the SFT events), evals_pick.tar.xz, pick.json, driver.log; /tmp/out/machine3.done at the end.
# One call, carry [".device"]; the brief's prefix, then
#   rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && (setsid bash /tmp/job/bench/results/learning_s25/machine3.sh \
#   </dev/null >/tmp/drive.out 2>&1 &); sleep 540
# and poll with calls back to back (a machine idle 30 s goes back, with everything on it), copying to $OUT.
# CPU smoke run (2 cores, ~6 min): DEMOS=1 DEMO_ENVS=2 STEPS=20 HOLD=10 PICK_STEPS="10 20" EP_PICK=2 EVAL_ENVS=2
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, evalv
export LEARN_DIR=/tmp/learn_s25 EVAL_ENVS=${EVAL_ENVS:-4}
SEED=${SEED:-2} STEPS=${STEPS:-5000} HOLD=${HOLD:-2000}
PICK_STEPS=${PICK_STEPS:-"2000 3000 4000 5000"} EP_PICK=${EP_PICK:-48}
SIZES='{"dino": {"embed_dim": 96, "depth": 4, "num_heads": 3}, "siglip": {"embed_dim": 96, "depth": 4, "num_heads": 3},
        "llm": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4}}'
mkdir -p "$LEARN_DIR/s$SEED"
log start
python3 sft_openvla.py --demos-only --variants train red_cube unseen_target --demos-per-task "${DEMOS:-400}" \
  --demo-seed 1000000 --expert-noise 0.1 --expert-detour-prob 0.5 --state-aux-coef 1 \
  --num-envs "${DEMO_ENVS:-32}" --no-compress-demos --demos-path "$LEARN_DIR/demos.npz" > /tmp/out/demos.log 2>&1
log "demos rc=$? $(grep -a '\[demos\] [0-9]* demos' /tmp/out/demos.log)"
# bench/learning.sh prior's small random model (seed 0) and SFT command, with --save-every and no evaluation in it
python3 -c "import json, openvla_patch as o; o.make_tiny_openvla('$LEARN_DIR/small-random', seed=0, sizes=json.loads('''$SIZES'''))"
python3 sft_openvla.py --vla-path "$LEARN_DIR/small-random" --variants train red_cube unseen_target --demos-per-task "${DEMOS:-400}" \
  --demo-seed 1000000 --expert-noise 0.1 --num-envs 8 --max-steps "$STEPS" --batch-size 128 --learning-rate 1e-3 \
  --lr-schedule cosine --lr-hold-steps "$HOLD" --state-aux-coef 0.3 --seed "$SEED" --exp-name "sft_s25_s$SEED" \
  --precision fp32 --no-image-aug --eval-every -1 --save-every 500 --demos-path "$LEARN_DIR/demos.npz" --reuse-demos \
  --output-dir "$LEARN_DIR/s$SEED/sft" > "$LEARN_DIR/s$SEED/sft.log" 2>&1
log "SFT rc=$? $(grep -a '^\[done\]' "$LEARN_DIR/s$SEED/sft.log" | cut -c1-40)"
for s in $PICK_STEPS; do
  ck=$(printf '%s/s%s/sft-step%06d' "$LEARN_DIR" "$SEED" "$s"); name=$s
  [ "$s" = "$STEPS" ] && { ck=$LEARN_DIR/s$SEED/sft; name=last; }
  EXTRA="--seed 20000000" evalv "pick_s${SEED}_$name" "$EP_PICK" train unseen_target -- "$ck" > "/tmp/out/pick_s${SEED}_$name.log" 2>&1 &
done
wait
log "pick cells done"
cp runs/sft_s25_s"$SEED"__*/events.* "$LEARN_DIR/s$SEED/" 2>/dev/null
(cd /tmp/learn && tar -cJf /tmp/out/evals_pick.tar.xz pick_* -C /tmp/out $(cd /tmp/out && ls pick_*.log demos.log))
python3 bench/results/learning_s25/pick.py --evals /tmp/learn/pick_* --learn-dir "$LEARN_DIR" --out /tmp/out/pick.json \
  >> /tmp/out/driver.log 2>&1 || { log "pick failed"; exit 1; }
cp /tmp/out/pick.json "$LEARN_DIR/prior.json"
(cd "$LEARN_DIR" && tar -cJf /tmp/out/prior_pick.tar.xz prior prior.json "s$SEED"/sft.log "s$SEED"/events.*)
log "picked $(python3 -c "import json; print(json.load(open('/tmp/out/pick.json'))['chosen'])")"
touch /tmp/out/machine3.done
log DONE
