"""A study's runs as population jobs: one process trains all seeds of a (task, arm) cell (``--population``).

- ``population_jobs``: a cell's seeds as jobs, one per run of consecutive seeds. Seeds 200-219 are one job
  (``--seed_everything=200 --population=20``); seeds 200-204 and 210-214 are two.
- ``PopulationJob``: a job's fixed folder ``<runs>/<name>``, its command and when it is done. runlib's runner
  runs it like a single run: a finished job is never redone, an interrupted one resumes from its
  ``checkpoints/last.ckpt`` (the same as ``--ckpt_path last`` with that folder as ``--run_dir``).
- ``seed_results``: each seed's evaluations, read from ``<job folder>/seed_<s>/metrics.csv`` (a job of one
  seed is an ordinary run, ``<job folder>/metrics.csv``). A report gets the same per-seed records whether
  the seeds ran in one population or in several.
- ``run_job``: one job by name, what each run of a sweep does; ``sweep_config`` / ``write_sweep``: a W&B grid
  sweep with one run per job, so that any number of machines (``wandb agent``) share a study.

A study script (confirmation.py) lists its jobs and gives them to runlib's ``run_all`` (one machine, ``--jobs``
processes) or writes them as a sweep whose command calls the script back with ``--job=<name>``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml
from runlib import final_score, finished, read_metrics, run, study_command

from lightning_meta_rl.cli import EXIT_RETIRED


@dataclass(frozen=True)
class PopulationJob:
    """Consecutive seeds of one arm on one task, trained in one process: ``conf/<config>`` plus ``overrides``.

    The CLI exits with EXIT_RETIRED when a population finished with some seeds retired (diverged): the job
    ran to its end, and those seeds' results are kept (``SeedResult.retired``).
    """

    env: str
    arm: str
    config: str  # a file name under conf/, e.g. pendulum_ddpg.yaml
    first_seed: int
    size: int  # how many seeds: first_seed, first_seed + 1, ...
    budget: int  # environment steps per seed
    overrides: tuple[str, ...] = ()
    exit_ok: ClassVar[tuple[int, ...]] = (0, EXIT_RETIRED)

    @property
    def seeds(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.size))

    @property
    def name(self) -> str:
        last = self.first_seed + self.size - 1
        seeds = f"seed{last}" if self.size == 1 else f"seeds{self.first_seed}-{last}"
        return f"{self.env}_{self.arm}_{seeds}"

    def seed_dir(self, run_dir: Path, seed: int) -> Path:
        """Where a seed's ``metrics.csv`` is: ``seed_<s>/`` in a population, the folder itself in a single run."""
        return run_dir / f"seed_{seed}" if self.size > 1 else run_dir

    def command(self, run_dir: Path, ckpt: Path | None) -> list[str]:
        population = [f"--population={self.size}"] if self.size > 1 else []
        args = [*population, "--trainer.logger=false", *self.overrides]
        return study_command(self.config, self.first_seed, self.budget, run_dir, *args, ckpt=ckpt)

    def done(self, run_dir: Path) -> bool:
        """Whether some seed's metrics reached the budget. The members step together, so the seeds still
        training reach it at the same moment; a retired seed's metrics stop where it was retired."""
        return any(reached(read_metrics(self.seed_dir(run_dir, s)), self.budget) for s in self.seeds)


def reached(rows: list[dict[str, str]], budget: int) -> bool:
    return bool(rows) and float(rows[-1]["env_steps"]) >= budget


def consecutive(seeds: Iterable[int]) -> list[list[int]]:
    """The seeds (sorted, without repeats) cut into runs of consecutive numbers: [3, 1, 2, 7] -> [[1, 2, 3], [7]]."""
    runs: list[list[int]] = []
    for seed in sorted(set(seeds)):
        if runs and seed == runs[-1][-1] + 1:
            runs[-1].append(seed)
        else:
            runs.append([seed])
    return runs


def population_jobs(
    env: str, arm: str, config: str, seeds: Iterable[int], budget: int, overrides: Sequence[str] = ()
) -> list[PopulationJob]:
    """One cell's seeds as population jobs, one per run of consecutive seeds."""
    return [PopulationJob(env, arm, config, run[0], len(run), budget, tuple(overrides)) for run in consecutive(seeds)]


@dataclass(frozen=True)
class SeedResult:
    """One seed's run in a finished job: its evaluation rows (``metrics.csv``), and whether it was retired
    (diverged) before the budget while the rest of its population went on."""

    env: str
    arm: str
    seed: int
    rows: list[dict[str, str]]
    retired: bool

    @property
    def final_score(self) -> float:
        return final_score(self.rows) if self.rows else math.nan


def seed_results(job: PopulationJob, runs: Path) -> list[SeedResult]:
    """The per-seed results of a finished job (runlib's ``finished``), in seed order."""
    if not finished(job, runs):
        raise ValueError(f"{job.name} is not finished: its seeds have no results yet")
    out = []
    for seed in job.seeds:
        rows = read_metrics(job.seed_dir(runs / job.name, seed))
        out.append(SeedResult(job.env, job.arm, seed, rows, retired=not reached(rows, job.budget)))
    return out


def find_job(jobs: Sequence[PopulationJob], name: str) -> PopulationJob:
    for job in jobs:
        if job.name == name:
            return job
    raise SystemExit(f"no job named {name!r} in this study; its jobs: {', '.join(j.name for j in jobs)}")


def run_job(job: PopulationJob, runs: Path) -> None:
    """Run one job to its end (resumed if it was interrupted); a finished job is left as it is. In a run that
    a W&B agent started (``WANDB_SWEEP_ID`` is set), each seed's final score goes to that run's summary."""
    if finished(job, runs):
        print(f"{job.name}: already finished, nothing to do", flush=True)
    else:
        run(job, runs)
    if os.environ.get("WANDB_SWEEP_ID"):
        import wandb

        with wandb.init(config={"job": job.name}) as sweep_run:
            for result in seed_results(job, runs):
                sweep_run.summary[f"final_score/seed_{result.seed}"] = result.final_score


def sweep_config(jobs: Sequence[PopulationJob], program: str, args: Sequence[str] = ()) -> dict[str, Any]:
    """A W&B grid sweep with one run per job: ``<interpreter> <program> <args> --job=<name>``. ``program`` is
    the study script's path from the repository root (where ``wandb agent`` is started)."""
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"two jobs share a name: {names}")
    return {
        "program": program,
        "method": "grid",
        "parameters": {"job": {"values": names}},
        # W&B expands ${args} to --job=<name>, the one parameter of the grid
        "command": ["${env}", "${interpreter}", program, *args, "${args}"],
    }


def write_sweep(path: Path, jobs: Sequence[PopulationJob], program: str, args: Sequence[str] = ()) -> None:
    header = (
        f"# W&B grid sweep: one run per population job ({len(jobs)} jobs), written by {program} --write-sweep.\n"
        "#   wandb sweep <this file>                 # prints ENTITY/PROJECT/SWEEP_ID (needs a W&B account)\n"
        "#   wandb agent ENTITY/PROJECT/SWEEP_ID     # on each machine, from the repository root\n"
        "# A job that an agent runs again resumes from its checkpoint, or does nothing if it is finished.\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(sweep_config(jobs, program, args), sort_keys=False))
