#!/usr/bin/env bash
# The blog's experiment in miniature, on a small random OpenVLA (offline): give it a weak prior by SFT on
# scripted demos (green and red cubes, towel and plate), run RL on `train` only ("put the green cube on
# the towel") with the sparse success reward, then evaluate prior and RL policies on the suite.
#
# Each stage is one command; stages hand checkpoints to each other through $LEARN_DIR (default runs/learning):
#   bash bench/learning.sh prior      # small random model -> 1,200 expert demos -> SFT, a checkpoint every 500
#                                     # steps, stopped at the first with 30-50 % greedy success on `train`
#                                     # (validation seeds; else the closest to 40 %) -> $LEARN_DIR/prior;
#                                     # PRIOR_PICK=last: no early stop, the last step is the prior (with
#                                     # SFT_ARGS="--lr-schedule cosine --lr-hold-steps 3500" and SFT_STEPS=8500:
#                                     # a converged, sharp prior, no selection; BENCHMARKS.md section 4;
#                                     # add --state-aux-coef 1 to SFT_ARGS for towers that resolve the grasp:
#                                     # session 21's prior, from which PPO --critic state lifted `train`)
#                                     # Sessions 26-29's result (BENCHMARKS.md section 4: `train` 0.32 -> 0.815,
#                                     # both siblings up) used the prior of learning_s25/machine3.sh (detoured
#                                     # demos, --state-aux-coef 0.3, cosine with hold 2000 of 5000, picked at step
#                                     # 3000 by learning_s25/pick.py) and RL_ARGS="--critic state
#                                     # --value-learning-rate 1e-3 --train-vision --vision-learning-rate 1e-5"
#                                     # LR=1e-4 ENVS=24, 120 iterations resumed to 292, 501 and 584
#                                     # (learning_s13/arm.sh's `state` arm, learning_s17/resume.sh,
#                                     # learning_s27/machineA.sh and C), then ENVS=48 to 663 (learning_s28/machineA.sh)
#                                     # and 900 = 2.33 M env steps (learning_s29/machineA.sh and B)
#   bash bench/learning.sh ppo        # PPO on `train` from the prior, 120 x 24 x 80 = 230 k env steps
#   bash bench/learning.sh grpo       # GRPO, the same budget                 (-> $LEARN_DIR/grpo/<run>)
#   bash bench/learning.sh reinforce  # REINFORCE, the same budget            (-> $LEARN_DIR/reinforce/<run>)
#   bash bench/learning.sh eval       # prior vs every RL run on fresh test seeds: 200 episodes on train
#                                     # (eval_key) and on the blog's siblings unseen_target, red_cube (eval_sib),
#                                     # 100 on the other variants (eval_other)
#   bash bench/learning.sh table      # -> bench/results/learning.json (+ .md): counts, Wilson CIs, Fisher p
#   bash bench/learning.sh plot       # training success curves of the RL runs (-> $LEARN_DIR/eval/curves.png)
# Seeds (openvla_envs' seed policy): demos from 1,000,000, SFT's selection evals from VALIDATION_SEED, RL
# rollouts from ROLLOUT_SEEDS, the final table from TEST_SEED: no table ever sees a layout that picked it.
# Env: ITERS (RL iterations, default 120), ENVS (envs per RL run), GROUP (GRPO's group size, 8), LR (LoRA learning rate, 5e-4), SAVE_EVERY, RL_ARGS (extra RL flags, e.g.
# "--no-success-ends-episode" for an ablation arm), TAG (run name suffix), VARIANTS_SFT, DEMOS (per SFT
# variant), SFT_STEPS, SFT_EVAL, EP_SELECT (validation episodes per SFT evaluation: 48 measured a 0.13 prior
# at 0.27 in session 5), SFT_BATCH, PRIOR_FROM (continue SFT from a checkpoint) with DEMO_SEED,
# SFT_LR (1e-3), SFT_ARGS (extra SFT flags), REUSE_DEMOS (1: train on $LEARN_DIR/demos.npz as it is),
# PRIOR_PICK (range | last), EP_KEY, SIB_VARIANTS / EP_SIB and OTHER_VARIANTS / EP_OTHER (the eval stage), RUNS (the eval stage's RL runs,
# default all), REWARD (sparse | shaped | progress); LEARN_SMOKE=1 shrinks every stage to a CPU-sized smoke test.
set -euo pipefail
cd "$(dirname "$0")/.."
LEARN_DIR=${LEARN_DIR:-runs/learning}
REWARD=${REWARD:-sparse}
mkdir -p "$LEARN_DIR"

