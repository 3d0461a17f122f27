"""Shared by the update-only benchmarks (compile_speed.py, lookahead_batch.py): Hopper-v5's sizes, the two
settings, and a pool of random minibatches, so that only the update is timed."""

from __future__ import annotations

import torch

from lightning_meta_rl.types import Batch

OBS, ACT = 11, 3  # Hopper-v5
SETTINGS = {
    "default": {"hidden": (64, 64), "batch": 64, "actor_lr": 1e-4, "critic_lr": 1e-3, "tau": 0.01},
    "modern": {"hidden": (256, 256), "batch": 256, "actor_lr": 3e-4, "critic_lr": 3e-4, "tau": 0.005},
}


def pool(batch: int, n: int = 32) -> list[Batch]:
    """``n`` random minibatches of ``batch`` transitions (fixed seed)."""
    g = torch.Generator().manual_seed(0)
    return [
        Batch(
            torch.randn(batch, OBS, generator=g),
            torch.rand(batch, ACT, generator=g) * 2 - 1,
            torch.randn(batch, generator=g),
            torch.randn(batch, OBS, generator=g),
            (torch.rand(batch, generator=g) < 0.01).float(),
        )
        for _ in range(n)
    ]
