"""Learning curve: eval/return against environment steps, drawn at the end of a run."""

from __future__ import annotations

import os

import lightning as L

from callbacks.media import log_image
from lightning_meta_rl.module import MetaRLModule


class LearningCurve(L.Callback):
    """Saves ``<run_dir>/<filename>`` (eval/return vs env steps) at the end of training and logs it to W&B."""

    def __init__(self, filename: str = "learning_curve.png") -> None:
        self.filename = filename

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not isinstance(pl_module, MetaRLModule) or not pl_module.history.rows:
            return
        import matplotlib.pyplot as plt

        rows = pl_module.history.rows
        steps = [r["env_steps"] for r in rows]
        returns = [r["eval/return"] for r in rows]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(steps, returns, marker="o", markersize=3, label=pl_module.teacher_cfg.kind)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("eval/return")
        ax.set_title(f"{trainer.datamodule.env_id}: {pl_module.teacher_cfg.kind}")  # type: ignore[attr-defined]
        ax.grid(alpha=0.3)
        ax.legend()
        path = os.path.join(trainer.default_root_dir, self.filename)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        log_image(trainer, "learning_curve", path)
