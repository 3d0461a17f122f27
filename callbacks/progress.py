"""A progress bar that counts environment steps against the budget."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from lightning_meta_rl.datamodule import RolloutDataModule
from lightning_meta_rl.module import MetaRLModule


class EnvStepProgressBar(TQDMProgressBar):
    """Shows env steps / budget, environment steps per second and the latest evaluation return."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        dm = trainer.datamodule  # type: ignore[attr-defined]
        if isinstance(dm, RolloutDataModule):
            self.train_progress_bar.reset(total=dm.total_env_steps)
            self.train_progress_bar.set_description("env steps")
            self.train_progress_bar.n = dm.env_steps
        self._t0, self._steps0 = time.perf_counter(), getattr(dm, "env_steps", 0)

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        pass  # keep the env-step total set in on_train_start (epochs mean nothing here)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        dm = trainer.datamodule  # type: ignore[attr-defined]
        if not isinstance(dm, RolloutDataModule):
            return super().on_train_batch_end(trainer, pl_module, *args)
        bar = self.train_progress_bar
        bar.n = min(dm.env_steps, dm.total_env_steps)
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        postfix: dict[str, str] = {"steps/s": f"{(dm.env_steps - self._steps0) / elapsed:.0f}"}
        if isinstance(pl_module, MetaRLModule) and pl_module.history.rows:
            postfix["eval"] = f"{pl_module.history.rows[-1]['eval/return']:.1f}"
        bar.set_postfix(postfix, refresh=False)
        bar.refresh()
