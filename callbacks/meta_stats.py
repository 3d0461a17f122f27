"""Meta-reward and teacher statistics, logged once per iteration."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import lightning as L
import torch

from lightning_meta_rl.module import MetaRLModule


class MetaRewardStats(L.Callback):
    """Logs the running mean of the meta-reward over the last ``window`` iterations, and the teacher's
    entropy and mean standard deviation (in units of half the action range).

    The module itself logs the per-iteration values: ``meta/reward``, ``meta/r_pi``, ``meta/r_pi_prime``
    and ``explore/action_gap`` (distance between teacher and student actions on D0).
    """

    def __init__(self, window: int = 20) -> None:
        if window <= 0:
            raise ValueError(f"window must be positive, got {window}")
        self.window = window
        self._rewards: deque[float] = deque(maxlen=window)

    def state_dict(self) -> dict[str, Any]:
        return {"rewards": list(self._rewards)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rewards = deque(state["rewards"], maxlen=self.window)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not isinstance(pl_module, MetaRLModule) or pl_module.last_iteration is None:
            return
        metrics: dict[str, float] = {}
        m = pl_module.last_iteration.meta_reward
        if m is not None and math.isfinite(m):
            self._rewards.append(m)
            metrics["meta/reward_mean"] = sum(self._rewards) / len(self._rewards)
        head = getattr(pl_module.exploration, "head", None)
        if head is not None:
            log_std = head.log_std.detach()
            metrics["teacher/entropy"] = float(log_std.sum() + 0.5 * log_std.numel() * (1 + math.log(2 * math.pi)))
            metrics["teacher/std"] = float(torch.exp(log_std).mean())
        if metrics:
            pl_module.log_dict(metrics, on_step=True, batch_size=1)
