"""Per-rank checkpoint state: under DDP every rank has its own environments, buffer, random streams and
counters, so a checkpoint keeps all of them and each rank takes its own back on resume."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from lightning_meta_rl.errors import ConfigError


def gather_per_rank(trainer: L.Trainer | None, state: dict[str, Any]) -> dict[str, Any]:
    """Every rank's ``state`` in rank order (a collective under DDP: call it on every rank)."""
    if trainer is None or trainer.world_size == 1:
        return state
    states: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(states, state)
    return {"per_rank": states}


def own_rank(trainer: L.Trainer | None, state: dict[str, Any]) -> dict[str, Any]:
    """This rank's part of a state written by :func:`gather_per_rank`."""
    world = trainer.world_size if trainer is not None else 1
    rank = trainer.global_rank if trainer is not None else 0
    per_rank = state.get("per_rank", [state])
    if len(per_rank) == world:
        return per_rank[rank]
    fitting = trainer is not None and trainer.state.fn == "fit"
    if not fitting:  # validate / test a checkpoint with any number of processes: rank 0's view is enough
        return per_rank[0]
    raise ConfigError(
        f"This checkpoint was written by {len(per_rank)} training process(es) and this run has {world}; every "
        f"process owns its environments and replay buffer, so resume with the same --trainer.devices and "
        f"--trainer.num_nodes."
    )


def attached_trainer(module: L.LightningModule) -> L.Trainer | None:
    """The module's trainer, or None where it is used outside one (``load_from_checkpoint``)."""
    try:
        return module.trainer
    except RuntimeError:
        return None


def average_across(strategy: Any, world_size: int) -> Callable[[list[torch.Tensor]], list[torch.Tensor]] | None:
    """With several processes, a ``reduce`` that averages gradients across them (one flat all-reduce by the
    strategy's public ``reduce``), so that every rank takes the same step; None with one process."""
    if world_size == 1:
        return None

    def average(grads: list[torch.Tensor]) -> list[torch.Tensor]:
        flat = strategy.reduce(torch.cat([g.reshape(-1) for g in grads]), reduce_op="mean")
        return [part.view_as(g) for part, g in zip(flat.split([g.numel() for g in grads]), grads, strict=True)]

    return average
