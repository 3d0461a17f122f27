"""Preallocated ring replay buffer and running observation statistics."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lightning_meta_rl.types import Batch, Rollout


class ReplayBuffer:
    """Fixed-capacity FIFO of transitions; the oldest are overwritten once it is full. Its storage is its own, or
    (``rows``) a member's rows of a population's ``StackedBuffers``, on any device."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, rows: dict[str, torch.Tensor] | None = None) -> None:
        if capacity <= 0:
            raise ValueError(f"buffer capacity must be positive, got {capacity}")
        self.capacity = capacity
        # uninitialized: only the first ``size`` rows are ever read or saved, and each is written first. Unlike
        # zeros, this takes no time and no memory up front (pages are mapped as rows are first written), which
        # matters for a population of large buffers
        rows = rows or {name: torch.empty(capacity, *shape) for name, shape in field_shapes(obs_dim, act_dim).items()}
        self.obs, self.next_obs, self.action = rows["obs"], rows["next_obs"], rows["action"]
        self.reward, self.terminated = rows["reward"], rows["terminated"]
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
        device = self.obs.device  # (``to`` is no copy where the rollout is there already)
        idx = ((self.pos + torch.arange(n)) % self.capacity).to(device)
        self.obs[idx] = rollout.obs.to(device)
        self.next_obs[idx] = rollout.next_obs.to(device)
        self.action[idx] = rollout.action.to(device)
        self.reward[idx] = rollout.reward.to(device)
        self.terminated[idx] = rollout.terminated.to(device)
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
            **{name: getattr(self, name)[:n].to("cpu", copy=True) for name in FIELDS},  # host copies
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"checkpoint buffer capacity {state['capacity']} differs from {self.capacity}")
        n = state["size"]
        for name in FIELDS:
            getattr(self, name)[:n] = state[name]
        self.pos, self.size = state["pos"], n


FIELDS = ("obs", "next_obs", "action", "reward", "terminated")


def field_shapes(obs_dim: int, act_dim: int) -> dict[str, tuple[int, ...]]:
    """The shape of one stored transition's fields."""
    return {"obs": (obs_dim,), "next_obs": (obs_dim,), "action": (act_dim,), "reward": (), "terminated": ()}


def gather(rollout_or_buffer: ReplayBuffer | Rollout, idx: torch.Tensor) -> Batch:
    """Rows ``idx`` of a buffer or rollout as a Batch (raw observations); ``index_select`` copies the same rows
    as indexing by ``idx``, with less work per call."""
    src = rollout_or_buffer
    idx = idx.to(src.obs.device)
    return Batch(*(t.index_select(0, idx) for t in (src.obs, src.action, src.reward, src.next_obs, src.terminated)))


class StackedBuffers:
    """A population's replay buffers as one tensor per field, ``[members, capacity, ...]``, on one device (the
    population's: on a GPU its minibatches never cross to it). Member k's ``ReplayBuffer`` is a view of row k,
    so it fills, saves and loads as a buffer of its own, and ``gather`` draws every member's minibatch in one
    operation per field."""

    def __init__(self, members: int, capacity: int, obs_dim: int, act_dim: int, device: torch.device) -> None:
        shapes = field_shapes(obs_dim, act_dim)
        self.capacity, self.device = capacity, device
        self.fields = {name: torch.empty(members, capacity, *shape, device=device) for name, shape in shapes.items()}
        self.buffers = [
            ReplayBuffer(capacity, obs_dim, act_dim, {name: t[k] for name, t in self.fields.items()})
            for k in range(members)
        ]

    def gather(self, members: list[int], idx: torch.Tensor) -> Batch:
        """Rows ``idx[i]`` (``[len(members), B]``) of member ``members[i]``'s buffer, for every i at once, as a
        ``[len(members), B, ...]`` Batch of raw observations: each row what ``gather`` gives from that buffer."""
        offsets = torch.tensor(members)[:, None] * self.capacity
        flat = (idx + offsets).flatten().to(self.device)
        rows = {name: t.flatten(0, 1).index_select(0, flat).unflatten(0, idx.shape) for name, t in self.fields.items()}
        return Batch(rows["obs"], rows["action"], rows["reward"], rows["next_obs"], rows["terminated"])


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
            return _normalized(x.numpy(), *self._host, self.clip)  # numbers, at a fraction of torch's cost
        return ((x - self._mean32.to(x.device)) / self._std32.to(x.device)).clamp(-self.clip, self.clip)

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

    def tensor(self, rows: list[int], x: torch.Tensor) -> torch.Tensor:
        """``__call__`` for a tensor on any device (a population's minibatches, drawn where its buffers are)."""
        if x.device.type == "cpu" or not self.enabled:
            return self(rows, x.numpy()) if x.device.type == "cpu" else x
        mean, std = (torch.from_numpy(a if rows == self.every else a[rows]).to(x.device) for a in (self.mean, self.std))
        return ((x - mean) / std).clamp(-self.clip, self.clip)


def _normalized(x: np.ndarray, mean: np.ndarray, std: np.ndarray, clip: float) -> torch.Tensor:
    """(x - mean) / std clipped to +-clip, in float32 on the host: the one formula both normalizers use."""
    return torch.from_numpy(np.clip((x - mean) / std, -clip, clip))
