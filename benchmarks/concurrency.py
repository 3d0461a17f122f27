"""Two trainings side by side against one alone, the way a user starts them (whole commands, start-up included).

python benchmarks/concurrency.py [--steps 4000] [--repeats 1]

Arms:
- ``default``: the command as a user types it (no OMP_NUM_THREADS): the trainer gives each process one
  torch thread (``--torch_threads`` unset);
- ``torch_default``: ``--torch_threads=<cores>``, torch's own default, which is what every run got before
  the trainer set a thread count.

For each arm: one run alone, then two identical runs (different seeds) started together. The figure of merit
is (wall time of the pair) / (wall time of one alone); 1.0 means the second run was free, 2.0 that the two
ran one after the other. Writes benchmarks/results/concurrency/concurrency.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "concurrency"


def command(run_dir: Path, steps: int, seed: int, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lightning_meta_rl",
        "fit",
        "--config",
        "conf/hopper_ddpg.yaml",
        f"--data.total_env_steps={steps}",
        f"--seed_everything={seed}",
        f"--run_dir={run_dir}",
        "--trainer.enable_progress_bar=false",
        *extra,
    ]


def wall(runs: list[list[str]], wandb_mode: str | None = "disabled") -> float:
    """Start all commands together; seconds until the last one ends. OMP_NUM_THREADS and MKL_NUM_THREADS are
    unset; WANDB_MODE is set to ``wandb_mode``, or unset when it is None (the CLI's own default)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "WANDB_MODE")}
    if wandb_mode is not None:
        env["WANDB_MODE"] = wandb_mode
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in runs]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"run failed ({p.returncode}): {err.decode()[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    arms = {"default": [], "torch_default": [f"--torch_threads={cores}"]}
    results: dict[str, dict[str, list[float]]] = {a: {"alone": [], "pair": []} for a in arms}
    tmp = Path(tempfile.mkdtemp())
    try:
        wall([command(tmp / "warmup", 1500, 0, [])])  # untimed: file caches warm before the first timed run
        for r in range(args.repeats):
            for arm, extra in arms.items():
                d = tmp / f"{arm}_{r}"
                alone = wall([command(d / "alone", args.steps, 0, extra)])
                pair = wall([command(d / f"pair{s}", args.steps, s, extra) for s in (0, 1)])
                results[arm]["alone"].append(alone)
                results[arm]["pair"].append(pair)
                print(
                    f"round {r} {arm}: alone {alone:.1f} s, two together {pair:.1f} s ({pair / alone:.2f}x)", flush=True
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "concurrency.json").write_text(json.dumps({"steps": args.steps, "cores": cores, **results}, indent=2))
    lines = [
        "# Two runs side by side against one alone",
        "",
        f"`python benchmarks/concurrency.py --steps {args.steps} --repeats {args.repeats}`: "
        f"`fit --config conf/hopper_ddpg.yaml --data.total_env_steps={args.steps}` (W&B disabled), whole commands "
        f"with start-up, {cores} cores, medians of {args.repeats} interleaved round(s) after one untimed warm-up "
        f"run. OMP_NUM_THREADS unset in every arm.",
        "",
        "| arm | threads per process | one alone (s) | two together (s) | two / one (target <= 1.3) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for arm, extra in arms.items():
        alone, pair = statistics.median(results[arm]["alone"]), statistics.median(results[arm]["pair"])
        threads = "1 (the trainer's default)" if not extra else f"{cores} (`{extra[0]}`, torch's own default)"
        lines.append(f"| {arm} | {threads} | {alone:.1f} | {pair:.1f} | {pair / alone:.2f} |")
    (OUT / "concurrency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
