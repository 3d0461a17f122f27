"""Is a run as fast with the working tree as with an earlier commit? Whole commands, timed from outside.

Checks out ``--base`` in a temporary git worktree and runs the same fit (one seed, or ``--population N``) with
both versions in turn, one process at a time (base first in odd pairs, ours first in even ones), each with one
torch thread and a fresh run directory.
Each process is timed whole, start-up and compiling included: wall seconds around it, and its CPU seconds
(user + system) as the operating system accounts them for the finished child. The ratio ours / base is taken
pair by pair, so that the machine's drift moves both sides of a ratio alike; the table gives the median of
the pairs with their min and max. A first pair per setting is run and not counted (it fills the inductor
cache of both versions, and the page cache).

    python benchmarks/version_speed.py --base 02b6921                 # Hopper DDPG and Meta, eager and compiled
    python benchmarks/version_speed.py --base 3f172b0 --configs conf/hopper_ddpg.yaml --modes eager --pairs 4
    python benchmarks/version_speed.py --base 715f9be --configs conf/hopper.yaml --population 8   # eight seeds
    python benchmarks/version_speed.py --base HEAD --quick            # Pendulum, 2000 steps, one pair; prints only

Writes ``benchmarks/results/version_speed/<base>.md`` (``<base>_population<N>.md`` with ``--population``; an
earlier run of the same base is kept below).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import NamedTuple

from runlib import commit, write_keeping_earlier

ROOT = Path(__file__).resolve().parents[1]
QUIET = [
    "--trainer.logger=false",
    "--trainer.callbacks=[]",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--data.eval_every=1000000000",  # one reporting evaluation, at the end
    "--data.eval_episodes=1",
]


class Timing(NamedTuple):
    wall: float
    cpu: float


def fit_args(config: str, mode: str, steps: int, population: int | None = None) -> list[str]:
    """The fit's arguments after ``python -m lightning_meta_rl`` (the run directory is added per run)."""
    return [
        "fit",
        f"--config={config}",
        f"--model.compile={'true' if mode == 'compiled' else 'false'}",
        f"--data.total_env_steps={steps}",
        *QUIET,
        *([] if population is None else [f"--population={population}"]),
    ]


def timed(tree: Path, args: list[str], run_dir: Path, cache: Path) -> Timing:
    """One fit with the code in ``tree``: its wall seconds and the CPU seconds of the finished process."""
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "WANDB_MODE": "disabled",
        "OMP_NUM_THREADS": "1",
        "TORCHINDUCTOR_CACHE_DIR": str(cache),
    }
    cmd = [sys.executable, "-m", "lightning_meta_rl", *args, f"--run_dir={run_dir}"]
    log = run_dir.with_suffix(".log")
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # interrupted: the fit must not outlive its worktree
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"the fit failed (exit {proc.returncode}) with the code in {tree}:\n{log.read_text()[-3000:]}")
    return Timing(wall, usage.ru_utime + usage.ru_stime)


class Summary(NamedTuple):
    median: float
    low: float
    high: float


def ratios(ours: list[float], base: list[float]) -> Summary:
    """ours / base pair by pair: the median of the pairs' ratios, and their min and max."""
    if len(ours) != len(base) or not ours:
        raise ValueError(f"need as many timings of each version, at least one; got {len(ours)} and {len(base)}")
    pairs = [o / b for o, b in zip(ours, base, strict=True)]
    return Summary(statistics.median(pairs), min(pairs), max(pairs))


def table_rows(setting: str, ours: list[Timing], base: list[Timing]) -> list[str]:
    rows = []
    for figure in ("wall", "cpu"):
        o, b = [getattr(t, figure) for t in ours], [getattr(t, figure) for t in base]
        r = ratios(o, b)
        rows.append(
            f"| {setting} | {figure} seconds | {statistics.median(b):.1f} | {statistics.median(o):.1f} "
            f"| **{r.median:.3f}** | {r.low:.3f} | {r.high:.3f} |"
        )
    return rows


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the commit to compare the working tree against")
    parser.add_argument("--configs", nargs="+", default=["conf/hopper_ddpg.yaml", "conf/hopper.yaml"])
    parser.add_argument("--modes", nargs="+", choices=("eager", "compiled"), default=["eager", "compiled"])
    parser.add_argument("--steps", type=int, default=20000, help="env steps of each fit, warm-up included")
    parser.add_argument("--pairs", type=int, default=3, help="counted pairs per setting (after one uncounted)")
    parser.add_argument("--population", type=int, default=None, help="N seeds in one process (default: one seed)")
    parser.add_argument("--quick", action="store_true", help="Pendulum eager, 2000 steps, one pair; prints only")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/version_speed/<base>.md")
    args = parser.parse_args()
    if args.quick:
        args.configs, args.modes, args.steps, args.pairs = ["conf/pendulum_ddpg.yaml"], ["eager"], 2000, 1
    base_rev = git("rev-parse", "--short", args.base)
    ours_rev = commit()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        tree, cache = tmp_path / "base", tmp_path / "inductor_cache"
        git("worktree", "add", "--detach", str(tree), args.base)
        label = {tree: "base", ROOT: "ours"}
        try:
            for config in args.configs:
                for mode in args.modes:
                    fit = fit_args(config, mode, args.steps, args.population)
                    ours: list[Timing] = []
                    base: list[Timing] = []
                    for k in range(args.pairs + 1):
                        order = (tree, ROOT) if k % 2 else (ROOT, tree)  # which version goes first alternates
                        done = {v: timed(v, fit, tmp_path / f"{label[v]}_{len(rows)}_{k}", cache) for v in order}
                        b, o = done[tree], done[ROOT]
                        if k > 0:  # the first pair only warms the caches
                            base.append(b)
                            ours.append(o)
                        print(f"{config} {mode} pair {k}: base {b.wall:.1f} s, ours {o.wall:.1f} s", flush=True)
                    rows += table_rows(f"`{config}`, {mode}", ours, base)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
            shutil.rmtree(tree, ignore_errors=True)
            subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True)
    command = "python benchmarks/version_speed.py " + " ".join(sys.argv[1:])
    seeds = "one seed" if args.population is None else f"`--population={args.population}`"
    text = "\n".join(
        [
            f"# Whole commands, {seeds}: the code at {ours_rev} against {base_rev}",
            "",
            f"{date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} CPUs, one torch thread; "
            f"`{command}`. Each fit: {args.steps} env steps per seed, {seeds}, no logger, no callbacks, one reporting "
            f"evaluation at the end. {args.pairs} counted pairs per setting, after one "
            "uncounted pair; which version goes first alternates from pair to pair. Ratio: ours / base, pair by "
            "pair (below 1: ours is faster, above 1: slower).",
            "",
            "| setting | figure | base, median | ours, median | ours / base, median | min | max |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
        ]
    )
    print(text)
    if not args.quick:
        name = base_rev if args.population is None else f"{base_rev}_population{args.population}"
        write_keeping_earlier(args.out or ROOT / "benchmarks" / "results" / "version_speed" / f"{name}.md", text)


if __name__ == "__main__":
    main()
