"""Stopping on a signal without losing work: SIGTERM (a scheduler's preemption), SIGINT (Ctrl-C) and SIGUSR1
(SLURM's warning before a time limit) end the run at the next iteration boundary with a complete checkpoint."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from lightning_meta_rl.checkpoint import EnvStepCheckpoint

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, name))


class GracefulStop(Callback):
    """Turns a stop signal into a clean end of training.

    At the start of training (after Lightning has installed its own handlers) this installs handlers for
    SIGTERM, SIGINT and SIGUSR1 that only record the signal. At the next iteration boundary every process
    stops together (``trainer.should_stop``) and the :class:`EnvStepCheckpoint` saves ``last.ckpt``
    (atomically); ``signal_received`` then names the signal, so that the caller can exit with a status that
    says the run was stopped (the CLI: 128 + the signal's number). A second signal while the checkpoint is
    being written is recorded and ignored; only SIGKILL can cut a save short, and an atomic save survives
    that too.

    Under SLURM with Lightning's auto-requeue, Lightning's own SIGUSR1 handler (save and ``scontrol
    requeue``) is called after the checkpoint is saved, at the boundary rather than in the middle of an
    iteration. Other handlers a program installed before training are restored when training ends.
    """

    def __init__(self) -> None:
        self.signal_received: int | None = None
        self.env_steps: int | None = None  # where the run stopped, once it has
        self._previous: dict[int, Any] = {}

    # ---------------------------------------------------------------- handlers
    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_received is None:
            self.signal_received = signum

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.signal_received = None
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._record)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            if handler is not None:
                signal.signal(signum, handler)
        self._previous = {}

    # ---------------------------------------------------------------- the boundary
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # every process stops at the same iteration as soon as one has been signalled
        stop = trainer.strategy.reduce_boolean_decision(self.signal_received is not None, all=False)
        if not stop:
            return
        if self.signal_received is None:  # another rank was signalled
            self.signal_received = int(signal.SIGTERM)
        trainer.should_stop = True
        self.env_steps = trainer.datamodule.env_steps  # type: ignore[attr-defined]
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, EnvStepCheckpoint):
                cb.save(trainer)
        self._hand_on(self.signal_received)

    def _hand_on(self, signum: int) -> None:
        """A handler that was there before ours (Lightning's SLURM auto-requeue for SIGUSR1) runs now, at a
        safe point; the default actions (terminate, KeyboardInterrupt) are what this callback replaces."""
        previous = self._previous.get(signum)
        default = (signal.SIG_DFL, signal.SIG_IGN, signal.default_int_handler, None)
        if signum == getattr(signal, "SIGUSR1", None) and callable(previous) and previous not in default:
            previous(signum, None)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()


def resume_args(argv: list[str], run_dir: str) -> list[str]:
    """The command-line arguments that resume a run started with ``argv``: the same, with this ``--run_dir``
    and ``--ckpt_path last``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--run_dir", "--ckpt_path"):
            skip = True
            continue
        if arg.startswith(("--run_dir=", "--ckpt_path=")):
            continue
        out.append(arg)
    return [*out, "--run_dir", run_dir, "--ckpt_path", "last"]
