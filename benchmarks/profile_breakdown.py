"""Where a training command spends its time: a sampling profile (py-spy) of one whole command, summed into
the parts of a training iteration.

Each part is the share of all samples whose stack passes through a given function (first match in the order
listed, so the parts do not overlap): stepping the environments (gymnasium and MuJoCo), acting (the actor
call and the noise), the rest of collecting (the collector's own Python: normalizing, checks, rows), sampling
minibatches, compiling the update (torch.compile tracing it at its first calls), the update itself
(``ddpg_step``, or the compiled code that stands for it), evaluation, and everything else (start-up: imports,
building the environments and networks; Lightning's loop). A rerun keeps the earlier result below.

    python benchmarks/profile_breakdown.py                    # --population=8 and one run, Hopper DDPG, eager
    python benchmarks/profile_breakdown.py --compile          # the same with the compiled update
    python benchmarks/profile_breakdown.py --quick            # Pendulum, 2 seeds, 1500 steps; prints only

Needs py-spy (``pip install -e ".[bench]"``). Writes ``benchmarks/results/population/profile_breakdown.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import date
from pathlib import Path

from runlib import write_keeping_earlier

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "population" / "profile_breakdown.md"
# (part, function names as py-spy prints them): a sample counts for the first part one of whose functions
# is on its stack
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("evaluation", ("PopulationModule._evaluate_members", "MetaRLModule.evaluate_and_record")),
    ("environment step (gymnasium + MuJoCo)", ("EnvRunner.step", "EnvRunner.reset")),
    ("acting (actor call, noise)", ("PopulationModule.explore", "act_after_resets")),
    ("collecting, the rest", ("Collector.stepper", "Collector._loop", "drive")),
    ("sampling minibatches", ("PopulationDataModule.sample_stacked", "RolloutDataModule.sample", "stack_batches")),
    ("compiling the update (its first calls)", ("ConvertFrame.__call__", "ConvertFrameAssert.__call__")),
    ("update (ddpg_step)", ("ddpg_step", "Learner.step")),
)
OTHER = "everything else (start-up, Lightning's loop)"


def command(run_dir: Path, config: str, steps: int, population: int, compile: bool = False) -> list[str]:
    args = [sys.executable, "-m", "lightning_meta_rl", "fit", "--config", config, "--run_dir", str(run_dir)]
    args += [f"--data.total_env_steps={steps}", f"--data.eval_every={10 * steps}", "--data.eval_episodes=1"]
    args += ["--trainer.logger=false", "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false"]
    args += ["--trainer.enable_model_summary=false", f"--model.compile={str(compile).lower()}"]
    return args + ([f"--population={population}"] if population > 1 else [])


def profile(cmd: list[str], rate: int) -> Counter[str]:
    """Samples per part of one run of ``cmd`` under py-spy."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit('profile_breakdown.py needs py-spy: pip install -e ".[bench]"')
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "samples.txt"
        env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
        done = subprocess.run(
            [py_spy, "record", "-o", str(raw), "-f", "raw", "-r", str(rate), "--", *cmd],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed under py-spy:\n{done.stderr[-3000:]}")
        return parts(raw.read_text())


def parts(raw: str) -> Counter[str]:
    """py-spy's raw format (one stack per line, frames separated by ';', then a count) summed into PARTS."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        names = {frame.split(" (")[0] for frame in stack.split(";")}
        part = next((p for p, functions in PARTS if names & set(functions)), OTHER)
        counts[part] += int(n)
    return counts


def table(runs: dict[str, Counter[str]]) -> list[str]:
    heads = list(runs)
    lines = ["| part | " + " | ".join(heads) + " |", "| --- |" + " --- |" * len(heads)]
    for part in [p for p, _ in PARTS] + [OTHER]:
        cells = [f"{100 * c[part] / max(1, sum(c.values())):.1f}%" for c in runs.values()]
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="conf/hopper_ddpg.yaml")
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20000, help="env steps per seed, warm-up included")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--compile", action="store_true", help="the compiled update (default: eager)")
    parser.add_argument("--quick", action="store_true", help="Pendulum, 2 seeds, 1500 steps; prints only")
    args = parser.parse_args()
    if args.quick:
        args.config, args.population, args.steps = "conf/pendulum.yaml", 2, 1500
    runs: dict[str, Counter[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, args.population):
            runs["one run" if n == 1 else f"--population={n}"] = profile(
                command(Path(tmp) / f"n{n}", args.config, args.steps, n, args.compile), args.rate
            )
    flags = f"--config {args.config} --population {args.population} --steps {args.steps}"
    flags += " --compile" if args.compile else ""
    text = [
        f"# Where the time goes: one run against --population={args.population} ({args.config})",
        "",
        f"{date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, one torch thread; "
        f"`python benchmarks/profile_breakdown.py {flags}`: one whole command each "
        f"({'compiled' if args.compile else 'eager'} update, inductor cache as it was; no callbacks, "
        f"no logger, evaluation only at the end), sampled by py-spy at {args.rate}/s. Share of all samples:",
        "",
        *table(runs),
        "",
    ]
    print("\n".join(text))
    if not args.quick:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        write_keeping_earlier(OUT, "\n".join(text))
        print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