# Sizes: a 64-wide, 4-layer Llama and two 96-wide, 4-block vision towers (~5.6M parameters, ~11 MB in
# bf16, most of it the 32064-row embedding and output matrices that the released format fixes).
SIZES='{"dino": {"embed_dim": 96, "depth": 4, "num_heads": 3}, "siglip": {"embed_dim": 96, "depth": 4, "num_heads": 3},
        "llm": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4}}'
VARIANTS_SFT=${VARIANTS_SFT:-"train red_cube unseen_target"}
SIB_VARIANTS=${SIB_VARIANTS:-"unseen_target red_cube"}  # the blog's two siblings: in the SFT data, never in RL
OTHER_VARIANTS=${OTHER_VARIANTS:-"unseen_phrasing table_color distractor_cube lighting unseen_positions unseen_ee_pose cube_moved"}
if [ "${LEARN_SMOKE:-0}" = 1 ]; then
  DEMOS=2; SFT_STEPS=20; SFT_EVAL=10; ENVS=4; EP_SELECT=4; ITERS=2; MINIB=4; GROUP=2; EP_KEY=4; EP_SIB=2; EP_OTHER=2
  OTHER_VARIANTS="cube_moved"
else
  DEMOS=${DEMOS:-400}; SFT_STEPS=${SFT_STEPS:-6000}; SFT_EVAL=${SFT_EVAL:-500}; ENVS=${ENVS:-24}; EP_SELECT=${EP_SELECT:-48}
  ITERS=${ITERS:-120}; MINIB=16; GROUP=${GROUP:-8}; EP_KEY=${EP_KEY:-200}; EP_SIB=${EP_SIB:-200}; EP_OTHER=${EP_OTHER:-100}
fi
# RL hyper-parameters shared by the three algorithms (LoRA on the small LM; the scripts' defaults otherwise)
RL_COMMON="--vla-path $LEARN_DIR/prior --unnorm-key sft_tabletop --env-id train --reward $REWARD --num-envs $ENVS
  --num-steps 80 --num-iterations $ITERS --learning-rate ${LR:-5e-4} --lora-rank 16 --lora-alpha 32 --eval-every 0
  --save-every ${SAVE_EVERY:-10} --exp-name ${1:-}${TAG:+_$TAG} ${RL_ARGS:-}"

case "${1:-}" in
  prior)
    from=${PRIOR_FROM:-$LEARN_DIR/small-random}
    if [ -z "${PRIOR_FROM:-}" ]; then
      python3 -c "import json, openvla_patch as o; o.make_tiny_openvla('$from', seed=0, sizes=json.loads('''$SIZES'''))"
    else  # continuing: train from a copy, as this stage replaces $LEARN_DIR/prior at its end
      rm -rf "$LEARN_DIR/prior-from"; cp -r "$PRIOR_FROM" "$LEARN_DIR/prior-from"; from=$LEARN_DIR/prior-from
    fi
    rm -rf "$LEARN_DIR"/sft "$LEARN_DIR"/sft-step*
    # REUSE_DEMOS=1: train on the $LEARN_DIR/demos.npz already there (one collection shared by several priors)
    REUSE=--no-reuse-demos; [ "${REUSE_DEMOS:-0}" = 1 ] && REUSE=--reuse-demos
    # fp32 training (the checkpoints are saved in bf16, as released); no image augmentation: the crops would
    # need a matching centre crop at test time, which the released inference code does not do
    python3 sft_openvla.py --vla-path "$from" --variants $VARIANTS_SFT --demos-per-task $DEMOS \
      --demo-seed ${DEMO_SEED:-1000000} --expert-noise 0.1 --num-envs $ENVS --max-steps $SFT_STEPS \
      --batch-size ${SFT_BATCH:-128} --learning-rate ${SFT_LR:-1e-3} ${SFT_ARGS:-} \
      --precision fp32 --no-image-aug --eval-every $SFT_EVAL --save-every $SFT_EVAL --eval-episodes $EP_SELECT \
      --demos-path "$LEARN_DIR/demos.npz" $REUSE --output-dir "$LEARN_DIR/sft" > "$LEARN_DIR/sft.log" 2>&1 &
    sft=$!
    # Stop at the first saved checkpoint in the prior's range (30-50 %): later steps would be discarded anyway.
    while [ "${PRIOR_PICK:-range}" = range ] && kill -0 $sft 2>/dev/null; do
      sleep 5
      step=$(grep -oE "\[eval\] step [0-9]+: success_once 0\.[34][0-9]*" "$LEARN_DIR/sft.log" | head -1 | cut -d" " -f3 | tr -d : || true)
      if [ -n "$step" ] && [ -d "$(printf '%s/sft-step%06d' "$LEARN_DIR" "$step")" ]; then kill $sft 2>/dev/null || true; break; fi
    done
    wait $sft || true
    grep -E "^\[(demos|model|eval|done)\]" "$LEARN_DIR/sft.log" || true
    python3 - "$LEARN_DIR" "$SFT_STEPS" "${PRIOR_FROM:-small random model}" "${PRIOR_PICK:-range}" <<'PY'
