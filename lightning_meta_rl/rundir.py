"""The run directory's life: its name, the refusal to reuse a non-empty one, and the removal of one that a
refused start had begun (a start that failed leaves nothing behind; a run that trained keeps everything)."""

from __future__ import annotations

import datetime
import os
import shutil
from collections.abc import Callable
from typing import Any

from lightning_meta_rl.errors import TrainingDiverged, UserError

RUN_DIR_ENV = "LIGHTNING_META_RL_RUN_DIR"  # lets DDP's re-launched ranks reuse rank 0's run directory


class RunDir:
    """The directory one CLI call uses; ``begun`` is set when this call is the one creating it."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.begun: str | None = None

    def choose(self, config: Any, subcommand: str | None) -> str:
        """The run directory for ``config`` (``--run_dir``, or a fresh name under ./runs), refused when a new
        fit would write into a non-empty one."""
        inherited = os.environ.get(RUN_DIR_ENV)
        if inherited and os.environ.get("LOCAL_RANK", "0") != "0":  # a rank that Lightning's DDP launcher started
            self.path = inherited
            return inherited
        if config.run_dir is None:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            env = str(config.data.env_id).replace("/", "_")
            name = f"{env}_{config.model.teacher.kind}_seed{config.seed_everything}_{stamp}_{os.urandom(2).hex()}"
            run_dir = os.path.join("runs", name)
        else:
            run_dir = str(config.run_dir)
        fresh_fit = subcommand == "fit" and config.get("ckpt_path") is None
        if fresh_fit and os.path.isdir(run_dir) and os.listdir(run_dir):
            raise UserError(
                f"Run directory '{run_dir}' already exists and is not empty; a new run never overwrites an earlier "
                f"one. Choose another --run_dir, delete that directory, or resume it with --ckpt_path."
            )
        self.path, self.begun = run_dir, None if os.path.exists(run_dir) else run_dir
        os.environ[RUN_DIR_ENV] = run_dir
        return run_dir

    def remove_if_refused(self, exc: UserError, before_removal: Callable[[], None] = lambda: None) -> None:
        """After a refused start: remove the directory this call began (its config.yaml, a W&B stub), unless
        training had begun (TrainingDiverged) or it holds a checkpoint, which is never deleted."""
        run_dir, self.begun = self.begun, None
        if run_dir is None or isinstance(exc, TrainingDiverged) or not os.path.isdir(run_dir):
            return
        checkpoints = os.path.join(run_dir, "checkpoints")
        if os.path.isdir(checkpoints) and os.listdir(checkpoints):
            return
        before_removal()
        shutil.rmtree(run_dir, ignore_errors=True)
