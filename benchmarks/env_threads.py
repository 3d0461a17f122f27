"""What ``--data.env_threads`` gives one ``--population=N`` command: its total environment steps per second, and
the CPU time it uses, with the members' environments stepped on 1, 2, ... threads.

Whole commands as a user starts them (``python -m lightning_meta_rl fit ...``, one torch thread, W&B off, no
callbacks), with the config's own reporting evaluations (they are stepped on the threads too); every thread
count once per round, in an order that reverses from round to round. The results of every thread count are
the same (``tests/test_population.py``), so only the time differs. A second thread helps one process; on a
machine whose cores are all busy with population processes it has nothing to run on.

    python benchmarks/env_threads.py                      # Hopper-v5 DDPG, N = 8, compiled, 1 and 2 threads
    python benchmarks/env_threads.py --threads 1 4 15     # on a machine with more cores
    python benchmarks/env_threads.py --quick              # Pendulum, N = 2, prints only

Writes ``benchmarks/results/population/env_threads.md`` (``--name`` to change it); an earlier file is kept
below the new one.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from runlib import commit, fit_command, write_keeping_earlier

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "population"


def command(run_dir: Path, config: str, steps: int, population: int, threads: int, compile: bool) -> list[str]:
    return fit_command(
        config,
        "--run_dir",
        str(run_dir),
        f"--data.total_env_steps={steps}",
        "--trainer.logger=false",
        "--trainer.callbacks=[]",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--model.compile={'true' if compile else 'false'}",
        f"--population={population}",
        f"--data.env_threads={threads}",
    )


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, all its threads) of one whole command."""
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="conf/hopper_ddpg.yaml")
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20000, help="env steps per seed, warm-up included")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--eager", action="store_true", help="the eager update (default: compiled)")
    parser.add_argument("--quick", action="store_true", help="Pendulum, N=2, 1500 steps, one round; prints only")
    parser.add_argument("--name", default="env_threads", help="the result file's name, without .md")
    args = parser.parse_args()
    if args.quick:
        args.config, args.population, args.steps, args.rounds, args.eager = "conf/smoke.yaml", 2, 1500, 1, True
    compile = not args.eager
    walls: dict[int, list[float]] = {t: [] for t in args.threads}
    cpus: dict[int, list[float]] = {t: [] for t in args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for threads in args.threads if r % 2 == 0 else args.threads[::-1]:
                run_dir = Path(tmp) / f"t{threads}_{r}"
                wall, cpu = timed(command(run_dir, args.config, args.steps, args.population, threads, compile))
                walls[threads].append(wall)
                cpus[threads].append(cpu)
    total = args.population * args.steps
    base = args.threads[0]
    lines = [
        f"# --data.env_threads: one --population={args.population} command ({args.config})",
        "",
        f"{date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} CPUs, one torch thread; `python "
        f"benchmarks/env_threads.py --config {args.config} --population {args.population} --steps {args.steps} "
        f"--threads {' '.join(map(str, args.threads))} --rounds {args.rounds}{' --eager' if args.eager else ''}`: "
        f"{'eager' if args.eager else 'compiled'} update, whole commands with the config's reporting evaluations, "
        f"{args.steps} env steps per seed, every thread count once per round in alternating order; code at "
        f"{commit()}.",
        "",
        f"| env threads | total env steps/s (median) | vs {base} thread(s), per round: median (min-max) "
        "| CPU seconds per wall second |",
        "| --- | --- | --- | --- |",
    ]
    for t in args.threads:
        ratios = [w0 / w for w0, w in zip(walls[base], walls[t], strict=True)]
        load = statistics.median(c / w for c, w in zip(cpus[t], walls[t], strict=True))
        lines.append(
            f"| {t} | {total / statistics.median(walls[t]):.0f} | {statistics.median(ratios):.2f} "
            f"({min(ratios):.2f}-{max(ratios):.2f}) | {load:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:
        write_keeping_earlier(RESULTS / f"{args.name}.md", text)


if __name__ == "__main__":
    sys.exit(main())
