#!/usr/bin/env bash
# Multi-GPU check (issue 7, part 3): the tiny model's PPO on 1 GPU vs 2 GPUs through torchrun/NCCL.
#   bash bench/multi_gpu.sh [OUT_JSON]      # needs 2 GPUs; ~5 minutes
# Runs (each 4 iterations of 80 steps, CPU worker envs, no eval): 1 GPU x 16 envs; 2 GPUs x 16 envs
# (8 per rank: the same batch, split); 2 GPUs x 32 envs (16 per rank: twice the batch). The 2-GPU runs
# end by comparing every rank's trainable weights (ppo_openvla.py raises if they differ) and print
# "trainable weights identical on 2 ranks". SPS is the median of iterations 2-4 (the first pays warm-up).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_JSON=${1:-runs/multi_gpu/results.json}
DIR=$(dirname "$OUT_JSON")
mkdir -p "$DIR"
COMMON="--vla-path tiny --num-steps 80 --num-iterations 4 --num-minibatches 20 --eval-every 0 --env-backend cpu"
run() {  # name, launcher..., -- extra args
  local name=$1; shift
  echo "== $name: $*"
  timeout 240 "$@" $COMMON --output-dir "$DIR/$name" --exp-name "$name" > "$DIR/$name.log" 2>&1 \
    || { echo "$name failed (exit $?); the end of $DIR/$name.log:"; grep -v Warning "$DIR/$name.log" | tail -n 30; }
  grep -h "identical\|^error" "$DIR/$name.log" || true
}
run gpu1_envs16 python3 ppo_openvla.py --num-envs 16
run gpu2_envs16 torchrun --standalone --nproc-per-node 2 ppo_openvla.py --num-envs 16
run gpu2_envs32 torchrun --standalone --nproc-per-node 2 ppo_openvla.py --num-envs 32
python3 - "$DIR" "$OUT_JSON" <<'PY'
import json, statistics, sys
from pathlib import Path
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
import torch
out = {"device": f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}", "torch": torch.__version__,
       "command": "bash bench/multi_gpu.sh", "runs": {}}
for run_dir in sorted(Path(sys.argv[1]).glob("gpu*/*/")):
    acc = EventAccumulator(str(run_dir)).Reload()
    if len(acc.Tags()["scalars"]) == 0 or len(acc.Scalars("charts/SPS")) < 2:
        continue  # a failed run: its log says why
    med = {k: statistics.median(e.value for e in acc.Scalars(k)[1:]) for k in
           ("charts/SPS", "time/rollout_s", "time/env_s", "time/update_s")}
    out["runs"][run_dir.parent.name] = {k.split("/")[1]: round(v, 3) for k, v in med.items()}
print(json.dumps(out, indent=1))
Path(sys.argv[2]).write_text(json.dumps(out, indent=1))
PY
