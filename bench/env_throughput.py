"""Env steps per second of `openvla_envs.make_envs` (random actions, 224x224 RGB rendered every step).

    python bench/env_throughput.py --num-workers 2 --steps 100            # CPU machine, CPU back-end
    python bench/env_throughput.py --num-workers 32 --steps 200           # GPU machine: GPU rendering

Prints one JSON line. Creation time (worker start-up) is reported apart and not in the rate.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

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
    print(
        json.dumps(
            {
                "backend": envs.backend,
                "num_envs": args.num_workers,
                "steps": args.steps,
                "env_steps_per_s": round(args.num_workers * args.steps / elapsed, 1),
                "make_s": round(make_s, 1),
                "cuda": torch.cuda.is_available(),
            }
        )
    )
