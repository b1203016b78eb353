"""Where does a policy leave the expert? Greedy rollouts of a checkpoint in one variant; at every visited
state the scripted expert's clean action is the reference. Prints mean |policy - expert| per action dim
(normalised units, 1 = 0.1 m, 0.1 rad or a full gripper swing) and the success rate.

    python bench/policy_vs_expert.py --checkpoint runs/learning/prior --unnorm-key sft_tabletop --num-envs 4
"""

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import openvla_envs  # noqa: E402
import openvla_patch as ovp  # noqa: E402

DIMS = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")


@dataclass
class Args:
    checkpoint: str
    """a full checkpoint directory (or `tiny`)"""
    unnorm_key: str = "sft_tabletop"
    """norm_stats key of the checkpoint's actions"""
    variant: str = "train"
    """openvla_envs.VARIANTS name (built-in Panda tasks only: the expert needs privileged state)"""
    num_envs: int = 4
    """episodes, run in parallel on env seeds 0 .. num_envs - 1"""
    steps: int = 80
    """episode length"""


def main(args: Args) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model, processor = ovp.load_vla(args.checkpoint, device=device, dtype=dtype)
    stats = ovp.action_stats(model.config, args.unnorm_key)
    envs = openvla_envs.make_envs(args.variant, args.num_envs, device=device, max_episode_steps=args.steps)
    obs, instructions = envs.reset(list(range(args.num_envs)))
    input_ids, attention_mask = processor.tokenize(instructions, device=device)
    errors = []  # per step: (N, 7)
    for _ in range(args.steps):
        with torch.no_grad():
            sample = model.generate_actions(input_ids, attention_mask, processor.process_images(obs, dtype), greedy=True)
        actions = ovp.tokens_to_actions(sample.tokens, model.config, stats).float()  # (N, 7)
        errors.append((actions - envs.expert_actions().float()).abs().cpu().numpy())
        obs, _, _, infos = envs.step(actions)
    envs.close()
    mean = np.stack(errors).mean((0, 1))
    print("mean |policy - expert| per dim: " + ", ".join(f"{d} {e:.3f}" for d, e in zip(DIMS, mean, strict=True)))
    print(f"success_once {infos['success_once'].float().mean().item():.3f} over {args.num_envs} episodes")


if __name__ == "__main__":
    main(tyro.cli(Args))
