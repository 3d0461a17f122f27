"""The run directory's life: its name, the lock that keeps it to one run at a time, the refusal to reuse a
non-empty one, and the removal of one that a refused start had begun (a start that failed leaves nothing
behind; a run that trained keeps everything)."""

from __future__ import annotations

import datetime
import os
import re
import shutil
import socket
from collections.abc import Callable
from typing import IO, Any

from lightning_meta_rl.errors import RunFailed, UserError

RUN_DIR_ENV = "LIGHTNING_META_RL_RUN_DIR"  # lets DDP's re-launched ranks reuse rank 0's run directory
LOCK_NAME = ".lock"  # holds the running process's id; locked (flock) for the life of a fit


class RunLock:
    """An exclusive lock on a run directory, held for the life of the process that takes it.

    The lock is an ``flock`` on ``<run_dir>/.lock``: the operating system releases it when the process ends
    in any way (SIGKILL included), so a killed run can be resumed at once; the file itself stays (it names
    the last holder) and does not count as content of the directory."""

    def __init__(self, run_dir: str) -> None:
        self.path = os.path.join(run_dir, LOCK_NAME)
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock, or raise a UserError naming the process that holds it."""
        import fcntl

        f = open(self.path, "a+")  # noqa: SIM115 (kept open: the lock lives as long as the file)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            run_dir = os.path.dirname(self.path)
            raise UserError(
                f"Run directory '{run_dir}' is in use by a running fit ({holder}); one directory holds one run at "
                f"a time. Wait for it to end, stop it (it saves a checkpoint on SIGTERM), or choose another --run_dir."
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file releases the lock
            self._file = None


def _safe_name(text: str) -> str:
    """A directory-name component: anything but letters, digits, '.', '-' and '_' becomes '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


class RunDir:
    """The directory one CLI call uses; ``begun`` is set when this call is the one creating it, ``lock`` while
    a fit holds it."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.begun: str | None = None
        self.lock: RunLock | None = None

    def choose(self, config: Any, subcommand: str | None) -> str:
        """The run directory for ``config`` (``--run_dir``, or a fresh name under ./runs). A fit locks it, and a
        new fit (no ``--ckpt_path``) is refused a non-empty one; a directory that cannot be written is refused."""
        inherited = os.environ.get(RUN_DIR_ENV)
        if inherited and os.environ.get("LOCAL_RANK", "0") != "0":  # a rank that Lightning's DDP launcher started
            self.path = inherited
            return inherited
        if config.run_dir is None:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            prefix = "" if subcommand in (None, "fit") else f"{subcommand}_"  # an evaluation is not a training run
            name = f"{prefix}{config.data.env_id}_{config.model.teacher.kind}_seed{config.seed_everything}"
            run_dir = os.path.join("runs", _safe_name(f"{name}_{stamp}_{os.urandom(2).hex()}"))
        else:
            run_dir = str(config.run_dir)
        self.path = run_dir
        fresh_fit = subcommand == "fit" and config.get("ckpt_path") is None
        if fresh_fit and self._has_content(run_dir):  # refused before anything is written into it
            self._refuse_non_empty(run_dir)
        self._make(run_dir)
        if subcommand == "fit" and _first_process():
            self.lock = RunLock(run_dir)
            try:
                self.lock.acquire()
            except UserError:
                self.lock, self.begun = None, None  # the directory belongs to the run that holds it
                raise
            except OSError as exc:
                self.lock = None
                raise self._unwritable(run_dir, exc) from None
            if fresh_fit and self._has_content(run_dir):  # another fit wrote into it since the check above
                self.release()
                self.begun = None
                self._refuse_non_empty(run_dir)
        os.environ[RUN_DIR_ENV] = run_dir
        return run_dir

    @staticmethod
    def _has_content(run_dir: str) -> bool:
        return os.path.isdir(run_dir) and any(f != LOCK_NAME for f in os.listdir(run_dir))

    @staticmethod
    def _refuse_non_empty(run_dir: str) -> None:
        raise UserError(
            f"Run directory '{run_dir}' already exists and is not empty; a new run never overwrites an earlier "
            f"one. Choose another --run_dir, delete that directory, or resume it with --ckpt_path."
        )

    def _make(self, run_dir: str) -> None:
        """Create the directory (``begun`` when this call created it) and check that it can be written."""
        try:
            os.makedirs(os.path.dirname(os.path.abspath(run_dir)), exist_ok=True)
            try:
                os.mkdir(run_dir)
                self.begun = run_dir
            except FileExistsError:
                self.begun = None
                if not os.path.isdir(run_dir):
                    raise NotADirectoryError(f"'{run_dir}' is a file") from None
            if not os.access(run_dir, os.W_OK | os.X_OK):
                raise PermissionError("no write permission")
        except OSError as exc:
            raise self._unwritable(run_dir, exc) from None

    @staticmethod
    def _unwritable(run_dir: str, exc: OSError) -> UserError:
        reason = exc.strerror or str(exc)
        return UserError(
            f"Run directory '{run_dir}' cannot be created or written ({reason}). Choose a --run_dir on a writable "
            f"file system, or fix its permissions."
        )

    def release(self) -> None:
        """Let go of the lock (the process's end does the same)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def remove_if_refused(self, exc: UserError, before_removal: Callable[[], None] = lambda: None) -> None:
        """After a refused start: remove the directory this call began (its config.yaml, a W&B stub), unless
        training had begun (RunFailed) or it holds a checkpoint, which is never deleted."""
        run_dir, self.begun = self.begun, None
        if run_dir is None or isinstance(exc, RunFailed) or not os.path.isdir(run_dir):
            return
        checkpoints = os.path.join(run_dir, "checkpoints")
        if os.path.isdir(checkpoints) and os.listdir(checkpoints):
            return
        before_removal()
        self.release()
        shutil.rmtree(run_dir, ignore_errors=True)


def _first_process() -> bool:
    """True in the process that owns the run directory: not a DDP rank started by a launcher, nor another node
    or task of a multi-process job."""
    return all(os.environ.get(v, "0") == "0" for v in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "RANK"))
