"""A progress bar that counts environment steps against the budget."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from lightning_meta_rl.datamodule import RolloutDataModule
from lightning_meta_rl.module import MetaRLModule


class EnvStepProgressBar(TQDMProgressBar):
    """Shows env steps / budget, environment steps per second and the latest evaluation return.

    After a resume the bar starts at the restored count (tqdm's ``initial``), so its rate and ETA count only
    the steps this process ran. The final state prints once, when the bar closes, with this bar's postfix
    (not Lightning's ``v_num`` and logged metrics)."""

    def _rollout_data(self, trainer: L.Trainer) -> RolloutDataModule | None:
        dm = getattr(trainer, "datamodule", None)
        return dm if isinstance(dm, RolloutDataModule) else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = self._rollout_data(trainer)
        if dm is None:
            return super().on_train_start(trainer, pl_module)
        self.train_progress_bar = Tqdm(
            desc="env steps",
            total=dm.total_env_steps,
            initial=min(dm.env_steps, dm.total_env_steps),  # restored steps: not in the rate or the ETA
            unit="steps",
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,  # the rate over the whole run (of this process)
            bar_format=self.BAR_FORMAT,
        )

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self._rollout_data(trainer) is None:
            super().on_train_epoch_start(trainer, *args)
        # else keep the env-step total set in on_train_start (epochs mean nothing here)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, int | str | float | dict]:
        if self._rollout_data(trainer) is None:
            return super().get_metrics(trainer, pl_module)
        postfix: dict[str, int | str | float | dict] = {}
        if isinstance(pl_module, MetaRLModule) and pl_module.history.rows:
            postfix["eval"] = f"{pl_module.history.rows[-1]['eval/return']:.1f}"
        return postfix

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        dm = self._rollout_data(trainer)
        if dm is None:
            return super().on_train_batch_end(trainer, pl_module, *args)
        bar = self.train_progress_bar
        bar.n = min(dm.env_steps, dm.total_env_steps)
        bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
        if bar.n < dm.total_env_steps:  # the final state is printed once, by on_train_end
            bar.refresh()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._rollout_data(trainer) is None:
            super().on_train_epoch_end(trainer, pl_module)
        # else nothing: Lightning would refresh the bar here, printing the final state a second time

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = self._rollout_data(trainer)
        if dm is not None:
            self.train_progress_bar.n = min(dm.env_steps, dm.total_env_steps)
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
        super().on_train_end(trainer, pl_module)  # closes the bar: its final state, once

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # a run stopped by an exception leaves no open bar to be drawn again when the process exits (no bar
        # yet: Lightning's property refuses with a TypeError before on_train_start)
        with contextlib.suppress(TypeError):
            self.train_progress_bar.close()