import json, re, shutil, sys
from pathlib import Path
learn, last, pick = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[4]
log = (learn / "sft.log").read_text()
saved = lambda s: learn / ("sft" if s == last else f"sft-step{s:06d}")  # noqa: E731
curve = {int(s): float(x) for s, x in re.findall(r"\[eval\] step (\d+): success_once ([0-9.]+)", log)}
curve = {s: x for s, x in curve.items() if saved(s).is_dir()}
weak = [s for s in sorted(curve) if 0.3 <= curve[s] <= 0.5]
if pick == "last":  # no selection: the validation curve is only reported
    step = last
else:
    step = weak[0] if weak else min(curve, key=lambda s: (abs(curve[s] - 0.4), s))
shutil.rmtree(learn / "prior", ignore_errors=True)
shutil.copytree(saved(step), learn / "prior")
info = {"started_from": sys.argv[3], "validation_success_once_on_train_by_step": curve, "chosen_step": step,
        "pick": pick, "in_30_50_range": 0.3 <= curve.get(step, -1) <= 0.5, "selection_seeds": "openvla_envs.VALIDATION_SEED + i",
        "train_log": [l for l in log.splitlines() if l.startswith(("[demos]", "[model]", "[eval]", "[done]"))]}
(learn / "prior.json").write_text(json.dumps(info, indent=1))
print(f"[prior] SFT step {step} (greedy success_once {curve[step]:.3f} on train, validation seeds) -> {learn / 'prior'}")
PY
    ;;
  ppo)
    python3 ppo_openvla.py $RL_COMMON --num-minibatches $MINIB --output-dir "$LEARN_DIR/ppo"
    ;;
  grpo)
    # --micro-batch-size 0 / 256 (RL_ARGS may override): the scripts' 16 and 12 are sized for 7B's memory; on the small
    # model they only cut the update into ~100 launch-bound micro-steps (6 s of GRPO's 11 s per iteration, session 30)
    python3 grpo_openvla.py --micro-batch-size 0 $RL_COMMON --group-size $GROUP --num-minibatches $MINIB --output-dir "$LEARN_DIR/grpo"
    ;;
  reinforce)
    python3 reinforce_openvla.py --micro-batch-size 256 $RL_COMMON --output-dir "$LEARN_DIR/reinforce"
    ;;
  eval)
    runs=${RUNS:-$(ls -d "$LEARN_DIR"/{ppo,grpo,reinforce}/*/ 2>/dev/null || true)}
    for part in "key $EP_KEY train" "sib $EP_SIB $SIB_VARIANTS" "other $EP_OTHER $OTHER_VARIANTS"; do
      set -- $part; name=$1; episodes=$2; shift 2
      python3 eval_generalization.py --checkpoints "$LEARN_DIR/prior" $runs --unnorm-key sft_tabletop \
        --variants "$@" --episodes $episodes --num-envs ${EVAL_ENVS:-25} --videos-per-variant 1 \
        --output-dir "$LEARN_DIR/eval_$name"
    done
    ;;
  table)
    python3 bench/learning_table.py --evals $(ls -d "$LEARN_DIR"/eval_{key,sib,other} 2>/dev/null) \
      --out bench/results/learning.json
    ;;
  plot)
    python3 bench/plot_curves.py --runs $(ls -d "$LEARN_DIR"/{ppo,grpo,reinforce}/*/ 2>/dev/null) \
      --out "$LEARN_DIR/eval/curves.png"
    ;;
  *)
    sed -n '2,24p' "$0"; exit 2 ;;
esac
