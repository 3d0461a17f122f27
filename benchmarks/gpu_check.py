"""The GPU checks of population training, as one script for a lent GPU machine (about 8 minutes).

Whole commands (``python -m lightning_meta_rl fit ...``, one torch thread per process, W&B off), each under its
own time limit so that one failure does not cost the rest:

1. one single-seed run of Hopper-v5 DDPG on the CPU and on the GPU (``--trainer.accelerator``);
2. ``--population=N`` on the GPU for each N in ``--populations`` (default 16, 64, 256), fewer steps per seed
   as N grows;
3. a two-process DDP smoke run (CPU ranks; the lent machine has one GPU).

It prints a markdown table and writes it to ``--out``. Without a GPU (``--cpu-only``) the GPU rows are run on
the CPU, which checks the script itself.

    python benchmarks/gpu_check.py --out "$OUT/gpu_check.md"      # on the GPU machine
    python benchmarks/gpu_check.py --cpu-only --quick              # here: the script's own check
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "conf/hopper_ddpg.yaml"
QUIET = ["--trainer.logger=false", "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false"]


def fit(run_dir: Path, steps: int, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "lightning_meta_rl", "fit", "--config", CONFIG, "--run_dir", str(run_dir)]
    args += [f"--data.total_env_steps={steps}", "--data.warmup_steps=200", f"--data.eval_every={10 * steps}"]
    return [*args, "--data.eval_episodes=1", "--model.compile=false", *QUIET, *extra]


def timed(cmd: list[str], limit: float) -> tuple[float | None, str]:
    """Wall seconds of a whole command, or None and the reason it failed."""
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return None, f"over {limit:.0f} s"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return None, f"exit {done.returncode}: {' / '.join(tail)[:300]}"
    return time.perf_counter() - t, ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--populations", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu" / "gpu_check.md")
    parser.add_argument("--cpu-only", action="store_true", help="run the GPU rows on the CPU (no GPU here)")
    parser.add_argument("--quick", action="store_true", help="tiny budgets, N = 2 only (a check of the script)")
    args = parser.parse_args()
    gpu = "cpu" if args.cpu_only else "gpu"
    single_steps, populations = (600, [2]) if args.quick else (5000, args.populations)
    rows: list[tuple[str, int, int, float | None, str]] = []  # (what, seeds, steps per seed, seconds, note)
    with tempfile.TemporaryDirectory() as tmp:
        for i, accelerator in enumerate(("cpu", gpu)):
            cmd = fit(Path(tmp) / f"single{i}", single_steps, f"--trainer.accelerator={accelerator}")
            rows.append((f"single run, {accelerator}", 1, single_steps, *timed(cmd, 150)))
        for n in populations:
            steps = 600 if args.quick else max(600, min(3000, 48000 // n))
            cmd = fit(Path(tmp) / f"pop{n}", steps, f"--population={n}", f"--trainer.accelerator={gpu}")
            rows.append((f"population {n}, {gpu}", n, steps, *timed(cmd, 200)))
        cmd = fit(Path(tmp) / "ddp", 600, "--trainer.accelerator=cpu", "--trainer.devices=2")
        rows.append(("DDP smoke, 2 CPU ranks", 2, 600, *timed(cmd, 120)))
    device = "no GPU (--cpu-only)"
    if not args.cpu_only:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "torch sees no GPU"
    lines = [
        f"# GPU checks ({device})",
        "",
        f"{date.today().isoformat()}, {os.cpu_count()} CPUs; `python benchmarks/gpu_check.py"
        f"{' --cpu-only' if args.cpu_only else ''}{' --quick' if args.quick else ''}`. {CONFIG}, eager update, "
        "whole commands (start-up included), one torch thread per process.",
        "",
        "| run | seeds | env steps per seed | wall s | total env steps/s | note |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for what, seeds, steps, seconds, note in rows:
        rate = f"{seeds * steps / seconds:.0f}" if seconds and not what.startswith("DDP") else "-"
        lines.append(
            f"| {what} | {seeds} | {steps} | {'-' if seconds is None else f'{seconds:.1f}'} | {rate} | {note} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
