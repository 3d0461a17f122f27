"""W&B logger that plots against environment steps and never lets W&B trouble stop training."""

from __future__ import annotations

import inspect
import math
import os
import re
import warnings
from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

STEP_METRIC = "env_steps"
_RUN_FOLDER = re.compile(r"^(?:offline-)?run-(\d{8}_\d{6})-(\w+)$")  # W&B's folder per run: [offline-]run-<time>-<id>


def previous_run_id(save_dir: str) -> str | None:
    """The id of the latest W&B run stored under ``<save_dir>/wandb`` (None if there is none): a resumed
    training continues that run instead of starting a second one."""
    try:
        names = os.listdir(os.path.join(save_dir, "wandb"))
    except OSError:
        return None
    runs = sorted(m.groups() for m in map(_RUN_FOLDER.match, names) if m is not None)
    return runs[-1][1] if runs else None


def wandb_init_args(*args: Any, **kwargs: Any) -> dict[str, Any] | None:
    """``wandb.init``'s arguments for Lightning's WandbLogger constructor arguments, as Lightning maps them
    (name, project, directory, id, resume), without ``anonymous`` unless it was asked for; ``offline`` is kept
    for the caller. None with ``log_model`` or ``experiment``, which only Lightning's own start handles."""
    bound = inspect.signature(_LightningWandbLogger.__init__).bind(None, *args, **kwargs).arguments
    if bound.get("log_model") or bound.get("experiment") is not None:
        return None
    directory = bound.get("save_dir") or bound.get("dir")
    out: dict[str, Any] = {
        "name": bound.get("name"),
        "project": bound.get("project") or os.environ.get("WANDB_PROJECT", "lightning_logs"),
        "dir": None if directory is None else os.fspath(directory),
        "id": bound.get("version") or bound.get("id"),
        "resume": "allow",
        "offline": bool(bound.get("offline")),
    }
    if bound.get("anonymous"):
        out["anonymous"] = "allow"
    return out | bound.get("kwargs", {})


class WandbLogger(_LightningWandbLogger):
    """Lightning's WandbLogger with three changes.

    - Charts use ``env_steps`` (environment steps so far) as their x-axis instead of the optimizer-step
      counter, which counts three optimizers and means nothing to an RL user.
    - If the run cannot start online (no network, bad credentials) it falls back to offline mode, and a
      failed ``log_*`` call is reported once as a warning; training goes on either way.
    - The deprecated ``anonymous`` setting is not passed to W&B unless asked for: the run is started here by
      ``wandb.init`` with the constructor's own arguments (Lightning passes ``anonymous=None`` on every run,
      and W&B >= 0.19 prints a deprecation warning for it). With ``log_model``, Lightning starts the run
      itself (its checkpoint upload at the end needs its own reference to the run).
    """

    _warned = False
    _run: Any = None  # the run once started

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.init_args = wandb_init_args(*args, **kwargs)  # None: leave starting the run to Lightning

    @property
    def version(self) -> str | None:
        return self._run.id if self._run is not None else super().version

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._run is not None:
            return self._run
        try:
            run = self._start()
        except Exception as exc:
            warnings.warn(f"W&B could not start ({exc}); logging offline instead", stacklevel=2)
            os.environ["WANDB_MODE"] = "offline"  # wandb.init reads it (unless a mode was passed explicitly)
            if self.init_args is not None:
                self.init_args["mode"] = "offline"
            run = self._start()
        define = getattr(run, "define_metric", None)
        if define is not None:
            define(STEP_METRIC)
            define("*", step_metric=STEP_METRIC, step_sync=True)
        self._run = run
        return run

    def _start(self) -> Any:
        if self.init_args is None:
            return super().experiment
        import wandb

        if self.init_args.pop("offline", False):
            os.environ["WANDB_MODE"] = "offline"
        if wandb.run is not None:  # as Lightning does: one process, one run
            warnings.warn("a W&B run is already in progress in this process: this logger logs to it", stacklevel=3)
            return wandb.run
        return wandb.init(**self.init_args)

    def _guard(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as exc:
            if not self._warned:
                warnings.warn(f"W&B {what} failed ({exc}); training continues", stacklevel=3)
                self._warned = True

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        # NaN means "not measured in this iteration" (MetaRLModule.on_train_batch_end). W&B handles a
        # missing key natively; a NaN would become the value shown in the run's summary.
        measured = {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}
        self._guard("log_metrics", super().log_metrics, measured, step)

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        self._guard("log_hyperparams", super().log_hyperparams, params)

    @rank_zero_only
    def log_image(self, key: str, images: list[Any], step: int | None = None, **kwargs: Any) -> None:
        self._guard("log_image", super().log_image, key, images, step, **kwargs)
