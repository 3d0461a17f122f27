"""Reproduce the slides' table: Meta vs DDPG on six environments, 5 seeds, stated budgets.

Every run goes through the real CLI in its own process (W&B disabled, one thread per process, ``--jobs``
processes at once, one per core) with its run directory under ``<out>/runs/``. The script is resumable:
a finished run (its metrics.csv reached the budget) is never redone, and an interrupted one continues
from its ``checkpoints/last.ckpt`` (bit-exact, see tests/test_resume.py), or starts again if it had none.

After each finished run it rewrites, from whatever has finished so far:

* ``runs.csv``: one row per run (final score, last evaluation, env steps, wall time);
* ``table.md``: final scores (mean +- std over seeds), the Meta - DDPG difference of means with a 95%
  bootstrap confidence interval (seeds resampled with replacement within each arm, 10000 draws, fixed
  bootstrap seed), beside the slides' numbers;
* ``curves_<env>.png``: eval/return against environment steps, Meta and DDPG, mean over seeds with a band
  from the lowest to the highest seed; ``curves_<env>_variants.png``: the three teacher variants.

Final score = mean eval/return over the last 10% of a run's evaluation points (SPEC.md section 3).
Seeds 0-4 are fixed here, before any run; the arms are the shipped configs ``conf/<env>.yaml`` (Meta) and
``conf/<env>_ddpg.yaml`` (DDPG, Gaussian noise), which differ only in ``model.teacher.kind``. The variants
Meta (State) and Meta (Variance) are the Meta config with ``--model.teacher.kind`` set.

    python benchmarks/reproduce.py                     # everything (hours of CPU on 2 cores)
    python benchmarks/reproduce.py --envs pendulum     # one environment
    python benchmarks/reproduce.py --report            # only rebuild table and figures
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import yaml
from runlib import ROOT, Job, final_score, finished, read_metrics, run_all, write_rows

SEEDS = (0, 1, 2, 3, 4)
# Config stem -> (budget in env steps, the slides' environment name). Cheapest first, so that a partial
# run of the script still yields whole environments.
ENVS: dict[str, tuple[int, str]] = {
    "pendulum": (50_000, "Pendulum"),
    "inverted_pendulum": (100_000, "InvertedPendulum"),
    "reacher": (300_000, "Reacher"),
    "inverted_double_pendulum": (300_000, "InvertedDoublePendulum"),
    "hopper": (300_000, "Hopper"),
    "half_cheetah": (300_000, "HalfCheetah"),
}
# The slides' table ("Reward achieved in different environments"; gym v1-era ids, budgets not stated).
SLIDES = {
    "InvertedDoublePendulum": ("7718 +- 277", "2795 +- 1325"),
    "InvertedPendulum": ("745 +- 27", "499 +- 23"),
    "Hopper": ("205 +- 41", "135 +- 42"),
    "Pendulum": ("-123 +- 10", "-206 +- 31"),
    "HalfCheetah": ("2011 +- 339", "1594 +- 298"),
    "Reacher": ("-12.16 +- 1.19", "-11.67 +- 3.39"),
}
VARIANT_ENVS = ("pendulum", "inverted_pendulum")
ARMS = ("meta", "ddpg", "meta_state", "meta_variance")
ARM_LABEL = {"meta": "Meta", "ddpg": "DDPG", "meta_state": "Meta (State)", "meta_variance": "Meta (Variance)"}


ARM_OVERRIDES: dict[str, tuple[str, ...]] = {
    "meta": (),
    "ddpg": (),  # conf/<env>_ddpg.yaml
    "meta_state": ("--model.teacher.kind=meta_state",),
    "meta_variance": ("--model.teacher.kind=meta_variance",),
}


def make_job(env: str, arm: str, seed: int, cap: int | None) -> Job:
    """One run of the reproduction: ``env``'s budget (capped by ``cap``), the arm's overrides."""
    budget = ENVS[env][0]
    return Job(env, arm, seed, budget if cap is None else min(cap, budget), ARM_OVERRIDES[arm])


def jobs_for(envs: list[str], seeds: tuple[int, ...], cap: int | None) -> list[Job]:
    jobs = []
    for env in envs:
        arms = ARMS if env in VARIANT_ENVS else ARMS[:2]
        jobs += [make_job(env, arm, seed, cap) for seed in seeds for arm in arms]
    return jobs


# ---------------------------------------------------------------------------------------------- report


def bootstrap_ci(a: list[float], b: list[float], draws: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of mean(a) - mean(b), seeds resampled within each arm."""
    rng = np.random.default_rng(seed)
    xa, xb = np.asarray(a), np.asarray(b)
    da = xa[rng.integers(0, len(xa), (draws, len(xa)))].mean(axis=1)
    db = xb[rng.integers(0, len(xb), (draws, len(xb)))].mean(axis=1)
    lo, hi = np.percentile(da - db, [2.5, 97.5])
    return float(lo), float(hi)


