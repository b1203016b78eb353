"""Env steps per second of `openvla_envs.make_envs` (random actions, 224x224 RGB rendered every step).

    python bench/env_throughput.py --num-workers 2 --steps 100            # CPU machine, CPU back-end
    python bench/env_throughput.py --num-workers 32 --steps 200           # GPU machine: GPU rendering
    python bench/env_throughput.py --num-workers 16 --breakdown           # where one step's time goes

Prints one JSON line. Creation time (worker start-up) is reported apart and not in the rate.
`--breakdown` adds, measured in this process on one env built as a worker builds it: `step_no_camera_ms`
(physics, controller and success test, no rendering), `step_ms` (the same plus the 224x224 camera, as the
workers step) and so `render_ms`, their difference; beside the vector env's `ms_per_step` (all envs, through
the worker processes) they say whether a step is bound by simulation, by rendering or by the workers' sharing
of the cores and the GPU.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from mani_skill.utils.wrappers.gymnasium import CPUGymWrapper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import openvla_envs  # noqa: E402

if __name__ == "__main__":  # the CPU back-end spawns workers that re-import this file
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--num-workers", type=int, default=2, help="number of envs (one worker process each on cpu)"
    )
    parser.add_argument("--steps", type=int, default=100, help="timed steps of all envs")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--variant", default="train")
    parser.add_argument("--backend", default="auto", choices=["auto", "cpu", "gpu"])
    parser.add_argument("--breakdown", action="store_true",
                        help="also time one in-process env with and without its camera (see above)")
    args = parser.parse_args()

    start = time.perf_counter()
    envs = openvla_envs.make_envs(
        args.variant, args.num_workers, backend=args.backend, max_episode_steps=args.warmup + args.steps
    )
    make_s = time.perf_counter() - start
    envs.reset(list(range(args.num_workers)))
    generator = torch.Generator().manual_seed(0)
    for t in range(args.warmup + args.steps):
        if t == args.warmup:
            start = time.perf_counter()
        envs.step(torch.rand(args.num_workers, 7, generator=generator) * 2 - 1)
    elapsed = time.perf_counter() - start
    envs.close()
    result = {
        "backend": envs.backend,
        "num_envs": args.num_workers,
        "steps": args.steps,
        "env_steps_per_s": round(args.num_workers * args.steps / elapsed, 1),
        "ms_per_step": round(elapsed / args.steps * 1e3, 2),
        "make_s": round(make_s, 1),
        "cuda": torch.cuda.is_available(),
    }
    if args.breakdown:
        env_id, kwargs, robot = openvla_envs.resolve(args.variant)
        if robot != "panda":
            parser.error("--breakdown builds the env as make_envs does for the built-in Panda variants only")
        kwargs.update(control_mode="pd_ee_delta_pose", reward_mode="none",
                      render_backend="cuda:0" if torch.cuda.is_available() else "cpu")
        torch.set_num_threads(1)  # as in a worker
        for key, camera in (("step_no_camera_ms", False), ("step_ms", True)):
            env = gym.make(env_id, num_envs=1, sim_backend="physx_cpu", **dict(kwargs, obs_mode="rgb" if camera else "state"))
            env = CPUGymWrapper(env, ignore_terminations=True)  # the worker's stack, less its image selection
            env.reset(seed=0)
            actions = openvla_envs.openvla_to_controller(
                torch.rand(args.warmup + args.steps, 7, generator=generator) * 2 - 1, robot)
            times = []
            for t, action in enumerate(actions):
                tick = time.perf_counter()
                env.step(action)
                if t >= args.warmup:
                    times.append(time.perf_counter() - tick)
            env.close()
            result[key] = round(float(np.median(times)) * 1e3, 2)
        result["render_ms"] = round(result["step_ms"] - result["step_no_camera_ms"], 2)
    print(json.dumps(result))
