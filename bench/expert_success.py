"""Success of the scripted expert per variant, through `openvla_envs.make_envs` (seeds 0..episodes-1).

    python bench/expert_success.py --episodes 100 --num-envs 16
    python bench/expert_success.py --variants train red_cube --episodes 20 --noise 0.3 --pause-prob 0.2
    python bench/expert_success.py --no-render --variants train unseen_target red_cube --noise 0.1 --detour-prob 1
    python bench/expert_success.py --no-render --episodes 100      # one env in-process, no camera: fast on a CPU
    python bench/expert_success.py --no-render --variants unseen_objects multi_object_unseen   # names or RL4VLA aliases

Prints a table (success_once, success_at_end per variant) and, with --json, one JSON line.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import openvla_envs  # noqa: E402


def vectorised(name: str, args) -> tuple[torch.Tensor, torch.Tensor]:
    """Episodes through `make_envs` (rendered), `num_envs` at a time -> success_once, success_at_end."""
    envs = openvla_envs.make_envs(name, args.num_envs, backend=args.backend, max_episode_steps=args.max_episode_steps)
    once, end = [], []
    for first in range(0, args.episodes, args.num_envs):
        envs.reset([min(first + i, args.episodes - 1) for i in range(args.num_envs)])  # pad the last batch
        for _ in range(args.max_episode_steps):
            _, _, _, infos = envs.step(envs.expert_actions(args.noise, args.pause_prob, args.detour_prob))
        keep = min(args.num_envs, args.episodes - first)
        once.append(infos["success_once"][:keep].cpu())
        end.append(infos["success_at_end"][:keep].cpu())
    envs.close()
    return torch.cat(once), torch.cat(end)


def in_process(name: str, args) -> tuple[torch.Tensor, torch.Tensor]:
    """Episodes one at a time in this process with no camera (obs_mode='state'): the same task, expert and
    success, fast on a CPU machine."""
    import gymnasium as gym

    env_id, kwargs, _ = openvla_envs.resolve(name)
    env = gym.make(env_id, obs_mode="state", control_mode="pd_ee_delta_pose", sim_backend="physx_cpu", **kwargs)
    once, end = [], []
    for seed in range(args.episodes):
        env.reset(seed=seed)
        success = torch.zeros(args.max_episode_steps, dtype=torch.bool)
        for t in range(args.max_episode_steps):
            success[t] = bool(env.step(env.unwrapped.expert_action(args.noise, args.pause_prob, args.detour_prob))[-1]["success"])
        once.append(success.any())
        end.append(success[-1])
    env.close()
    return torch.stack(once), torch.stack(end)


if __name__ == "__main__":  # the CPU back-end spawns workers that re-import this file
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=list(openvla_envs.VARIANTS))
    parser.add_argument("--episodes", type=int, default=100, help="per variant")
    parser.add_argument(
        "--num-envs", type=int, default=2, help="envs stepped together (worker processes on cpu)"
    )
    parser.add_argument("--max-episode-steps", type=int, default=80)
    parser.add_argument("--noise", type=float, default=0.0, help="std of the expert's action noise")
    parser.add_argument("--pause-prob", type=float, default=0.0, help="chance of a motionless step")
    parser.add_argument("--detour-prob", type=float, default=0.0,
                        help="chance per episode of a detour over the other receptacle (sft_openvla.py deviation 8)")
    parser.add_argument("--backend", default="auto", choices=["auto", "cpu", "gpu"])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-render", action="store_true",
                        help="one env in this process with obs_mode='state' (no camera); the same expert and success")
    args = parser.parse_args()

    results = {}
    print(f"{'variant':<18} {'category':<10} {'success_once':>12} {'success_at_end':>14} {'time_s':>7}")
    for name in args.variants:
        start = time.perf_counter()
        once, end = (in_process if args.no_render else vectorised)(name, args)  # (episodes,) bool each
        results[name] = {"success_once": once.float().mean().item(), "success_at_end": end.float().mean().item()}
        print(f"{name:<18} {openvla_envs.category(name):<10} {results[name]['success_once']:>12.2f} "
              f"{results[name]['success_at_end']:>14.2f} {time.perf_counter() - start:>7.0f}", flush=True)
    if args.json:
        print(
            json.dumps(
                {"episodes": args.episodes, "noise": args.noise, "pause_prob": args.pause_prob,
                 "detour_prob": args.detour_prob, **results}
            )
        )
