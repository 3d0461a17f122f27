"""Shared helpers for callbacks that draw figures: a headless matplotlib and a W&B image upload."""

from __future__ import annotations

import warnings

import lightning as L
import matplotlib

matplotlib.use("Agg")  # headless: no display on training machines

from lightning.pytorch.loggers import WandbLogger


def log_image(trainer: L.Trainer, key: str, path: str) -> None:
    """Send a saved PNG to W&B if the run logs there; a W&B failure never stops training."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            try:
                logger.log_image(key=key, images=[path])
            except Exception as exc:
                warnings.warn(f"could not log {key} to W&B: {exc}", stacklevel=2)
