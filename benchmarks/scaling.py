"""Environment steps per second as data-parallel processes or vectorized environments grow, real CLI.

`--vary devices`: `--trainer.devices=N --trainer.strategy=ddp_find_unused_parameters_true` (CPU, gloo);
total steps = per-rank budget x N. `--vary num_envs`: `--data.num_envs=N` training environments stepped
together in one process. One torch thread per process; seconds = wall time of the whole command
(start-up included, the same for every value); runs interleaved over the values, medians reported.
Writes benchmarks/results/scaling_<vary>_<config>.md.

    python benchmarks/scaling.py --vary devices --config pendulum_ddpg --steps 20000 --values 1 2 --repeats 2
    python benchmarks/scaling.py --vary num_envs --config hopper_ddpg --steps 20000 --values 1 4 --repeats 3
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

from compare_arms import fit_command

ROOT = Path(__file__).resolve().parents[1]


def run(config: str, steps: int, vary: str, value: int) -> float:
    run_dir = Path(tempfile.mkdtemp()) / "run"
    cmd = fit_command(
        f"conf/{config}.yaml",
        f"--data.total_env_steps={steps}",
        f"--data.eval_every={steps}",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
        f"--run_dir={run_dir}",
    )
    if vary == "devices":
        cmd.append(f"--trainer.devices={value}")
        if value > 1:
            cmd.append("--trainer.strategy=ddp_find_unused_parameters_true")
    else:
        cmd.append(f"--data.num_envs={value}")
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vary", choices=["devices", "num_envs"], default="devices")
    parser.add_argument("--config", default="pendulum_ddpg")
    parser.add_argument("--steps", type=int, default=20_000, help="budget per rank")
    parser.add_argument("--values", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    times: dict[int, list[float]] = {v: [] for v in args.values}
    for _ in range(args.repeats):
        for v in args.values:
            times[v].append(run(args.config, args.steps, args.vary, v))
            print(f"{args.vary}={v}: {times[v][-1]:.1f} s", flush=True)
    ranks = {v: (v if args.vary == "devices" else 1) for v in args.values}
    rate = {v: ranks[v] * args.steps / statistics.median(t) for v, t in times.items()}
    base = args.values[0]
    lines = [
        f"# Scaling over {args.vary}, {args.config}, {args.steps} env steps per rank, CPU, 2 cores",
        "",
        f"Command: `python benchmarks/scaling.py {' '.join(sys.argv[1:])}`",
        "",
        f"| {args.vary} | wall time per run (s) | total env steps/s (median) | vs {args.vary}={base} |",
        "| --- | --- | --- | --- |",
        *(
            f"| {v} | {', '.join(f'{t:.1f}' for t in times[v])} | {rate[v]:.0f} | {rate[v] / rate[base]:.2f}x |"
            for v in args.values
        ),
        "",
        "Start-up (about 5-10 s) is included in every run.",
    ]
    out = ROOT / "benchmarks" / "results" / f"scaling_{args.vary}_{args.config}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