def collect(jobs: list[Job], runs: Path) -> list[dict[str, object]]:
    rows = []
    for job in jobs:
        if not finished(job, runs):
            continue
        metrics = read_metrics(runs / job.name)
        last = metrics[-1]
        rows.append(
            {
                "env": job.env,
                "arm": job.arm,
                "seed": job.seed,
                "budget": job.budget,
                "env_steps": int(float(last["env_steps"])),
                "final_score": round(final_score(metrics), 3),
                "last_eval": float(last["eval/return"]),
                "wall_time_s": round(float(last["wall_time_s"]), 1),
                "d0_share": round(d0_share(runs / job.name, metrics), 3) if job.arm != "ddpg" else 1.0,
            }
        )
    return rows


def d0_share(run_dir: Path, metrics: list[dict[str, str]]) -> float:
    """Fraction of a Meta run's post-warm-up environment steps that were teacher data D0; the rest went to
    the deterministic D1 and R(pi) episodes (whole episodes, so their share grows with episode length)."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    d0_steps, warmup = config["model"]["meta"]["d0_steps"], config["data"]["warmup_steps"]
    last = metrics[-1]
    return d0_steps * float(last["iteration"]) / (float(last["env_steps"]) - warmup)


def fmt(xs: list[float]) -> str:
    if not xs:
        return "-"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    digits = 2 if max(abs(x) for x in xs) < 100 else 0
    return f"{statistics.fmean(xs):.{digits}f} +- {sd:.{digits}f} (n={len(xs)})"


def table(rows: list[dict[str, object]], command: str) -> str:
    def scores(env: str, arm: str) -> list[float]:
        return [float(r["final_score"]) for r in rows if r["env"] == env and r["arm"] == arm]  # type: ignore[arg-type]

    lines = [
        "# Meta vs DDPG: reproduction of the slides' table",
        "",
        f"Command: `{command}`",
        "",
        "Final score = mean eval/return over the last 10% of a run's evaluation points; mean +- std over seeds",
        "(fixed in advance: 0-4). Difference = mean(Meta) - mean(DDPG) with a 95% bootstrap interval. The",
        "slides used gym v1-era environments (v0 for Pendulum) at budgets they do not state; ours are v5 (v1",
        "for Pendulum) at the budgets below. `n` is the number of finished seeds. A Meta run can end up to",
        "one iteration past the budget (D1 and R(pi) are whole episodes): its last evaluations come up to ~2%",
        "more environment steps later than DDPG's (see `env_steps` in runs.csv).",
        "",
        "| env | budget | Meta (ours) | DDPG (ours) | Meta - DDPG [95% CI] | Meta (slides) | DDPG (slides) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def budget_of(env: str) -> int:  # the budget the finished runs had (--max-steps may cap it)
        return max((int(r["budget"]) for r in rows if r["env"] == env), default=ENVS[env][0])  # type: ignore[call-overload]

    for env, (_, slides_name) in ENVS.items():
        budget = budget_of(env)
        meta, ddpg = scores(env, "meta"), scores(env, "ddpg")
        if len(meta) > 1 and len(ddpg) > 1:
            lo, hi = bootstrap_ci(meta, ddpg)
            diff = f"{statistics.fmean(meta) - statistics.fmean(ddpg):.1f} [{lo:.1f}, {hi:.1f}]"
        else:
            diff = "-"
        s_meta, s_ddpg = SLIDES[slides_name]
        lines.append(
            f"| {slides_name} | {budget // 1000}k | {fmt(meta)} | {fmt(ddpg)} | {diff} | {s_meta} | {s_ddpg} |"
        )
    lines += [
        "",
        "Share of the Meta arm's environment steps (after warm-up) that were teacher data D0; the rest are the",
        "deterministic D1 and R(pi) episodes, which also go into the replay buffer. The DDPG arm's share of",
        "exploratory data is 1.",
        "",
        "| env | D0 share (mean over Meta seeds) |",
        "| --- | --- |",
    ]
    for env, (_, slides_name) in ENVS.items():
        shares = [float(r["d0_share"]) for r in rows if r["env"] == env and r["arm"] == "meta"]  # type: ignore[arg-type]
        if shares:
            lines.append(f"| {slides_name} | {statistics.fmean(shares):.2f} |")
    lines += [
        "",
        "## Teacher variants",
        "",
        "| env | budget | Meta | Meta (State) | Meta (Variance) | DDPG |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for env in VARIANT_ENVS:
        budget, slides_name = budget_of(env), ENVS[env][1]
        cells = " | ".join(fmt(scores(env, arm)) for arm in ("meta", "meta_state", "meta_variance", "ddpg"))
        lines.append(f"| {slides_name} | {budget // 1000}k | {cells} |")
    lines += [
        "",
        "## Per seed (final score)",
        "",
        "| env | arm | " + " | ".join(f"seed {s}" for s in SEEDS) + " |",
        "| --- | --- | " + " | ".join("---" for _ in SEEDS) + " |",
    ]
    for env in ENVS:
        for arm in ARMS:
            by_seed = {int(r["seed"]): float(r["final_score"]) for r in rows if r["env"] == env and r["arm"] == arm}  # type: ignore[call-overload]
            if by_seed:
                cells = " | ".join(f"{by_seed[s]:.1f}" if s in by_seed else "-" for s in SEEDS)
                lines.append(f"| {ENVS[env][1]} | {ARM_LABEL[arm]} | {cells} |")
    return "\n".join(lines) + "\n"


def plot(env: str, jobs: list[Job], runs: Path, out: Path, arms: tuple[str, ...], suffix: str = "") -> None:
    """Mean eval/return over seeds against env steps, one line per arm; band = lowest..highest seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slides_name = ENVS[env][1]
    budget = max((j.budget for j in jobs if j.env == env), default=ENVS[env][0])
    fig, ax = plt.subplots(figsize=(6, 4))
    drew = False
    for arm in arms:
        curves = []
        for job in jobs:
            if job.env == env and job.arm == arm and finished(job, runs):
                m = read_metrics(runs / job.name)
                curves.append(([float(r["env_steps"]) for r in m], [float(r["eval/return"]) for r in m]))
        if not curves:
            continue
        start = max(c[0][0] for c in curves)
        grid = np.linspace(start, budget, 60)
        ys = np.stack([np.interp(grid, x, y) for x, y in curves])
        (line,) = ax.plot(grid, ys.mean(axis=0), label=f"{ARM_LABEL[arm]} (n={len(curves)})")
        ax.fill_between(grid, ys.min(axis=0), ys.max(axis=0), color=line.get_color(), alpha=0.15)
        drew = True
    if drew:
        ax.set_title(f"{slides_name}: mean over seeds, band = lowest..highest seed", fontsize=10)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("eval/return")
        ax.legend(loc="best")
        fig.tight_layout()
        fig.savefig(out / f"curves_{env}{suffix}.png", dpi=100)
    plt.close(fig)


