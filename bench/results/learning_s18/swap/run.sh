#!/usr/bin/env bash
# Issue 12, session 18, on the 2-core CPU machine (lavapipe rendering; ~15 min per cell): where does what PPO changed
# in 460 k env steps (session 17's `vlr1e5s2` resumed to iteration 240: LoRA on the LM + towers and projector at 1e-5)
# live? Two hybrid checkpoints, each evaluated on the 200 greedy `train` test episodes (seeds 10^7 + i), and the prior
# on the same machine as the baseline (rendering differs from the GPU's; the prior gave 110 here, 109 there):
#   rl_lora_prior_towers: the run's LM adapter with the prior's towers (the checkpoint without vision.safetensors);
#   prior_lm_rl_towers: the run's towers with the prior's LM (the adapter's lora_B zeroed: B @ A = 0 exactly).
# Needs the prior at /tmp/learn_s13/prior (tar -C /tmp/learn_s13 -xJf .learn/s13/prior_s13.tar.xz: the checkpoint's
# recorded --vla-path) and the run at $RUN (tar -xJf .learn/s18/run_vlr1e5s2_it240.tar.xz).
set -eu
cd "$(dirname "$0")/../../../.."
CK=${RUN:?the unpacked run directory}/checkpoints/iter_000240
OUT=${OUT:-/tmp/swap}
mkdir -p "$OUT"
python3 bench/hybrid_checkpoints.py --checkpoint "$CK" --out "$OUT" --name it240  # the two hybrids
ev() {  # checkpoint, output directory
  python3 eval_generalization.py --checkpoints "$1" --unnorm-key sft_tabletop --variants train --episodes 200 \
    --num-envs 2 --videos-per-variant 0 --output-dir "$2"
}
ev "$OUT/it240_lora_prior_towers" "$OUT/eval_lora240_priortowers"
ev "$OUT/it240_towers_prior_lm" "$OUT/eval_priorlm_towers240"
ev /tmp/learn_s13/prior "$OUT/eval_prior_cpu"
E="$OUT/eval_prior_cpu $OUT/eval_lora240_priortowers $OUT/eval_priorlm_towers240"
L="$OUT/it240_lora_prior_towers=rl_lora_prior_towers $OUT/it240_towers_prior_lm=prior_lm_rl_towers"
python3 bench/learning_table.py --evals $E --labels $L --out bench/results/learning_s18/swap/table.json
python3 bench/failure_modes.py --evals $E --labels $L --out bench/results/learning_s18/swap/failure_modes.json --markdown
