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

The file also gets a probe of the parts: one environment step of the config's environment and the MuJoCo
physics in it, and N environments stepped in lockstep by the library's own driver (``rollout.drive``, random
actions, no learning), in turn and on each thread count.

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


def probe(config: str, members: int, thread_counts: list[int], steps: int = 1000, rounds: int = 3) -> list[str]:
    """The parts: one environment step and its physics (us), and microseconds per lockstep step of ``members``
    environments driven by ``rollout.drive`` in turn and on threads (medians over alternating rounds)."""
    import mujoco
    import numpy as np
    import torch
    import yaml

    from lightning_meta_rl.envs import EnvRunner
    from lightning_meta_rl.rollout import Action, Collector, StepThreads, drive

    env_id = yaml.safe_load((ROOT / config).read_text())["data"]["env_id"]
    runner = EnvRunner(env_id, None, 0)
    runner.reset()
    space = runner.env.action_space
    actions = [space.sample() for _ in range(steps)]

    def per_step(fn: object) -> float:
        t = time.perf_counter()
        for a in actions:
            fn(a)  # type: ignore[operator]
        return (time.perf_counter() - t) / steps * 1e6

    def env_step(a: np.ndarray) -> None:
        if runner.step(a).terminated:
            runner.reset()

    base = runner.env.unwrapped
    model, data, skip = getattr(base, "model", None), getattr(base, "data", None), getattr(base, "frame_skip", 1)
    step_us = statistics.median(per_step(env_step) for _ in range(rounds))
    physics_us = None
    if model is not None:
        physics_us = statistics.median(
            per_step(lambda a: mujoco.mj_step(model, data, nstep=skip)) for _ in range(rounds)
        )
    runner.close()

    collectors = [Collector([EnvRunner(env_id, None, k)], lambda x: x) for k in range(members)]
    generator = torch.Generator().manual_seed(0)
    low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)

    def act(keys: list[int], obs: list[np.ndarray], started: list[list[int]]) -> list[Action]:
        a = low + (high - low) * torch.rand((len(keys), 1, low.numel()), generator=generator)
        return [Action(x, x) for x in a]

    lockstep: dict[int, list[float]] = {t: [] for t in thread_counts}
    for r in range(rounds):
        for t in thread_counts if r % 2 == 0 else thread_counts[::-1]:
            threads = StepThreads(t) if t > 1 else None
            start = time.perf_counter()
            drive([c.stepper(steps) for c in collectors], act, threads)
            lockstep[t].append((time.perf_counter() - start) / steps * 1e6)
            if threads is not None:
                threads.close()
    for c in collectors:
        c.runners[0].close()
    lines = [
        "",
        f"Probe (`rollout.drive`, random actions, {steps} lockstep steps, medians of {rounds} alternating rounds): "
        f"one {env_id} step {step_us:.0f} us"
        + (f", of which MuJoCo's physics (`mj_step`, {skip} substeps) {physics_us:.0f} us" if physics_us else "")
        + ".",
        "",
        f"| env threads | us per lockstep step of {members} environments | vs in turn |",
        "| --- | --- | --- |",
    ]
    first = statistics.median(lockstep[thread_counts[0]])
    for t in thread_counts:
        us = statistics.median(lockstep[t])
        lines.append(f"| {t} | {us:.0f} | {first / us:.2f} |")
    return lines


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
    lines += probe(args.config, args.population, args.threads, steps=200 if args.quick else 1000)
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:
        write_keeping_earlier(RESULTS / f"{args.name}.md", text)


if __name__ == "__main__":
    sys.exit(main())
