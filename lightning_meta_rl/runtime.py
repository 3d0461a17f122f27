"""Process set-up for a run: torch threads, denormal flushing, the accelerator asked for, W&B's mode and
closing, and a quiet console (Lightning's start-up banners and two known, harmless library warnings)."""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from lightning_meta_rl.errors import UserError


def wandb_has_credentials() -> bool:
    """True when W&B could log online: an API key in the environment or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def default_wandb_mode() -> None:
    """W&B works out of the box: offline without credentials (``wandb sync`` uploads later), and quiet."""
    if not os.environ.get("WANDB_MODE") and not wandb_has_credentials():
        os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")


def finish_wandb(exit_code: int = 0, preempted: bool = False) -> None:
    """Close the W&B run (Lightning does not), so the offline directory is complete; W&B marks a run with
    a non-zero exit code as failed, and one stopped by a signal (``preempted``) as preempted (resumable)."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if wandb is not None and run is not None:
        mark = getattr(run, "mark_preempting", None)
        if preempted and callable(mark):
            mark()
        wandb.finish(exit_code=exit_code)


def check_accelerator(accelerator: Any) -> None:
    """A GPU asked for on a machine that has none is refused in words, before Lightning's traceback."""
    name = str(getattr(accelerator, "class_path", accelerator)).lower()
    if name in ("gpu", "cuda") and not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
        raise UserError(
            f"--trainer.accelerator={name} was asked for, but torch sees no CUDA GPU here ({build}). Use "
            f"--trainer.accelerator=cpu (or auto), or install a CUDA build of torch on a machine with a GPU."
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--trainer.accelerator=mps was asked for, but this machine has no Apple GPU; use cpu or auto.")


def set_torch_threads(threads: int | None) -> str:
    """Give this process a safe number of torch threads; returns how many and why, for the start-up line."""
    if threads is not None:
        if threads <= 0:
            raise UserError(f"--torch_threads must be positive, got {threads}")
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # DDP's launcher would otherwise pick its own count
        return f"torch threads {threads} (--torch_threads)"
    if os.environ.get("OMP_NUM_THREADS"):
        return f"torch threads {torch.get_num_threads()} (OMP_NUM_THREADS)"
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # DDP's launcher would otherwise pick its own count for every rank
    return "torch threads 1 (default; --torch_threads=N for more)"


def set_flush_denormal(flush: bool) -> str:
    """The main thread's flag (x86 FTZ/DAZ): with one torch thread every CPU kernel runs there. Returns a note
    for the start-up line."""
    flushed = torch.set_flush_denormal(flush)
    return "; denormals flushed to zero" if flush and flushed else ""


SEED_ENV = "PL_GLOBAL_SEED"  # set by lightning.seed_everything (the CLI calls it with --seed_everything)


def global_seed() -> str | None:
    """The seed lightning.seed_everything gave torch's global generator in this process, if any."""
    return os.environ.get(SEED_ENV)


def warn_if_unseeded(seed_at_build: str | None) -> None:
    """A model whose initial weights came from an unseeded generator cannot be repeated exactly: say so once,
    when a fresh fit starts (code that builds the objects itself; the CLI always seeds)."""
    if seed_at_build is None:
        from lightning.pytorch.utilities import rank_zero_warn

        rank_zero_warn(
            "The model was built before any lightning.seed_everything(seed): its initial weights come from torch's "
            "unseeded generator, so this run cannot be repeated exactly (the data module's seed covers only the "
            "environments and sampling). Call L.seed_everything(seed) before building the model."
        )


# Lightning's start-up banners, logged at INFO through its rank-zero loggers (lightning_utilities' rank_zero_info
# writes to whichever of the two rank_zero loggers was imported last) and through seed_everything's logger.
LIGHTNING_INFO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.seed",
)
BANNERS = re.compile(r"(\N{ELECTRIC LIGHT BULB} Tip: |GPU available: |TPU available: |HPU available: |Seed set to )")
# Known and harmless: Lightning 2.6 calls torch's deprecated LeafSpec (torch >= 2.9), and the data module's
# validation loader is empty on purpose (evaluation runs in the environments, not through a loader).
HARMLESS_WARNINGS = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    (r"Total length of `DataLoader` across ranks is zero", UserWarning),
)


class _DropBanners(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not BANNERS.match(record.getMessage())


_DROP_BANNERS = _DropBanners()


def quiet_console() -> None:
    """Called by the CLI at start (never on import: code that uses the package keeps Lightning's defaults).
    Drops Lightning's tip, device-availability and seed banners (its other messages still print) and ignores
    the two warnings above by their exact message; every other warning still shows."""
    for name in LIGHTNING_INFO_LOGGERS:
        logger = logging.getLogger(name)
        if _DROP_BANNERS not in logger.filters:
            logger.addFilter(_DROP_BANNERS)
    for message, category in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
