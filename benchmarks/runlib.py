"""What the study scripts share: one training as a subprocess of the real CLI, its metrics, its final score,
and a resumable runner for many of them.

Imported by reproduce.py, investigate.py, fair_study.py, population_jobs.py and the speed benchmarks (their
result files), whose population jobs the
same runner runs (it takes any job with a ``name``, a ``command``, a ``done`` test and its ``exit_ok``
statuses). A script run as ``python benchmarks/<name>.py`` has this folder on ``sys.path``; the tests get it
from ``pythonpath`` in pyproject.toml.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from lightning_meta_rl.evaluation import EvalHistory

ROOT = Path(__file__).resolve().parents[1]


def final_score(rows: list[dict[str, str]]) -> float:
    """The run's final score from its ``metrics.csv`` rows, by the library's one definition
    (``EvalHistory.final_score``: mean eval/return over the last 10% of evaluation points, at least one)."""
    history = EvalHistory()
    history.load_state_dict({"rows": [{"eval/return": float(r["eval/return"])} for r in rows]})
    return history.final_score()


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    """The evaluation rows of ``run_dir/metrics.csv`` (none if it does not exist yet)."""
    path = run_dir / "metrics.csv"
    if not path.exists():
        return []
    with open(path) as f:  # a row still being written by a running job is skipped
        return [r for r in csv.DictReader(f) if None not in r.values() and r.get("eval/return") != ""]


def fit_command(config: str | Path, *args: str) -> list[str]:
    """``python -m lightning_meta_rl fit --config <config> <args>`` with this interpreter."""
    return [sys.executable, "-m", "lightning_meta_rl", "fit", "--config", str(config), *args]


def commit() -> str:
    """The checked-out commit the commands ran (with ``+changes`` when the code differs from it; result files
    do not count)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return (head.stdout.strip() or "unknown") + (" +changes" if dirty.stdout.strip() else "")


def write_keeping_earlier(path: Path, text: str) -> None:
    """A result file: ``text``, then what the file held before under "Earlier runs of this file" (its headings one
    level down), so that a rerun never loses a committed figure."""
    earlier = path.read_text() if path.exists() else ""
    demoted = re.sub(r"^(#{1,5}) ", r"#\1 ", earlier, flags=re.MULTILINE)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + (f"\n## Earlier runs of this file\n\n{demoted}" if earlier else ""))


def write_rows(path: Path, rows: list[dict[str, object]]) -> None:
    """One CSV row per dict (nothing is written for no rows)."""
    if not rows:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def study_command(config: str, seed: int, budget: int, run_dir: Path, *args: str, ckpt: Path | None) -> list[str]:
    """The command of one study run: ``conf/<config>`` with the seed, budget and run directory every study sets,
    then ``args`` (logger, overrides), then the checkpoint to resume from if there is one."""
    cmd = fit_command(
        ROOT / "conf" / config,
        f"--seed_everything={seed}",
        f"--data.total_env_steps={budget}",
        f"--run_dir={run_dir}",
        "--trainer.enable_progress_bar=false",
        # IEEE denormals, as every run of these studies had before the CLI's flush default (2026-12-02):
        # the protocol does not change mid-study (with LayerNorm, flushing measured no speed difference)
        "--flush_denormal=false",
        *args,
    )
    if ckpt is not None:
        cmd.append(f"--ckpt_path={ckpt}")
    return cmd


def run_quietly(cmd: list[str], label: str, exit_ok: tuple[int, ...] = (0,)) -> None:
    """One training in a subprocess with one thread and W&B off; its stderr's tail in the error if it ends
    with a status not in ``exit_ok``."""
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode not in exit_ok:
        raise RuntimeError(f"run failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    print(f"{label}: done in {time.perf_counter() - t0:.0f} s", flush=True)


@dataclass(frozen=True)
class Job:
    """One run of a study: a shipped config (DDPG arm: ``<env>_ddpg.yaml``, every other arm: ``<env>.yaml``)
    plus overrides."""

    env: str
    arm: str
    seed: int
    budget: int
    overrides: tuple[str, ...] = ()
    log_csv: bool = False  # also write every iteration's metrics (meta/reward, ...) with a CSVLogger
    exit_ok: ClassVar[tuple[int, ...]] = (0,)

    @property
    def name(self) -> str:
        return f"{self.env}_{self.arm}_seed{self.seed}"

    def command(self, run_dir: Path, ckpt: Path | None) -> list[str]:
        config = f"{self.env}_ddpg.yaml" if self.arm == "ddpg" else f"{self.env}.yaml"
        if self.log_csv:
            logger = [
                "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
                f"--trainer.logger.save_dir={run_dir}",
                "--trainer.logger.name=iterations",
                "--trainer.log_every_n_steps=1",
            ]
        else:
            logger = ["--trainer.logger=false"]
        return study_command(config, self.seed, self.budget, run_dir, *logger, *self.overrides, ckpt=ckpt)

    def done(self, run_dir: Path) -> bool:
        """Whether the run's metrics in ``run_dir`` reached its budget."""
        rows = read_metrics(run_dir)
        return bool(rows) and float(rows[-1]["env_steps"]) >= self.budget


class Runnable(Protocol):
    """What the runner needs of a job: its name (its folder under the runs folder), its command (resumed from
    a checkpoint when given one), whether its folder holds a finished run, and the exit statuses that mean
    it ran to its end."""

    exit_ok: ClassVar[tuple[int, ...]]

    @property
    def name(self) -> str: ...

    def command(self, run_dir: Path, ckpt: Path | None) -> list[str]: ...

    def done(self, run_dir: Path) -> bool: ...


def finished(job: Runnable, runs: Path) -> bool:
    """Whether the job's run under ``runs`` is finished."""
    return job.done(runs / job.name)


def run(job: Runnable, runs: Path) -> None:
    """The job, continued from its last checkpoint if it has one (otherwise started afresh)."""
    run_dir = runs / job.name
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.exists() and run_dir.exists():  # interrupted before its first checkpoint: start again
        shutil.rmtree(run_dir)
    run_quietly(job.command(run_dir, ckpt if ckpt.exists() else None), job.name, job.exit_ok)


def run_all(todo: Sequence[Runnable], runs: Path, jobs: int, after_each: Callable[[], None]) -> None:
    """Run ``todo`` with ``jobs`` processes at once; ``after_each`` (under a lock) after every finished run.
    A failed run is reported and the others go on; the script exits non-zero at the end if any failed."""
    lock = threading.Lock()
    failures: list[str] = []

    def work(job: Runnable) -> None:
        try:
            run(job, runs)
        except RuntimeError as err:
            print(err, file=sys.stderr, flush=True)
            failures.append(job.name)
        with lock:
            after_each()

    print(f"{len(todo)} runs to do", flush=True)
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(work, todo))
    if failures:
        after_each()
        sys.exit(f"{len(failures)} runs failed: {', '.join(failures)}")
