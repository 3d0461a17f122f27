"""Run both arms (Meta and DDPG) of one shipped config over fixed seeds and tabulate final scores.

Each run goes through the real CLI in its own process, W&B disabled, with its run directory under
``--out``; finished runs (a metrics.csv whose last row reached the budget) are not redone. Writes
``runs.csv`` (one row per run) and ``summary.md`` (mean +- std per arm) into ``--out``.

Example (the issue-2 evidence):
    python benchmarks/compare_arms.py --config pendulum --steps 30000 --seeds 0 1 2 \
        --out benchmarks/results/pendulum_30k
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def final_score(rows: list[dict[str, str]]) -> float:
    """Mean eval/return over the last 10% of evaluation points (SPEC.md section 3)."""
    k = max(1, math.ceil(0.1 * len(rows)))
    return statistics.fmean(float(r["eval/return"]) for r in rows[-k:])


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "metrics.csv"
    if not path.exists():
        return []
    with open(path) as f:  # a row still being written by a running job is skipped
        return [r for r in csv.DictReader(f) if None not in r.values() and r.get("eval/return") != ""]


def fit_command(config: str | Path, *args: str) -> list[str]:
    """``python -m lightning_meta_rl fit --config <config> <args>`` with this interpreter."""
    return [sys.executable, "-m", "lightning_meta_rl", "fit", "--config", str(config), *args]


def write_rows(path: Path, rows: list[dict[str, object]]) -> None:
    """One CSV row per dict (nothing is written for no rows)."""
    if not rows:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def run_quietly(cmd: list[str], label: str) -> None:
    """One training in a subprocess with one thread and W&B off; its stderr's tail in the error if it fails."""
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"run failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    print(f"{label}: done in {time.perf_counter() - t0:.0f} s", flush=True)


def run_one(config: str, arm: str, seed: int, steps: int, out: Path, extra: list[str]) -> dict[str, object]:
    name = f"{config}{'' if arm == 'meta' else '_ddpg'}"
    run_dir = out / f"{name}_seed{seed}"
    rows = read_metrics(run_dir)
    if not rows or float(rows[-1]["env_steps"]) < steps:
        if run_dir.exists():  # an interrupted run: start it again from scratch
            shutil.rmtree(run_dir)
        cmd = fit_command(
            ROOT / "conf" / f"{name}.yaml",
            f"--seed_everything={seed}",
            f"--data.total_env_steps={steps}",
            f"--run_dir={run_dir}",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=false",
            *extra,
        )
        run_quietly(cmd, f"{name} seed {seed}")
        rows = read_metrics(run_dir)
    last = rows[-1]
    return {
        "config": name,
        "arm": arm,
        "seed": seed,
        "env_steps": int(float(last["env_steps"])),
        "final_score": final_score(rows),
        "last_eval": float(last["eval/return"]),
        "wall_time_s": float(last["wall_time_s"]),
        "env_steps_per_s": float(last["env_steps"]) / float(last["wall_time_s"]),
    }


def summarize(results: list[dict[str, object]], config: str, steps: int, command: str) -> str:
    lines = [
        f"# {config}: Meta vs DDPG, {steps} environment steps",
        "",
        f"Command: `{command}`",
        "",
        "Final score = mean eval/return over the last 10% of evaluation points of a run.",
        "",
        "| arm | seeds | final score (mean +- std) | per seed | env steps/s (median) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for arm in ("meta", "ddpg"):
        rs = sorted((r for r in results if r["arm"] == arm), key=lambda r: int(r["seed"]))  # type: ignore[arg-type]
        scores = [float(r["final_score"]) for r in rs]  # type: ignore[arg-type]
        sd = statistics.stdev(scores) if len(scores) > 1 else 0.0
        sps = statistics.median(float(r["env_steps_per_s"]) for r in rs)  # type: ignore[arg-type]
        per_seed = ", ".join(f"{s:.1f}" for s in scores)
        lines.append(f"| {arm} | {len(rs)} | {statistics.fmean(scores):.1f} +- {sd:.1f} | {per_seed} | {sps:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="config stem under conf/, e.g. pendulum")
    parser.add_argument("--steps", type=int, required=True, help="environment-step budget of every run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one per core)")
    parser.add_argument("extra", nargs="*", help="extra CLI overrides after --, applied to both arms")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(arm, seed) for seed in args.seeds for arm in ("meta", "ddpg")]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda j: run_one(args.config, j[0], j[1], args.steps, args.out, args.extra), jobs))
    write_rows(args.out / "runs.csv", results)
    command = "python benchmarks/compare_arms.py " + " ".join(sys.argv[1:])
    summary = summarize(results, args.config, args.steps, command)
    (args.out / "summary.md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
