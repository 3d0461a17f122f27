"""Environment steps per second with 1 and 2 data-parallel processes (CPU, gloo), through the real CLI.

Each run: `python -m lightning_meta_rl fit --config conf/<config>.yaml` with the given per-rank budget,
`--trainer.devices=N --trainer.strategy=ddp_find_unused_parameters_true`, one torch thread per process.
Total steps = per-rank budget x N; seconds = wall time of the whole command (start-up included, the
same for both). Writes benchmarks/results/ddp_scaling.md.

    python benchmarks/ddp_scaling.py --config pendulum_ddpg --steps 20000 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(config: str, steps: int, devices: int) -> float:
    run_dir = Path(tempfile.mkdtemp()) / "run"
    cmd = [
        sys.executable,
        "-m",
        "lightning_meta_rl",
        "fit",
        "--config",
        f"conf/{config}.yaml",
        f"--data.total_env_steps={steps}",
        f"--data.eval_every={steps}",
        "--trainer.accelerator=cpu",
        f"--trainer.devices={devices}",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
        f"--run_dir={run_dir}",
    ]
    if devices > 1:
        cmd.append("--trainer.strategy=ddp_find_unused_parameters_true")
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="pendulum_ddpg")
    parser.add_argument("--steps", type=int, default=20_000, help="budget per rank")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.repeats):  # interleaved
        for n in (1, 2):
            times[n].append(run(args.config, args.steps, n))
            print(f"devices={n}: {times[n][-1]:.1f} s", flush=True)
    rate = {n: n * args.steps / statistics.median(t) for n, t in times.items()}
    lines = [
        f"# Data-parallel scaling, {args.config}, {args.steps} env steps per rank, CPU (gloo), 2 cores",
        "",
        f"Command: `python benchmarks/ddp_scaling.py {' '.join(sys.argv[1:])}`",
        "",
        "| processes | wall time per run (s) | total env steps/s (median) |",
        "| --- | --- | --- |",
        *(f"| {n} | {', '.join(f'{t:.1f}' for t in times[n])} | {rate[n]:.0f} |" for n in (1, 2)),
        "",
        f"Speed-up of 2 processes over 1: {rate[2] / rate[1]:.2f}x (start-up of about 5-10 s included in both).",
    ]
    out = ROOT / "benchmarks" / "results" / "ddp_scaling.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
