"""Preallocated ring replay buffer and running observation statistics."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lightning_meta_rl.types import Batch, Rollout


class ReplayBuffer:
    """Fixed-capacity FIFO of transitions; the oldest are overwritten once it is full."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int) -> None:
        if capacity <= 0:
            raise ValueError(f"buffer capacity must be positive, got {capacity}")
        self.capacity = capacity
        # uninitialized: only the first ``size`` rows are ever read or saved, and each is written first. Unlike
        # zeros, this takes no time and no memory up front (pages are mapped as rows are first written), which
        # matters for a population of large buffers
        self.obs = torch.empty(capacity, obs_dim)
        self.next_obs = torch.empty(capacity, obs_dim)
        self.action = torch.empty(capacity, act_dim)
        self.reward = torch.empty(capacity)
        self.terminated = torch.empty(capacity)
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, rollout: Rollout) -> None:
        """Append every step of a rollout, wrapping around at capacity."""
        n = len(rollout)
        if n == 0:
            return
        if n > self.capacity:  # only the newest `capacity` steps can survive anyway
            start = n - self.capacity
            rollout = Rollout(
                rollout.obs[start:],
                rollout.action[start:],
                rollout.raw_action[start:],
                rollout.reward[start:],
                rollout.next_obs[start:],
                rollout.terminated[start:],
                rollout.truncated[start:],
            )
            n = self.capacity
        idx = (self.pos + torch.arange(n)) % self.capacity
        self.obs[idx] = rollout.obs
        self.next_obs[idx] = rollout.next_obs
        self.action[idx] = rollout.action
        self.reward[idx] = rollout.reward
        self.terminated[idx] = rollout.terminated
        self.pos = int((self.pos + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample_indices(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        return torch.randint(0, self.size, (batch_size,), generator=generator)

    def state_dict(self) -> dict[str, Any]:
        n = self.size
        return {
            "capacity": self.capacity,
            "pos": self.pos,
            "size": n,
            "obs": self.obs[:n].clone(),
            "next_obs": self.next_obs[:n].clone(),
            "action": self.action[:n].clone(),
            "reward": self.reward[:n].clone(),
            "terminated": self.terminated[:n].clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"checkpoint buffer capacity {state['capacity']} differs from {self.capacity}")
        n = state["size"]
        for name in ("obs", "next_obs", "action", "reward", "terminated"):
            getattr(self, name)[:n] = state[name]
        self.pos, self.size = state["pos"], n


def gather(rollout_or_buffer: ReplayBuffer | Rollout, idx: torch.Tensor) -> Batch:
    """Rows ``idx`` of a buffer or rollout as a Batch (raw observations); ``index_select`` copies the same rows
    as indexing by ``idx``, with less work per call."""
    src = rollout_or_buffer
    return Batch(*(t.index_select(0, idx) for t in (src.obs, src.action, src.reward, src.next_obs, src.terminated)))


class RunningNorm:
    """Running mean/variance of observations (parallel Welford); normalizes and clips to +-clip."""

    def __init__(self, dim: int, clip: float, enabled: bool = True) -> None:
        self.enabled = enabled
        self.clip = clip
        self.mean = torch.zeros(dim, dtype=torch.float64)
        self.var = torch.ones(dim, dtype=torch.float64)
        self.count = 0
        self._mean32 = self.mean.float()
        self._std32 = self.var.sqrt().float()
        self._host = (self._mean32.numpy(), self._std32.numpy())

    def update(self, x: torch.Tensor) -> None:
        """Fold a batch [N, dim] into the statistics."""
        if not self.enabled or x.shape[0] == 0:
            return
        x = x.double()
        n = x.shape[0]
        b_mean, b_var = x.mean(0), x.var(0, unbiased=False)
        total = self.count + n
        delta = b_mean - self.mean
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + b_var * n + delta**2 * self.count * n / total) / total
        self.count = total
        self._refresh()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if x.device.type == "cpu":  # by numpy: the same float32 operations, each correctly rounded, so the same
            mean, std = self._host  # numbers, at a fraction of torch's cost per call on a few rows
            return _normalized(x.numpy(), mean, std, self.clip)
        return ((x - self._mean32) / self._std32).clamp(-self.clip, self.clip)

    def _refresh(self) -> None:
        """The float32 copies (and their host views) that normalizing reads."""
        self._mean32 = self.mean.float()
        self._std32 = (self.var.sqrt() + 1e-8).float()
        self._host = (self._mean32.numpy(), self._std32.numpy())

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.clone(), "var": self.var.clone(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.var, self.count = state["mean"].clone(), state["var"].clone(), int(state["count"])
        self._refresh()


class StackedNorm:
    """Several members' ``RunningNorm`` as one operation on their observations stacked ``[M, E, dim]``: member
    m's rows normalized by its own statistics, with the same float32 operations as its own call (so the same
    numbers). The statistics are read once, when it is made: make one per collection."""

    def __init__(self, norms: list[RunningNorm]) -> None:
        self.enabled, self.clip = norms[0].enabled, norms[0].clip
        self.mean = np.stack([n._host[0] for n in norms])[:, None]  # [M, 1, dim]
        self.std = np.stack([n._host[1] for n in norms])[:, None]
        self.every = list(range(len(norms)))

    def __call__(self, rows: list[int], x: np.ndarray) -> torch.Tensor:
        """The observations of members ``rows`` (indices into the norms it was made from), stacked
        ``[len(rows), ..., dim]``, normalized."""
        if not self.enabled:
            return torch.from_numpy(x)
        mean, std = (self.mean, self.std) if rows == self.every else (self.mean[rows], self.std[rows])
        return _normalized(x, mean, std, self.clip)


def _normalized(x: np.ndarray, mean: np.ndarray, std: np.ndarray, clip: float) -> torch.Tensor:
    """(x - mean) / std clipped to +-clip, in float32 on the host: the one formula both normalizers use."""
    return torch.from_numpy(np.clip((x - mean) / std, -clip, clip))
