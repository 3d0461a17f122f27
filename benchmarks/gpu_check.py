"""The GPU checks of population training, as one script for a lent GPU machine (about 7 minutes).

Whole commands (``python -m lightning_meta_rl fit ...`` on conf/hopper_ddpg.yaml, one torch thread per process,
W&B off), each under its own time limit so that one failure does not cost the rest, most telling first:

1. one single-seed run on the CPU, eager and compiled (the baselines);
2. ``--population=64`` on the GPU: eager with its environments stepped in turn and on ``--env-threads``
   threads, and compiled;
3. ``--population=256`` and ``--population=16`` on the GPU, a single run on the GPU;
4. ``--population=64`` compiled with CUDA graphs (``TORCHINDUCTOR_CUDAGRAPHS=1``; the note says if inductor
   skipped them), and a two-process DDP smoke run (CPU ranks);
5. the Meta arm (conf/hopper.yaml, what the studies mostly run): a single run on the CPU and ``--population=64``
   compiled on the GPU, if the budget leaves time for them.

Each command reports evaluations at a quarter of its budget and at its end, so besides its whole-command rate the
table gives its rate past start-up (between the first and the last evaluation, from ``wall_time_s`` in the first
seed's ``metrics.csv``): what a long run approaches. A row starts only if its time limit fits in what is left of
``--budget`` seconds. The table is written after every row, to ``--out``, and each command's output is added to
a log beside it (``<out>.log``), so that a run cut short keeps what it measured.

    python benchmarks/gpu_check.py --cpu-only --quick              # here: the script's own check
    python benchmarks/gpu_check.py --fetch-wheels                  # here, once: .whl/ for the GPU machine

The GPU machine has PyTorch and Lightning but not the environments or the CLI's parser, and reaches no
package index: ``--fetch-wheels`` downloads, for its Python 3.12, the wheels of the packages a run imports
that it lacks (``MISSING``, at the versions installed here; about 12 MB) into ``.whl/``, which git ignores and
the device tool carries. W&B is not among them: the checks run without a logger, and Lightning runs without
W&B installed. The one device command (``carry: [".whl"]``, a timeout of about 480 s):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 && python3 benchmarks/gpu_check.py --out "$OUT/gpu_check.md"

It writes the table and, beside it, ``gpu_check.log`` with every command's output.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "conf/hopper_ddpg.yaml"
META = "conf/hopper.yaml"  # the Meta arm's rows
QUIET = ["--trainer.logger=false", "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false"]


@dataclass
class Check:
    what: str
    seeds: int
    steps: int  # per seed, warm-up included
    args: list[str]
    limit: float  # seconds
    env: dict[str, str] = field(default_factory=dict)
    config: str = CONFIG


@dataclass
class Result:
    check: Check
    wall: float | None = None
    past: float | None = None  # total env steps/s between the first and the last evaluation
    note: str = ""


def fit(run_dir: Path, check: Check) -> list[str]:
    args = [sys.executable, "-m", "lightning_meta_rl", "fit", "--config", check.config, "--run_dir", str(run_dir)]
    every = max(100, check.steps // 4)
    args += [f"--data.total_env_steps={check.steps}", "--data.warmup_steps=100", f"--data.eval_every={every}"]
    return [*args, "--data.eval_episodes=1", *QUIET, *check.args]


def run(check: Check, run_dir: Path, log: Path | None) -> Result:
    """One whole command: its wall seconds and its rate past start-up, or why it failed. Its output goes to
    ``log``; on a timeout its whole process group is ended (compile workers, DDP ranks)."""
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", **check.env}
    cmd = fit(run_dir, check)
    t = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=check.limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        output += f"\n(killed after {check.limit:.0f} s)"
    wall = time.perf_counter() - t
    if log is not None:
        with open(log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{output}\n\n")
    notes = [word for word in ("skipping cudagraphs", "overwritten by a subsequent") if word in output]
    if proc.returncode != 0:
        tail = output.strip().splitlines()[-3:]
        what = f"over {check.limit:.0f} s" if wall >= check.limit else f"exit {proc.returncode}"
        return Result(check, note=f"{what}: {' / '.join(tail)[:300]}")
    metrics = run_dir / ("metrics.csv" if check.seeds == 1 else "seed_0/metrics.csv")
    past = None
    if metrics.exists():
        with open(metrics) as f:
            rows = [(float(r["env_steps"]), float(r["wall_time_s"])) for r in csv.DictReader(f) if r.get("wall_time_s")]
        if len(rows) >= 2 and rows[-1][1] > rows[0][1]:
            past = check.seeds * (rows[-1][0] - rows[0][0]) / (rows[-1][1] - rows[0][1])
    return Result(check, wall, past, "; ".join(f"the log says '{n}'" for n in notes))


def checks(gpu: str, quick: bool, threads: int) -> list[Check]:
    """The rows, most telling first (a row past the time budget is not started)."""
    compiled, eager = "--model.compile=true", "--model.compile=false"
    on_gpu, on_cpu = f"--trainer.accelerator={gpu}", "--trainer.accelerator=cpu"
    t = f"--data.env_threads={threads}"
    if quick:  # the script's own check: every kind of row, tiny
        return [
            Check("single run, CPU, eager", 1, 600, [eager, on_cpu], 120),
            Check(
                f"population 2, {gpu}, eager, {threads} env threads", 2, 600, [eager, on_gpu, "--population=2", t], 120
            ),
            Check("DDP smoke, 2 CPU ranks", 2, 600, [eager, on_cpu, "--trainer.devices=2"], 120),
            Check(f"Meta: population 2, {gpu}, eager", 2, 600, [eager, on_gpu, "--population=2"], 120, config=META),
        ]
    graphs = {"TORCHINDUCTOR_CUDAGRAPHS": "1"}
    one = "--trainer.devices=1"  # a population trains on one device (several would ask for DDP)
    pop = [on_gpu, one]
    return [
        Check("single run, CPU, eager", 1, 8000, [eager, on_cpu, one], 90),
        Check(f"population 64, {gpu}, eager, environments in turn", 64, 2000, [eager, *pop, "--population=64"], 120),
        Check(
            f"population 64, {gpu}, eager, {threads} env threads", 64, 2000, [eager, *pop, "--population=64", t], 120
        ),
        Check(
            f"population 64, {gpu}, compiled, {threads} env threads",
            64,
            3000,
            [compiled, *pop, "--population=64", t],
            200,
        ),
        Check("single run, CPU, compiled", 1, 8000, [compiled, on_cpu, one], 120),
        Check(
            f"population 256, {gpu}, eager, {threads} env threads", 256, 1000, [eager, *pop, "--population=256", t], 120
        ),
        Check(f"population 16, {gpu}, eager, {threads} env threads", 16, 3000, [eager, *pop, "--population=16", t], 90),
        Check(f"single run, {gpu}, eager", 1, 3000, [eager, *pop], 90),
        Check(
            f"population 64, {gpu}, compiled + CUDA graphs, {threads} env threads",
            64,
            3000,
            [compiled, *pop, "--population=64", t],
            200,
            graphs,
        ),
        Check("DDP smoke, 2 CPU ranks", 2, 600, [eager, on_cpu, "--trainer.devices=2"], 90),
        Check("Meta: single run, CPU, eager", 1, 6000, [eager, on_cpu, one], 90, config=META),
        Check(
            f"Meta: population 64, {gpu}, compiled, {threads} env threads",
            64,
            3000,
            [compiled, *pop, "--population=64", t],
            200,
            config=META,
        ),
    ]


def table(results: list[Result], header: list[str]) -> str:
    # each row against the eager single CPU run of its own config
    eager = {r.check.config: r for r in results if r.check.what.endswith("single run, CPU, eager") and r.past}
    lines = [
        *header,
        "| run | seeds | env steps per seed | wall s | total env steps/s, whole command | past start-up "
        "| past start-up vs its config's CPU run, eager | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        c = r.check
        rate = f"{c.seeds * c.steps / r.wall:.0f}" if r.wall and not c.what.startswith("DDP") else "-"
        past = f"{r.past:.0f}" if r.past else "-"
        base = eager.get(c.config)
        vs = f"{r.past / base.past:.2f}" if r.past and base and base.past else "-"
        wall = "-" if r.wall is None else f"{r.wall:.1f}"
        lines.append(f"| {c.what} | {c.seeds} | {c.steps} | {wall} | {rate} | {past} | {vs} | {r.note} |")
    return "\n".join(lines) + "\n"


# what a fit imports that the GPU machine's image lacks (its package list: the device tool's KINDS.md)
MISSING = (
    "mujoco", "mujoco-core", "glfw", "gymnasium", "farama-notifications",
    "omegaconf", "jsonargparse", "docstring-parser", "typeshed-client",
)  # fmt: skip
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def fetch_wheels(folder: Path) -> None:
    """The wheels of MISSING, at the versions installed here, for the GPU machine's Python 3.12 (x86-64)."""
    from importlib.metadata import version

    exclude = ROOT / ".git" / "info" / "exclude"
    if exclude.parent.exists() and "/.whl/" not in (exclude.read_text() if exclude.exists() else ""):
        with open(exclude, "a") as f:
            f.write("/.whl/\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12"]
    cmd += ["--implementation", "cp", *(f"--platform={p}" for p in PLATFORMS), "-d", str(folder)]
    subprocess.run([*cmd, *(f"{name}=={version(name)}" for name in MISSING)], check=True)
    size = sum(f.stat().st_size for f in folder.glob("*.whl")) / 1e6
    print(f"{len(list(folder.glob('*.whl')))} wheels, {size:.1f} MB, in {folder}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="the result file (default: results/gpu/gpu_check.md; --quick: none)")
    parser.add_argument("--cpu-only", action="store_true", help="run the GPU rows on the CPU (no GPU here)")
    parser.add_argument("--quick", action="store_true", help="tiny budgets, three rows (a check of the script)")
    parser.add_argument(
        "--budget",
        type=float,
        default=450,
        help="seconds: a row is started only if its time limit fits in what is left",
    )
    parser.add_argument("--env-threads", type=int, default=max(2, min(14, (os.cpu_count() or 2) - 2)))
    parser.add_argument("--fetch-wheels", action="store_true", help="download .whl/ for the GPU machine, and stop")
    args = parser.parse_args()
    if args.fetch_wheels:
        return fetch_wheels(ROOT / ".whl")
    gpu = "cpu" if args.cpu_only else "gpu"
    device = "no GPU (--cpu-only)"
    if not args.cpu_only:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "torch sees no GPU"
    header = [
        f"# GPU checks ({device})",
        "",
        f"{date.today().isoformat()}, {os.cpu_count()} CPUs; `python benchmarks/gpu_check.py"
        f"{' --cpu-only' if args.cpu_only else ''}{' --quick' if args.quick else ''} --budget {args.budget:.0f} "
        f"--env-threads {args.env_threads}`. {CONFIG} ({META} where a row says Meta), whole commands (start-up included), one torch thread per "
        "process; past start-up: between the first evaluation (a quarter of the budget) and the last.",
        "",
    ]
    out = args.out or (None if args.quick else ROOT / "benchmarks" / "results" / "gpu" / "gpu_check.md")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, check in enumerate(checks(gpu, args.quick, args.env_threads)):
            if time.perf_counter() - start + check.limit > args.budget:
                results.append(Result(check, note=f"not started: its {check.limit:.0f} s limit would pass the budget"))
            else:
                log = None if out is None else out.with_suffix(".log")
                results.append(run(check, Path(tmp) / f"row{i}", log))
            text = table(results, header)
            if out is not None:
                out.write_text(text)
            print(results[-1].check.what, results[-1].wall, results[-1].past, results[-1].note, flush=True)
    print(text)


if __name__ == "__main__":
    main()
