"""Shared fixtures: one tiny OpenVLA checkpoint per test session, written by `make_tiny_openvla`."""

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
