"""Where does what RL changed live: in the language model's adapter or in the vision towers? An RL checkpoint made
with `--train-vision` (a LoRA adapter on the LM + `vision.safetensors`, the towers and projector) -> two hybrid
checkpoints that each keep one half of the change and the prior's other half:

  <out>/<name>_lora_prior_towers: the run's LM adapter with the prior's towers (the checkpoint without
      vision.safetensors: eval_generalization.py then loads the base checkpoint's towers, the prior's);
  <out>/<name>_towers_prior_lm: the run's towers with the prior's LM (the adapter's lora_B zeroed: B @ A = 0
      exactly, so the adapted LM computes the base LM's function).

Evaluate them beside the prior and the run itself (eval_generalization.py --checkpoints ..., the same seeds): a
change carried by one half shows in that hybrid only. The base checkpoint is the one the run's openvla_rl.json
names (`vla_path`): it must be where the run found it. Session 18 used this on a `train` gain (the held cubes
placed: in the adapter), session 23 on the plate's loss after PPO on `train` (BENCHMARKS.md section 4).

    python bench/hybrid_checkpoints.py --checkpoint runs/ppo/train__ppo_state__1__1795506756/checkpoints/iter_000120 \
        --out /tmp/swap --name it120
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro
from safetensors.torch import load_file, save_file

RESUME_ONLY = ("optimizer.pt", "rng_states.pt")  # a checkpoint's resume state: not needed to evaluate it


@dataclass
class Args:
    checkpoint: Path
    """an RL checkpoint directory made with --train-vision (adapter_model.safetensors, vision.safetensors)"""
    out: Path
    """where the two hybrid checkpoint directories are written"""
    name: str = "rl"
    """the hybrids' name prefix: <name>_lora_prior_towers and <name>_towers_prior_lm"""


def make_hybrids(checkpoint: Path, out: Path, name: str = "rl") -> tuple[Path, Path]:
    """-> (the run's adapter with the prior's towers, the run's towers with the prior's LM); see the docstring."""
    for needed in ("adapter_model.safetensors", "vision.safetensors"):
        if not (checkpoint / needed).is_file():
            raise FileNotFoundError(f"{checkpoint} has no {needed}: pass an RL checkpoint made with --train-vision")
    lora_only, towers_only = out / f"{name}_lora_prior_towers", out / f"{name}_towers_prior_lm"
    for path in (lora_only, towers_only):
        if path.exists():
            raise FileExistsError(f"{path} exists: pass another --out or --name")
    shutil.copytree(checkpoint, lora_only, ignore=shutil.ignore_patterns(*RESUME_ONLY, "vision.safetensors"))
    shutil.copytree(checkpoint, towers_only, ignore=shutil.ignore_patterns(*RESUME_ONLY))
    adapter = towers_only / "adapter_model.safetensors"
    weights = load_file(adapter)
    save_file({k: torch.zeros_like(v) if "lora_B" in k else v for k, v in weights.items()}, adapter,
              metadata={"format": "pt"})
    return lora_only, towers_only


def main(args: Args) -> None:
    try:
        for path in make_hybrids(args.checkpoint, args.out, args.name):
            print(path)
    except (FileNotFoundError, FileExistsError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main(tyro.cli(Args))
