"""Where a training command spends its time: a sampling profile (py-spy) of one whole command, summed into
the parts of a training iteration. ``--past`` profiles a stretch of each command after its start-up instead
(what a long run spends its time on).

Each part is the share of all samples whose stack passes through a given function (first match in the order
listed, so the parts do not overlap): MuJoCo's physics, the rest of stepping the environments (gymnasium's
Python, the trainer's checks), acting (the actor
call and the noise), the rest of collecting (the collector's own Python: normalizing, checks, rows), sampling
minibatches, compiling the update (torch.compile tracing it at its first calls), the update itself
(``ddpg_step``, or the compiled code that stands for it), evaluation, and everything else (start-up: imports,
building the environments and networks; Lightning's loop). A rerun keeps the earlier result below.

    python benchmarks/profile_breakdown.py                    # --population=8 and one run, Hopper DDPG, eager
    python benchmarks/profile_breakdown.py --compile          # the same with the compiled update
    python benchmarks/profile_breakdown.py --compile --past 45 25   # 25 s of each, from 45 s after its start
    python benchmarks/profile_breakdown.py --quick            # Pendulum, 2 seeds, 1500 steps; prints only

Needs py-spy (``pip install -e ".[bench]"``). Writes ``benchmarks/results/population/profile_breakdown.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import date
from pathlib import Path

from runlib import commit, write_keeping_earlier

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "population" / "profile_breakdown.md"
# (part, function names as py-spy prints them): a sample counts for the first part one of whose functions
# is on its stack
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("evaluation", ("PopulationModule._evaluate_members", "MetaRLModule.evaluate_and_record")),
    ("MuJoCo's physics (mj_step)", ("MujocoEnv._step_mujoco_simulation",)),
    ("environment step, the rest (gymnasium's Python, checks)", ("EnvRunner.step", "EnvRunner.reset")),
    ("acting (actor call, noise)", ("PopulationModule.explore", "act_after_resets")),
    ("collecting, the rest", ("Collector.stepper", "Collector._loop", "drive")),
    (
        "sampling minibatches",
        ("PopulationDataModule.sample_stacked", "RolloutDataModule.sample", "PopulationDataModule.stacked"),
    ),
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


def profile(cmd: list[str], rate: int, past: tuple[float, float] | None = None) -> Counter[str]:
    """Samples per part of one run of ``cmd`` under py-spy; with ``past`` (wait, duration), only ``duration``
    seconds of it from ``wait`` seconds after its start (the command is then stopped)."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit('profile_breakdown.py needs py-spy: pip install -e ".[bench]"')
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "samples.txt"
        env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
        record = [py_spy, "record", "-o", str(raw), "-f", "raw", "-r", str(rate)]
        if past is None:
            done = subprocess.run([*record, "--", *cmd], cwd=ROOT, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed under py-spy:\n{done.stderr[-3000:]}")
            return parts(raw.read_text())
        log = Path(tmp) / "output.txt"
        with open(log, "w") as out:
            run = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True)
        try:
            time.sleep(past[0])
            if run.poll() is not None:
                raise SystemExit(f"{' '.join(cmd)} ended before {past[0]:.0f} s:\n{log.read_text()[-3000:]}")
            done = subprocess.run(
                [*record, "--pid", str(run.pid), "--duration", str(int(past[1]))], capture_output=True, text=True
            )
            if done.returncode != 0:
                raise SystemExit(f"py-spy could not record {' '.join(cmd)}:\n{done.stderr[-3000:]}")
        finally:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
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
    parser.add_argument(
        "--past",
        type=float,
        nargs=2,
        metavar=("WAIT", "DURATION"),
        help="profile DURATION seconds from WAIT seconds after each command starts (past its start-up; the "
        "commands run on an endless budget and are stopped after)",
    )
    args = parser.parse_args()
    if args.quick:
        args.config, args.population, args.steps = "conf/pendulum.yaml", 2, 1500
    runs: dict[str, Counter[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, args.population):
            steps = 10**8 if args.past else args.steps
            runs["one run" if n == 1 else f"--population={n}"] = profile(
                command(Path(tmp) / f"n{n}", args.config, steps, n, args.compile), args.rate, args.past
            )
    flags = f"--config {args.config} --population {args.population}"
    flags += f" --past {args.past[0]:g} {args.past[1]:g}" if args.past else f" --steps {args.steps}"
    flags += " --compile" if args.compile else ""
    what = (
        f"{args.past[1]:g} s of each command from {args.past[0]:g} s after its start (past start-up)"
        if args.past
        else "one whole command each"
    )
    text = [
        f"# Where the time goes: one run against --population={args.population} ({args.config})",
        "",
        f"{date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, one torch thread; "
        f"`python benchmarks/profile_breakdown.py {flags}`: {what} "
        f"({'compiled' if args.compile else 'eager'} update, inductor cache as it was; no callbacks, "
        f"no logger, evaluation only at the end), sampled by py-spy at {args.rate}/s; code at {commit()}. "
        "Share of all samples:",
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