def report(jobs: list[Job], out: Path, command: str) -> None:
    runs = out / "runs"
    rows = collect(jobs, runs)
    write_rows(out / "runs.csv", rows)
    (out / "table.md").write_text(table(rows, command))
    for env in ENVS:
        plot(env, jobs, runs, out, ("meta", "ddpg"))
        if env in VARIANT_ENVS:
            plot(env, jobs, runs, out, ("meta", "meta_state", "meta_variance"), suffix="_variants")


def add_run_options(parser: argparse.ArgumentParser, out: Path, reports: str) -> None:
    """The options every multi-run benchmark shares (this script and investigate.py)."""
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one per core)")
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--report", action="store_true", help=f"only rebuild {reports}")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help=argparse.SUPPRESS)
    parser.add_argument("--max-steps", type=int, default=None, help="cap every budget (smoke tests only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", choices=list(ENVS), default=list(ENVS))
    add_run_options(parser, ROOT / "benchmarks" / "results" / "reproduce", "table.md, runs.csv and figures")
    args = parser.parse_args()
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/reproduce.py" + ("" if args.envs == list(ENVS) else " --envs " + " ".join(args.envs))
    seeds = tuple(args.seeds)
    all_jobs = jobs_for(list(ENVS), seeds, args.max_steps)
    todo = [j for j in jobs_for(args.envs, seeds, args.max_steps) if not finished(j, args.out / "runs")]
    if not args.report:
        run_all(todo, args.out / "runs", args.jobs, lambda: report(all_jobs, args.out, command))
    report(all_jobs, args.out, command)
    print((args.out / "table.md").read_text())


if __name__ == "__main__":
    main()
