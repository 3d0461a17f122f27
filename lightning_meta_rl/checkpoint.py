"""Checkpoints every N environment steps, written atomically (a kill never leaves a half-written file)."""

from __future__ import annotations

import os
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class EnvStepCheckpoint(ModelCheckpoint):
    """Keeps ``last.ckpt`` current: saved at the first iteration boundary past every ``every_env_steps``
    environment steps (default: the DataModule's ``eval_every``) and at the end of training.

    Every save goes to a temporary file first and is renamed over the old one, so a run killed at any
    moment (even with SIGKILL) leaves the previous complete checkpoint in place; resume it with
    ``fit --ckpt_path last`` (or the file's path) and the same ``--run_dir``.
    """

    def __init__(self, every_env_steps: int | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("save_top_k", 0)
        super().__init__(save_last=True, **kwargs)
        if every_env_steps is not None and every_env_steps <= 0:
            raise ValueError(f"every_env_steps must be positive, got {every_env_steps}")
        self.every_env_steps = every_env_steps
        self._next_save: int | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        dm = trainer.datamodule  # type: ignore[attr-defined]
        every = self.every_env_steps or dm.eval_every
        if self._next_save is None:
            self._next_save = (dm.env_steps // every + 1) * every
        due = trainer.strategy.reduce_boolean_decision(dm.env_steps >= self._next_save, all=False)
        if due and not trainer.should_stop:  # the final save happens at the end of training
            self._next_save = (dm.env_steps // every + 1) * every
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        tmp = filepath + ".tmp"
        trainer.save_checkpoint(tmp, self.save_weights_only)
        if trainer.is_global_zero:
            os.replace(tmp, filepath)
        trainer.strategy.barrier("EnvStepCheckpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
