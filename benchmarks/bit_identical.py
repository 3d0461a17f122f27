"""Does the working tree train exactly like an earlier commit? Short fits of four arms, run on both, compared.

(The Hopper configs compile the update: ``hopper_ddpg`` and ``hopper_meta`` are compiled runs, the ``_eager``
ones the same fits without compiling.)

Speed-ups are meant to leave every number a run produces unchanged, so that results committed under
benchmarks/results/ still describe the current code. This script checks it: it checks out ``--base`` in a
temporary git worktree, runs the same short fits with both versions (Hopper-v5 DDPG and Meta, Pendulum-v1
with OU noise and Meta (Variance)), and compares

- ``metrics.csv``: env steps, iteration, eval/return and R(pi) of every evaluation (not the wall time);
- the final checkpoint's weights, tensor by tensor, exactly.

    python benchmarks/bit_identical.py --base 841c74a   # writes benchmarks/results/bit_identical/841c74a.md
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false", "--data.eval_episodes=2"]
FITS = {
    "hopper_ddpg": ["--config", "conf/hopper_ddpg.yaml", "--data.total_env_steps=4000", "--data.eval_every=1000"],
    "hopper_ddpg_eager": [
        "--config",
        "conf/hopper_ddpg.yaml",
        "--model.compile=false",
        "--data.total_env_steps=4000",
        "--data.eval_every=1000",
    ],
    "hopper_meta": ["--config", "conf/hopper.yaml", "--data.total_env_steps=6000", "--data.eval_every=1000"],
    "hopper_meta_eager": [
        "--config",
        "conf/hopper.yaml",
        "--model.compile=false",
        "--data.total_env_steps=6000",
        "--data.eval_every=1000",
    ],
    "pendulum_ou": [
        "--config",
        "conf/pendulum_ddpg.yaml",
        "--model.teacher.kind=ou",
        "--data.total_env_steps=3000",
        "--data.eval_every=500",
    ],
    "pendulum_meta_variance": [
        "--config",
        "conf/pendulum.yaml",
        "--model.teacher.kind=meta_variance",
        "--data.total_env_steps=4000",
        "--data.eval_every=500",
    ],
}
COMPARED = ("env_steps", "iteration", "eval/return", "r_pi")


def run_fits(tree: Path, out: Path) -> None:
    """Every fit of FITS with the code in ``tree``, one after another, into ``out/<name>``."""
    env = {**os.environ, "PYTHONPATH": str(tree), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    for name, args in FITS.items():
        cmd = [sys.executable, "-m", "lightning_meta_rl", "fit", *args, *COMMON, f"--run_dir={out / name}"]
        done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{name} failed in {tree}:\n{done.stderr[-3000:]}")


def evaluations(run_dir: Path) -> list[tuple[str, ...]]:
    """The compared columns as exact numbers (repr of the float: "1400" and "1400.0" are the same value, NaN
    equals NaN), so that a change of CSV formatting alone is not a difference."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return [tuple(repr(float(row[k])) for k in COMPARED) for row in csv.DictReader(f)]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def compare(base: Path, ours: Path, name: str) -> tuple[bool, bool, int, int]:
    rows_base, rows_ours = evaluations(base / name), evaluations(ours / name)
    w_base, w_ours = weights(base / name), weights(ours / name)
    same_weights = w_base.keys() == w_ours.keys() and all(torch.equal(w_base[k], w_ours[k]) for k in w_base)
    return rows_base == rows_ours, same_weights, len(rows_ours), len(w_ours)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the commit to compare the working tree against")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/bit_identical/<base>.md")
    args = parser.parse_args()
    base_rev = git("rev-parse", "--short", args.base)
    out = args.out or ROOT / "benchmarks" / "results" / "bit_identical" / f"{base_rev}.md"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results")
    head_rev = git("rev-parse", "--short", "HEAD") + (" + uncommitted changes to tracked code" if changed else "")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        tree = tmp_path / "base"
        git("worktree", "add", "--detach", str(tree), args.base)
        try:
            with ThreadPoolExecutor(2) as pool:  # the two versions side by side, one core each
                jobs = [
                    pool.submit(run_fits, tree, tmp_path / "out_base"),
                    pool.submit(run_fits, ROOT, tmp_path / "out"),
                ]
                for job in jobs:
                    job.result()
            results = {name: compare(tmp_path / "out_base", tmp_path / "out", name) for name in FITS}
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
            shutil.rmtree(tree, ignore_errors=True)
            subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True)
    lines = [
        f"# Training with the working tree ({head_rev}) against {base_rev}",
        "",
        f"Command: `python benchmarks/bit_identical.py --base {args.base}`",
        "",
        f"Each fit adds `{' '.join(COMMON)}` to the arguments shown.",
        "",
        "| fit | arguments | evaluations identical | final weights identical |",
        "| --- | --- | --- | --- |",
    ]
    for name, (same_rows, same_weights, n_rows, n_tensors) in results.items():
        lines.append(
            f"| {name} | `{' '.join(FITS[name])}` | {'yes' if same_rows else 'NO'} ({n_rows} rows) "
            f"| {'yes' if same_weights else 'NO'} ({n_tensors} tensors) |"
        )
    identical = all(r[0] and r[1] for r in results.values())
    lines += ["", "All identical." if identical else "**Some runs differ.**", ""]
    text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    if not identical:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
