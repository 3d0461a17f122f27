"""Test-only callback for tests/test_ddp.py: every rank saves what it ended training with.

Used from the command line of a DDP subprocess as ``--trainer.callbacks+=ddp_probe.DDPProbe`` with
``PYTHONPATH`` pointing at this directory. On ``on_train_end`` rank R writes
``<default_root_dir>/probe_rank{R}.pt`` holding the teacher's, the student's and the target networks'
parameters (at the start and at the end of training), the observations of the rank's first D0 and its
counters.
"""

from __future__ import annotations

import os
from typing import Any

import lightning as L
import torch


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


class DDPProbe(L.Callback):
    def __init__(self) -> None:
        self.first_d0_obs: torch.Tensor | None = None
        self.initial: dict[str, dict[str, torch.Tensor]] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.initial = {
            "teacher": _cpu(pl_module.exploration.state_dict()),  # type: ignore[union-attr]
            "student": _cpu(pl_module.student.state_dict()),  # type: ignore[union-attr]
        }

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        record = getattr(pl_module, "last_iteration", None)
        if self.first_d0_obs is None and record is not None:
            self.first_d0_obs = record.d0.obs.detach().cpu().clone()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        student = _cpu(pl_module.student.state_dict())  # type: ignore[union-attr]
        probe = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "teacher": _cpu(pl_module.exploration.state_dict()),  # type: ignore[union-attr]
            "student": {k: v for k, v in student.items() if "_target." not in k},
            "target": {k: v for k, v in student.items() if "_target." in k},
            "initial": self.initial,
            "first_d0_obs": self.first_d0_obs,
            "env_steps": trainer.datamodule.env_steps,  # type: ignore[attr-defined]
            "global_step": trainer.global_step,
        }
        torch.save(probe, os.path.join(trainer.default_root_dir, f"probe_rank{trainer.global_rank}.pt"))
