"""What populations saved in a real study: the fair test's single runs against the confirmation's population jobs.

Both studies ran on this project's 2-core machine, on the same five tasks with the same budgets: the fair test
(2026-12-02/03) as one process per seed, the confirmation (2026-12-04 to 12-06) as one ``--population=20``
process per (task, arm) cell. Every run's ``metrics.csv`` is committed, with the wall time of each evaluation
row since its process started. This script reads them (no training) and compares the process-seconds per
environment step of the arms both studies ran (``ddpg``, ``frozen``, ``frozen_state``), then projects the
whole fair test (all seven arms) onto the population path: each fair-test arm's process time divided by the
measured gain of its kind (the Meta protocol's arms, learned or frozen, K = 1 or 5, by ``frozen``'s or
``frozen_state``'s gain).

    python benchmarks/study_speed.py    # writes benchmarks/results/population/study_speed.md

The two studies ran on different days, with different code (the confirmation's code was older than today's
population path) and with whatever else the machine ran at the time; the comparison is of what each study
actually took, not a controlled benchmark (``population_speed.py`` is that).
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from datetime import date
from pathlib import Path

from runlib import write_keeping_earlier

ROOT = Path(__file__).resolve().parents[1]
FAIR = ROOT / "benchmarks" / "results" / "fair_test"
CONFIRMATION = ROOT / "benchmarks" / "results" / "confirmation" / "runs"
OUT = ROOT / "benchmarks" / "results" / "population" / "study_speed.md"
KIND = {  # each fair-test arm, by the confirmation arm whose gain it takes
    "ddpg": "ddpg",
    "frozen": "frozen",
    "meta": "frozen",
    "frozen_k5": "frozen",
    "meta_k5": "frozen",
    "frozen_state": "frozen_state",
    "meta_state": "frozen_state",
}


def last_row(metrics: Path) -> tuple[float, float]:
    """(env steps, wall seconds) of a run's last evaluation row."""
    with open(metrics, newline="") as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["env_steps"]), float(rows[-1]["wall_time_s"])


def fair_test() -> dict[tuple[str, str], tuple[float, float]]:
    """(task, arm) -> (env steps, process seconds) summed over the fair test's evaluation runs."""
    out: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    with open(FAIR / "evaluation_runs.csv", newline="") as f:
        for row in csv.DictReader(f):
            steps, wall = last_row(FAIR / "runs" / f"{row['env']}_{row['arm']}_seed{row['seed']}" / "metrics.csv")
            out[(row["env"], row["arm"])][0] += steps
            out[(row["env"], row["arm"])][1] += wall
    return {k: (v[0], v[1]) for k, v in out.items()}


def confirmation() -> dict[tuple[str, str], tuple[float, float]]:
    """(task, arm) -> (env steps of all its seeds, the population process's seconds)."""
    out = {}
    for job in sorted(CONFIRMATION.iterdir()):
        task, arm = _task_arm(job.name.rsplit("_seeds", 1)[0])
        ends = [last_row(seed / "metrics.csv") for seed in sorted(job.glob("seed_*"))]
        out[(task, arm)] = (sum(s for s, _ in ends), max(w for _, w in ends))
    return out


def _task_arm(name: str) -> tuple[str, str]:
    for arm in ("frozen_state", "frozen", "ddpg", "pink"):
        if name.endswith("_" + arm):
            return name[: -len(arm) - 1], arm
    raise ValueError(f"unknown confirmation job {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="the result file")
    args = parser.parse_args()
    single, population = fair_test(), confirmation()
    tasks = sorted({t for t, _ in single})
    gain = {}  # (task, confirmation arm) -> single-run process seconds per step / population's
    for (task, arm), (steps, wall) in population.items():
        if (task, arm) in single:
            s_steps, s_wall = single[(task, arm)]
            gain[(task, arm)] = (s_wall / s_steps) / (wall / steps)
    lines = [
        "# What populations saved in a real study",
        "",
        f"{date.today().isoformat()}; `python benchmarks/study_speed.py`: the committed `metrics.csv` of the fair "
        "test's 350 evaluation runs (one process per seed) and of the confirmation's 20 population jobs "
        "(`--population=20`, one process per task and arm), each run's wall time at its last evaluation row.",
        "",
        "| task | arm | fair test: ms per env step, one seed per process | confirmation: ms per env step, "
        "20 seeds per process | gain |",
        "| --- | --- | --- | --- | --- |",
    ]
    for (task, arm), g in sorted(gain.items()):
        s_steps, s_wall = single[(task, arm)]
        p_steps, p_wall = population[(task, arm)]
        lines.append(f"| {task} | {arm} | {1e3 * s_wall / s_steps:.3f} | {1e3 * p_wall / p_steps:.3f} | {g:.2f} |")
    lines += [
        "",
        "The whole fair test (seven arms, 10 seeds each) projected onto the population path, each arm's process "
        "time divided by the gain of its kind (Meta-protocol arms, learned or frozen, K = 1 or 5, by `frozen`'s "
        "or `frozen_state`'s):",
        "",
        "| task | env steps (M) | as single runs, process-hours | as populations, process-hours |",
        "| --- | --- | --- | --- |",
    ]
    total_steps = total_single = total_pop = 0.0
    for task in tasks:
        steps = sum(v[0] for (t, _), v in single.items() if t == task)
        hours = sum(v[1] for (t, _), v in single.items() if t == task) / 3600
        projected = sum(v[1] / gain[(t, KIND[a])] for (t, a), v in single.items() if t == task) / 3600
        lines.append(f"| {task} | {steps / 1e6:.2f} | {hours:.1f} | {projected:.1f} |")
        total_steps, total_single, total_pop = total_steps + steps, total_single + hours, total_pop + projected
    lines += [
        f"| all | {total_steps / 1e6:.2f} | {total_single:.1f} | {total_pop:.1f} |",
        "",
        f"On two cores, two processes at a time: about {total_single / 2:.1f} hours as single runs, "
        f"{total_pop / 2:.1f} hours as populations.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    write_keeping_earlier(args.out, text)


if __name__ == "__main__":
    main()
