"""Total environment steps per second of ``--population=N`` against one single-seed run of the same command.

Whole commands, as a user starts them (``python -m lightning_meta_rl fit ...``, one torch thread, W&B off, no
callbacks, reporting evaluation only at the end): the single run of seed 0 and the population of N seeds
(0..N-1), in each mode asked for, run once per round, in an order that reverses from round to round; each
command's wall time includes its start-up. The figure is ``N * steps / wall`` for the population against
``steps / wall`` for the single run, per round, with the median over rounds. With both modes, the compiled
population is also compared with the eager single run of the same round (what compiling a population
gives a user whose single runs are eager). With ``--short S``, every command also runs for S steps per seed and
the steps between the two budgets give the rates past start-up, which a long run approaches (start-up is a
large share of a short single run). A result file that exists already is kept below the new one.

    python benchmarks/population_speed.py                 # Hopper-v5 DDPG, N = 8, eager and compiled
    python benchmarks/population_speed.py --config conf/hopper.yaml --modes eager   # the Meta arm
    python benchmarks/population_speed.py --quick         # a short run (prints, writes nothing)
    python benchmarks/population_speed.py --parallel      # two population processes at once against one
    python benchmarks/population_speed.py --config conf/pendulum.yaml --modes eager \
        --set=--model.meta.samples=5 --set=--data.num_envs=5 --name population_speed_pendulum_k5   # K = 5

``--parallel`` times one ``--population=N`` command alone and two at once (each its own seeds, one torch
thread each, started together), alternating, and reports the pair's total env steps/s over the single one's
(2.0 would be perfect scaling on two cores); it writes ``population_parallel.md``.

Writes ``benchmarks/results/population/population_speed.md`` for the default config, else
``population_speed_<config name>.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from runlib import commit, write_keeping_earlier

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "population"
DEFAULT_CONFIG = "conf/hopper_ddpg.yaml"


EXTRA: list[str] = []  # --set: more overrides for every command of a run (both sides alike)


def command(run_dir: Path, config: str, steps: int, population: int, compile: bool) -> list[str]:
    args = [sys.executable, "-m", "lightning_meta_rl", "fit", "--config", config, "--run_dir", str(run_dir), *EXTRA]
    args += [f"--data.total_env_steps={steps}", f"--data.eval_every={10 * steps}", "--data.eval_episodes=1"]
    args += ["--trainer.logger=false", "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false"]
    args += ["--trainer.enable_model_summary=false", f"--model.compile={'true' if compile else 'false'}"]
    return args + ([f"--population={population}"] if population > 1 else [])


def wall(cmd: list[str]) -> float:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t


def measure_parallel(config: str, steps: int, population: int, rounds: int) -> dict[str, float]:
    ratios = []
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            times = {}
            for arm in ("one", "two") if r % 2 == 0 else ("two", "one"):
                copies = 1 if arm == "one" else 2
                t = time.perf_counter()
                procs = [
                    subprocess.Popen(
                        [
                            *command(Path(tmp) / f"{arm}{r}_{i}", config, steps, population, False),
                            f"--seed_everything={100 * i}",
                        ],
                        cwd=ROOT,
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                    )
                    for i in range(copies)
                ]
                for p in procs:
                    _, err = p.communicate()
                    if p.returncode != 0:
                        raise SystemExit(f"a population command failed:\n{err.decode()[-3000:]}")
                times[arm] = time.perf_counter() - t
            ratios.append(2 * times["one"] / times["two"])
    return {"ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}


def measure(
    config: str, steps: int, population: int, modes: tuple[bool, ...], rounds: int, short: int | None = None
) -> dict[bool, dict[str, Any]]:
    """Every (mode, arm) command once per round, in an order that alternates from round to round, so that
    ratios within a mode and across modes compare commands run side by side. With ``short``, each command
    also runs for ``short`` steps per seed, and the steps between the two budgets give the rates past
    start-up (``steady``: what a long run approaches)."""
    budgets = (steps,) if short is None else (short, steps)
    arms = [(m, n, b) for m in modes for n in (1, population) for b in budgets]
    times: dict[tuple[bool, int, int], list[float]] = {a: [] for a in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for compiled, n, b in arms if r % 2 == 0 else arms[::-1]:
                run_dir = Path(tmp) / f"{'c' if compiled else 'e'}{n}_{b}_{r}"
                times[(compiled, n, b)].append(wall(command(run_dir, config, b, n, compiled)))
    results: dict[bool, dict[str, Any]] = {}
    for m in modes:
        single = [steps / t for t in times[(m, 1, steps)]]
        pop = [population * steps / t for t in times[(m, population, steps)]]
        results[m] = _summary(single, pop)
        if short is not None:
            gap = steps - short
            single_past = [gap / (t - t0) for t, t0 in zip(times[(m, 1, steps)], times[(m, 1, short)], strict=True)]
            pop_past = [
                population * gap / (t - t0)
                for t, t0 in zip(times[(m, population, steps)], times[(m, population, short)], strict=True)
            ]
            results[m]["steady"] = _summary(single_past, pop_past)
    if len(modes) == 2:  # the compiled population against the eager single run, round by round
        cross = [
            t1 / tp * population
            for t1, tp in zip(times[(False, 1, steps)], times[(True, population, steps)], strict=True)
        ]
        results[True]["cross"] = (statistics.median(cross), min(cross), max(cross))
    return results


def _summary(single: list[float], pop: list[float]) -> dict[str, Any]:
    ratios = [p / s for p, s in zip(pop, single, strict=True)]
    return {
        "single": statistics.median(single),
        "population": statistics.median(pop),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--modes", nargs="+", choices=("eager", "compiled"), default=["eager", "compiled"])
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6000, help="env steps per seed, warm-up included")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--short", type=int, help="also run every command for this many steps per seed: rates past start-up"
    )
    parser.add_argument("--quick", action="store_true", help="Pendulum, N=2, 1500 steps, one round, eager only")
    parser.add_argument("--parallel", action="store_true", help="two population processes at once against one")
    parser.add_argument("--set", action="append", default=[], help="one more override for every command (--set=--a=b)")
    parser.add_argument("--name", help="the result file's name (default: from the config)")
    args = parser.parse_args()
    EXTRA[:] = args.set
    if args.parallel:
        r = measure_parallel(args.config, args.steps, args.population, args.rounds)
        text = (
            f"# Two --population={args.population} processes at once against one ({args.config}, eager)\n\n"
            f"{date.today().isoformat()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, one "
            f"torch thread per process; `python benchmarks/population_speed.py --parallel --config {args.config} "
            f"--population {args.population} --steps {args.steps} --rounds {args.rounds}`: whole commands, "
            f"start-up included, alternating.\n\n"
            f"Total env steps/s of two processes / one process: median {r['ratio']:.2f} "
            f"(min {r['ratio_min']:.2f}, max {r['ratio_max']:.2f}; 2.00 = perfect scaling on two cores).\n"
        )
        print(text)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "population_parallel.md").write_text(text)
        return
    if args.quick:
        args.config, args.population, args.steps, args.rounds = "conf/smoke.yaml", 2, 1500, 1
    modes = (False,) if args.quick else tuple(m == "compiled" for m in args.modes)
    results = measure(args.config, args.steps, args.population, modes, args.rounds, args.short)
    lines = [
        f"# --population={args.population} against one single-seed run ({args.config})",
        "",
        f"{date.today().isoformat()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, one "
        f"torch thread per process; `python benchmarks/population_speed.py --config {args.config} --population "
        f"{args.population} --steps {args.steps} --rounds {args.rounds} --modes {' '.join(args.modes)}"
        f"{''.join(f' --set={x}' for x in args.set)}{f' --short {args.short}' if args.short else ''}"
        f"{f' --name {args.name}' if args.name else ''}`: env steps per "
        f"seed, {args.rounds} rounds in alternating order (every command once per round), whole commands (start-up "
        f"included); code at {commit()}.",
        "",
        "| update | single run env steps/s | population total env steps/s | population / single (median) | min | max |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for compiled, r in results.items():
        lines.append(
            f"| {'compiled' if compiled else 'eager'} | {r['single']:.0f} | {r['population']:.0f} | "
            f"{r['ratio']:.2f} | {r['ratio_min']:.2f} | {r['ratio_max']:.2f} |"
        )
    if args.short:
        lines += [
            "",
            f"Past start-up: the steps from {args.short} to {args.steps} per seed, by the difference of the two "
            "commands' wall times (what a long run approaches):",
            "",
            "| update | single run env steps/s | population total env steps/s | population / single (median) | min "
            "| max |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for compiled, res in results.items():
            past = res["steady"]
            lines.append(
                f"| {'compiled' if compiled else 'eager'} | {past['single']:.0f} | {past['population']:.0f} | "
                f"{past['ratio']:.2f} | {past['ratio_min']:.2f} | {past['ratio_max']:.2f} |"
            )
    if "cross" in results.get(True, {}):
        median, low, high = results[True]["cross"]
        lines += ["", f"Compiled population / eager single run: median {median:.2f} (min {low:.2f}, max {high:.2f})."]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:
        name = args.name or "population_speed" + ("" if args.config == DEFAULT_CONFIG else f"_{Path(args.config).stem}")
        write_keeping_earlier(RESULTS / f"{name}.md", text)


if __name__ == "__main__":
    main()
