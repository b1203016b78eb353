"""Inputs the model tests share: prompts of three lengths (so batches are padded) and random images."""

import torch

INSTRUCTIONS = [
    "put the green cube on the towel",
    "put it there",
    "place the purple zebra block onto the folded striped kitchen cloth on the left side of the table",
]


def random_images(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 224, 224, 3) uint8 images, the same for the same seed."""
    return torch.randint(0, 256, (n, 224, 224, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
