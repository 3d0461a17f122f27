"""Meta-reward and teacher statistics, logged once per iteration."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import lightning as L

from lightning_meta_rl.module import MetaRLModule


class MetaRewardStats(L.Callback):
    """Logs a display smoothing of the meta-reward, its mean over the last ``window`` iterations
    (``meta/reward_mean``), and the entropy of the teacher's action distribution (``teacher/entropy``).

    The module logs everything else once, under one name each: the per-iteration ``meta/reward``,
    ``meta/r_pi``, ``meta/r_pi_prime``, ``explore/action_gap``, the teacher's ``teacher/sigma`` (its mean
    standard deviation in half action ranges) and the running ``meta/snr`` of the raw meta-reward.
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
        if pl_module.is_meta:  # a Gaussian's entropy: sum of log std (in action units) + d/2 (1 + log 2 pi)
            std = pl_module.teacher.head.std().detach()
            metrics["teacher/entropy"] = float(std.log().sum() + 0.5 * std.numel() * (1 + math.log(2 * math.pi)))
        if metrics:
            pl_module.log_dict(metrics, on_step=True, batch_size=1)
