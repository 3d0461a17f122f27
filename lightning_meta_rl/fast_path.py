"""The student's updates without Lightning's per-call hook dispatch, taken only where nothing listens.

A DDPG update with the default 64-64 networks takes about 1 ms on one CPU thread, sampling included
(benchmarks/results/profile/profile.md), and Lightning's hook dispatch around its two backwards and two
optimizer steps adds about 0.16 ms (0.446 against 0.406 ms per env step at 0.25 updates per step:
``python benchmarks/throughput.py --lightning-path``).
With one process, 32-bit precision, no profiler and no callback or module listening to those hooks,
that dispatch calls nothing, so plain autograd and the raw optimizer give exactly the same result. The step is still counted in
``trainer.global_step`` (``max_steps``, checkpoint names and loggers depend on it).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden

# the hooks Lightning calls around a manual backward and an optimizer step
CALLBACK_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
MODULE_HOOKS = (*CALLBACK_HOOKS, "backward")


def lightning_is_idle(trainer: L.Trainer, module: L.LightningModule) -> bool:
    """Whether ``manual_backward`` and ``LightningOptimizer.step`` would only run autograd and the optimizer.

    True for exactly a SingleDeviceStrategy (no gradient averaging), plain 32-bit precision (no loss
    scaling), no profiler (it times every hook call) and no callback or module override of the backward
    and optimizer-step hooks. The module decides once, when training starts.
    """
    if type(trainer.strategy) is not SingleDeviceStrategy or type(trainer.precision_plugin) is not Precision:
        return False
    if not isinstance(trainer.profiler, PassThroughProfiler):  # type: ignore[attr-defined]
        return False
    callbacks: list[Callback] = trainer.callbacks  # type: ignore[attr-defined]
    if any(is_overridden(h, cb, Callback) for cb in callbacks for h in CALLBACK_HOOKS):
        return False
    if any(is_overridden(h, module, L.LightningModule) for h in MODULE_HOOKS):
        return False
    return all(_countable(opt) for opt in trainer.strategy._lightning_optimizers)


def _countable(opt: Any) -> bool:
    return isinstance(opt, LightningOptimizer) and hasattr(opt, "_on_before_step") and hasattr(opt, "_on_after_step")


class CountedOptimizer:
    """Steps the optimizer inside a LightningOptimizer directly, keeping Lightning's step count.

    ``_on_before_step`` / ``_on_after_step`` are what Lightning's manual-optimization loop installs on
    each LightningOptimizer to count steps (and open the profiler's ``optimizer_step`` section); they are
    looked up at every step because the loop installs them anew for every training step.
    """

    def __init__(self, lightning_optimizer: LightningOptimizer) -> None:
        self.lightning_optimizer = lightning_optimizer
        self.optimizer = lightning_optimizer.optimizer

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: None = None) -> None:
        self.lightning_optimizer._on_before_step()
        self.optimizer.step()
        self.lightning_optimizer._on_after_step()


StudentOptimizer: TypeAlias = LightningOptimizer | CountedOptimizer
