#!/usr/bin/env bash
# The blog's experiment in miniature, on a small random OpenVLA (offline): give it a weak prior by SFT on
# scripted demos (green and red cubes, towel and plate), run PPO on `train` only ("put the green cube on
# the towel"), then evaluate prior and RL policy on the generalisation suite.
#
# Each stage is one command that fits one 10-minute call on the GPU machine; stages hand checkpoints to
# each other through $LEARN_DIR (default runs/learning):
#   bash bench/learning.sh prior      # small random checkpoint -> expert demos -> SFT (-> $LEARN_DIR/sft)
#   bash bench/learning.sh ppo        # PPO on `train` from the SFT prior (-> $LEARN_DIR/ppo/<run>)
#   bash bench/learning.sh eval       # prior vs PPO on the suite (-> $LEARN_DIR/eval: results.json/.md/.png)
#   bash bench/learning.sh plot       # success curves of the PPO run (-> $LEARN_DIR/eval/ppo_curve.png)
# LEARN_SMOKE=1 shrinks every stage to a CPU-sized smoke test of the pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
LEARN_DIR=${LEARN_DIR:-runs/learning}
REWARD=${REWARD:-sparse}  # sparse: the blog's success indicator; shaped: RL4VLA's grasp/hold/place potential
mkdir -p "$LEARN_DIR"

# Sizes: a 64-wide, 4-layer Llama and two 96-wide, 4-block vision towers (~5.6M parameters, ~11 MB in
# bf16, most of it the 32064-row embedding and output matrices that the released format fixes).
SIZES='{"dino": {"embed_dim": 96, "depth": 4, "num_heads": 3}, "siglip": {"embed_dim": 96, "depth": 4, "num_heads": 3},
        "llm": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4}}'
VARIANTS_SFT="train red_cube unseen_target"
VARIANTS_EVAL="train unseen_target unseen_phrasing red_cube table_color distractor_cube unseen_positions"
if [ "${LEARN_SMOKE:-0}" = 1 ]; then
  DEMOS=2; SFT_STEPS=20; ENVS=2; EP=2; ITERS=2; STEPS=80; MINIB=4; EVAL_EVERY=1; VARIANTS_EVAL="train red_cube"
else
  DEMOS=120; SFT_STEPS=3000; ENVS=24; EP=24; ITERS=${ITERS:-30}; STEPS=80; MINIB=16; EVAL_EVERY=5
fi

case "${1:-}" in
  prior)
    python3 -c "import json, openvla_patch as o; o.make_tiny_openvla('$LEARN_DIR/small-random', seed=0, sizes=json.loads('''$SIZES'''))"
    python3 sft_openvla.py --vla-path "$LEARN_DIR/small-random" --variants $VARIANTS_SFT --demos-per-task $DEMOS \
      --expert-noise 0.1 --num-envs $ENVS --max-steps $SFT_STEPS --batch-size 64 --learning-rate 1e-3 \
      --eval-every $((SFT_STEPS / 4)) --save-every $((SFT_STEPS / 6)) --eval-episodes $EP --demos-path "$LEARN_DIR/demos.npz" --no-reuse-demos \
      --output-dir "$LEARN_DIR/sft"
    ;;
  ppo)
    python3 ppo_openvla.py --vla-path "$LEARN_DIR/sft" --unnorm-key sft_tabletop --env-id train --reward "$REWARD" \
      --num-envs $ENVS --num-steps $STEPS --num-iterations $ITERS --num-minibatches $MINIB \
      --learning-rate 3e-4 --lora-rank 16 --lora-alpha 32 --eval-every $EVAL_EVERY --eval-episodes $EP \
      --save-every $EVAL_EVERY --output-dir "$LEARN_DIR/ppo"
    ;;
  eval)
    run=$(ls -d "$LEARN_DIR"/ppo/*/ | tail -n 1)
    python3 eval_generalization.py --checkpoints "$LEARN_DIR/sft" "$run" --unnorm-key sft_tabletop \
      --variants $VARIANTS_EVAL --episodes $EP --num-envs $ENVS --videos-per-variant 1 --output-dir "$LEARN_DIR/eval"
    ;;
  plot)
    python3 bench/plot_curves.py --runs "$LEARN_DIR"/ppo/*/ --out "$LEARN_DIR/eval/ppo_curve.png"
    ;;
  *)
    sed -n '2,14p' "$0"; exit 2 ;;
esac
