"""Shared fixtures: one tiny OpenVLA checkpoint per test session, written by `make_tiny_openvla`; one pair of CPU
worker envs per session; SAPIEN's renderer kept up in this process once a test needs it."""

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    from openvla_patch import make_tiny_openvla

    return make_tiny_openvla(tmp_path_factory.mktemp("ckpt") / "tiny-openvla", seed=0)


@pytest.fixture(scope="session")
def tiny_fp32(tiny_dir):
    """(model, processor) in fp32 on the CPU, in eval mode; tests must not modify it."""
    from openvla_patch import load_vla

    model, processor = load_vla(str(tiny_dir), dtype=torch.float32)
    return model.eval(), processor


@pytest.fixture(scope="session")
def train_envs():
    """2 CPU worker envs of `train` (episodes of 60 steps), shared by every test that drives the worker back-end
    through its API: starting the workers (spawned processes that import ManiSkill and bring up the renderer,
    ~25 s on 2 cores) costs more than all those tests together. Each test starts with its own `reset`."""
    import openvla_envs

    envs = openvla_envs.make_envs("train", 2, backend="cpu", max_episode_steps=60)
    yield envs
    envs.close()


@pytest.fixture(scope="session")
def renderer_kept_alive():
    """One rendering env held for the rest of the session, never used. SAPIEN releases its renderer when the last
    env of the process is garbage-collected, and the next env brings it up again (~6-12 s on lavapipe), in
    particular the throwaway env that gymnasium's AsyncVectorEnv builds in this process to read the spaces; with
    one alive, a new env takes ~1 s. Request it where envs are made in this process."""
    import gymnasium as gym

    import openvla_envs

    env = gym.make(openvla_envs.TABLETOP_ENV_ID, obs_mode="rgb", render_backend="cpu")
    yield
    env.close()
