"""Env steps per second of `openvla_envs.make_envs` (random actions, 224x224 RGB rendered every step).

    python bench/env_throughput.py --num-workers 2 --steps 100            # CPU machine, CPU back-end
    python bench/env_throughput.py --num-workers 32 --steps 200           # GPU machine: GPU rendering
    python bench/env_throughput.py --num-workers 16 --breakdown           # where one step's time goes
    python bench/env_throughput.py --num-workers 16 --worker-timing       # inside the workers vs around them

Prints one JSON line. Creation time (worker start-up) is reported apart and not in the rate.
`--breakdown` adds, measured in this process on one env built as a worker builds it: `step_no_camera_ms`
(physics, controller and success test, no rendering), `step_ms` (the same plus the 224x224 camera, as the
workers step) and so `render_ms`, their difference; beside the vector env's `ms_per_step` (all envs, through
the worker processes) they say whether a step is bound by simulation, by rendering or by the workers' sharing
of the cores and the GPU. `--worker-timing` steps a second vector env of the same workers, each timing its own
`step` (simulation and rendering, in the worker process): `worker_step_ms` (median over steps of the mean over
workers) and `slowest_worker_step_ms` (median of the slowest worker's, which each vector step waits for) beside
that env's own `timed_ms_per_step`. Slowest worker ~ the vector step: the workers themselves are slowed as
they are added (e.g. their render calls queue on the GPU); slowest worker << the vector step: the time goes
around them (the main process receiving their replies one after another).
"""

import argparse
import functools
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


class _TimedStep(gym.Wrapper):
    """A worker's env that reports how long its own `step` took (info["worker_step_s"])."""

    def step(self, action):
        tick = time.perf_counter()
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, "worker_step_s": time.perf_counter() - tick}


def _timed_worker_env(env_id: str, env_kwargs: dict, camera: str) -> gym.Env:
    """Runs in a worker process: the worker env of `openvla_envs.make_envs` (images only, as PPO's default head
    critic has them), timed."""
    return _TimedStep(openvla_envs._make_worker_env(env_id, env_kwargs, camera, False))  # its private factory


def panda_kwargs(variant: str) -> tuple[str, dict]:
    """The env id and kwargs `make_envs` gives a built-in Panda variant's workers (sparse reward)."""
    env_id, kwargs, robot = openvla_envs.resolve(variant)
    if robot != "panda":
        raise SystemExit("error: --breakdown and --worker-timing build the envs as make_envs does for the "
                         "built-in Panda variants only")
    kwargs.pop("reset_options", None)
    kwargs.update(control_mode="pd_ee_delta_pose", reward_mode="none", obs_mode="rgb",
                  render_backend="cuda:0" if torch.cuda.is_available() else "cpu")
    return env_id, kwargs


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
    parser.add_argument("--worker-timing", action="store_true",
                        help="also step the workers with each timing its own step (see above)")
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
        env_id, kwargs = panda_kwargs(args.variant)
        torch.set_num_threads(1)  # as in a worker
        for key, camera in (("step_no_camera_ms", False), ("step_ms", True)):
            env = gym.make(env_id, num_envs=1, sim_backend="physx_cpu", **dict(kwargs, obs_mode="rgb" if camera else "state"))
            env = CPUGymWrapper(env, ignore_terminations=True)  # the worker's stack, less its image selection
            env.reset(seed=0)
            actions = openvla_envs.openvla_to_controller(
                torch.rand(args.warmup + args.steps, 7, generator=generator) * 2 - 1, "panda")
            times = []
            for t, action in enumerate(actions):
                tick = time.perf_counter()
                env.step(action)
                if t >= args.warmup:
                    times.append(time.perf_counter() - tick)
            env.close()
            result[key] = round(float(np.median(times)) * 1e3, 2)
        result["render_ms"] = round(result["step_ms"] - result["step_no_camera_ms"], 2)
    if args.worker_timing:
        env_id, kwargs = panda_kwargs(args.variant)
        worker = functools.partial(_timed_worker_env, env_id, kwargs, "third_view")
        vec = gym.vector.AsyncVectorEnv([worker] * args.num_workers, context="spawn")
        vec.reset(seed=list(range(args.num_workers)))
        step_s, inside = [], []  # per vector step: its time, and each worker's own step time (N,)
        for t in range(args.warmup + args.steps):
            action = openvla_envs.openvla_to_controller(torch.rand(args.num_workers, 7, generator=generator) * 2 - 1, "panda")
            tick = time.perf_counter()
            _, _, _, _, info = vec.step(action)
            if t >= args.warmup:
                step_s.append(time.perf_counter() - tick)
                inside.append(np.asarray(info["worker_step_s"]))
        vec.close()
        inside = np.stack(inside)  # (steps, N)
        result["timed_ms_per_step"] = round(float(np.median(step_s)) * 1e3, 2)
        result["worker_step_ms"] = round(float(np.median(inside.mean(1))) * 1e3, 2)
        result["slowest_worker_step_ms"] = round(float(np.median(inside.max(1))) * 1e3, 2)
    print(json.dumps(result))
