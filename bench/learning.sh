#!/usr/bin/env bash
# The blog's experiment in miniature, on a small random OpenVLA (offline): give it a weak prior by SFT on
# scripted demos (green and red cubes, towel and plate), run RL on `train` only ("put the green cube on
# the towel"), then evaluate prior and RL policies on the generalisation suite.
#
# Each stage is one command that fits one 10-minute call on the GPU machine; stages hand checkpoints to
# each other through $LEARN_DIR (default runs/learning):
#   bash bench/learning.sh prior      # small random model -> expert demos -> SFT, a checkpoint every 500
#                                     # steps -> the first one with 30-60 % greedy success on `train`
#                                     # (else the closest to 45 %) becomes $LEARN_DIR/prior (+ prior.json)
#   bash bench/learning.sh ppo        # PPO on `train` from the prior      (-> $LEARN_DIR/ppo/<run>)
#   bash bench/learning.sh grpo       # GRPO, the same                     (-> $LEARN_DIR/grpo/<run>)
#   bash bench/learning.sh reinforce  # REINFORCE, the same                (-> $LEARN_DIR/reinforce/<run>)
#   bash bench/learning.sh eval       # prior vs every finished RL run on the suite (-> $LEARN_DIR/eval)
#   bash bench/learning.sh plot       # training success curves of the RL runs (-> $LEARN_DIR/eval/curves.png)
# Env: ITERS (RL iterations, default 36), VARIANTS_EVAL (the eval stage's variants), VARIANTS_SFT, DEMOS
# (per SFT variant), SFT_STEPS, SFT_EVAL (steps between SFT evals/checkpoints), SFT_BATCH, PRIOR_FROM (a
# checkpoint to continue SFT from instead of the small random model) with DEMO_SEED (give new demos a new
# first seed, e.g. 2000000), ENVS (envs per RL run), SAVE_EVERY (RL iterations between checkpoints),
# REWARD (sparse: the blog's success indicator | shaped: RL4VLA's
# grasp/hold/place potential), LEARN_SMOKE=1 shrinks every stage to a CPU-sized smoke test of the pipeline.
# The prior of BENCHMARKS.md section 4 took two `prior` calls: the plain one, then
#   PRIOR_FROM=runs/learning/prior DEMO_SEED=2000000 SFT_BATCH=128 SFT_STEPS=3000 bash bench/learning.sh prior
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
VARIANTS_EVAL=${VARIANTS_EVAL:-"train unseen_target unseen_phrasing red_cube table_color distractor_cube lighting unseen_positions"}
if [ "${LEARN_SMOKE:-0}" = 1 ]; then
  DEMOS=2; SFT_STEPS=20; SFT_EVAL=10; ENVS=4; EP=4; ITERS=2; MINIB=4; GROUP=2; VARIANTS_EVAL="train red_cube"
else
  DEMOS=${DEMOS:-200}; SFT_STEPS=${SFT_STEPS:-4000}; SFT_EVAL=${SFT_EVAL:-500}; ENVS=${ENVS:-24}; EP=24; ITERS=${ITERS:-36}; MINIB=16; GROUP=8
fi
# RL hyper-parameters shared by the three algorithms (LoRA on the small LM; blog/RL4VLA defaults otherwise)
RL_COMMON="--vla-path $LEARN_DIR/prior --unnorm-key sft_tabletop --env-id train --reward $REWARD --num-envs $ENVS
  --num-steps 80 --num-iterations $ITERS --learning-rate 3e-4 --lora-rank 16 --lora-alpha 32 --eval-every 0
  --save-every ${SAVE_EVERY:-$ITERS}"

case "${1:-}" in
  prior)
    from=${PRIOR_FROM:-$LEARN_DIR/small-random}
    if [ -z "${PRIOR_FROM:-}" ]; then
      python3 -c "import json, openvla_patch as o; o.make_tiny_openvla('$from', seed=0, sizes=json.loads('''$SIZES'''))"
    else  # continuing: train from a copy, as this stage replaces $LEARN_DIR/prior at its end
      rm -rf "$LEARN_DIR/prior-from"; cp -r "$PRIOR_FROM" "$LEARN_DIR/prior-from"; from=$LEARN_DIR/prior-from
    fi
    # fp32 training (the checkpoints are saved in bf16, as released); no image augmentation: the crops would
    # need a matching centre crop at test time, which the released inference code does not do
    python3 sft_openvla.py --vla-path "$from" --variants $VARIANTS_SFT --demos-per-task $DEMOS \
      --demo-seed ${DEMO_SEED:-1000000} --expert-noise 0.1 --num-envs $ENVS --max-steps $SFT_STEPS \
      --batch-size ${SFT_BATCH:-64} --learning-rate 1e-3 \
      --precision fp32 --no-image-aug --eval-every $SFT_EVAL --save-every $SFT_EVAL --eval-episodes $EP \
      --demos-path "$LEARN_DIR/demos.npz" --no-reuse-demos --output-dir "$LEARN_DIR/sft" 2>&1 | tee "$LEARN_DIR/sft.log"
    python3 - "$LEARN_DIR" "$SFT_STEPS" "${PRIOR_FROM:-small random model}" <<'PY'
import json, re, shutil, sys
from pathlib import Path
learn, last = Path(sys.argv[1]), int(sys.argv[2])
log = (learn / "sft.log").read_text()
curve = {int(s): float(x) for s, x in re.findall(r"\[eval\] step (\d+): success_once ([0-9.]+)", log)}
weak = [s for s in sorted(curve) if 0.3 <= curve[s] <= 0.6]
step = weak[0] if weak else min(curve, key=lambda s: (abs(curve[s] - 0.45), s))
src = learn / "sft" if step == last else learn / f"sft-step{step:06d}"
shutil.rmtree(learn / "prior", ignore_errors=True)
shutil.copytree(src, learn / "prior")
info = {"started_from": sys.argv[3], "greedy_success_once_on_train_by_step": curve, "chosen_step": step, "in_30_60_range": bool(weak),
        "train_log": [l for l in log.splitlines() if l.startswith(("[demos]", "[model]", "[eval]", "[done]"))]}
(learn / "prior.json").write_text(json.dumps(info, indent=1))
print(f"[prior] SFT step {step} (greedy success_once {curve[step]:.3f} on train) -> {learn / 'prior'}")
PY
    ;;
  ppo)
    python3 ppo_openvla.py $RL_COMMON --num-minibatches $MINIB --output-dir "$LEARN_DIR/ppo"
    ;;
  grpo)
    python3 grpo_openvla.py $RL_COMMON --group-size $GROUP --num-minibatches $MINIB --output-dir "$LEARN_DIR/grpo"
    ;;
  reinforce)
    python3 reinforce_openvla.py $RL_COMMON --output-dir "$LEARN_DIR/reinforce"
    ;;
  eval)
    runs=$(ls -d "$LEARN_DIR"/{ppo,grpo,reinforce}/*/ 2>/dev/null || true)
    python3 eval_generalization.py --checkpoints "$LEARN_DIR/prior" $runs --unnorm-key sft_tabletop \
      --variants $VARIANTS_EVAL --episodes $EP --num-envs $ENVS --videos-per-variant 1 --output-dir "$LEARN_DIR/eval"
    ;;
  plot)
    python3 bench/plot_curves.py --runs $(ls -d "$LEARN_DIR"/{ppo,grpo,reinforce}/*/ 2>/dev/null) \
      --out "$LEARN_DIR/eval/curves.png"
    ;;
  *)
    sed -n '2,19p' "$0"; exit 2 ;;
esac
