"""The confirmation study (benchmarks/results/confirmation/PROTOCOL.md) as population jobs: four arms, five
tasks, seeds 200-219, one process per (task, arm) cell training its 20 seeds (population_jobs.py).

    python benchmarks/confirmation.py --dry-run               # the 20 jobs and their commands
    python benchmarks/confirmation.py --jobs 2                # run them on this machine, two at once
    python benchmarks/confirmation.py --write-sweep sweep.yaml --runs /shared/confirmation/runs
    wandb sweep sweep.yaml; wandb agent ENTITY/PROJECT/SWEEP_ID   # one agent per machine (W&B account, network)
    python benchmarks/confirmation.py --job pendulum_ddpg_seeds200-219   # one job: what each sweep run does
    python benchmarks/confirmation.py --report                # the endpoints, once every job has finished

Every way of running is resumable: a job lives in ``<runs>/<job name>``, a finished one is never redone, an
interrupted one continues from its checkpoint. Agents on several machines need ``--runs`` on a file system they
share, for a requeued job to find its checkpoint. The report refuses to look at any result until every job
has finished (PROTOCOL.md: results are not looked at before then), and writes ``report.md``, ``runs.csv``
(one row per seed) and ``profile.png`` into ``--out``.

Endpoints, as PROTOCOL.md fixes them: the probability of improvement (rliable, stratified bootstrap of REPS
draws, numpy's generator seeded with BOOTSTRAP_SEED before each); primary P(frozen_state > ddpg) on final
scores, a success when its one-sided 95% lower bound (the draws' 5th percentile) is above 0.5; four secondaries
under Holm at a familywise one-sided 5%, each p-value the share of draws at or below 0.5 (plus one over
draws plus one). A retired (diverged) seed scores the lowest value of its task, and is listed.

``--tasks``, ``--arms``, ``--first-seeds``, ``--max-steps`` and ``--set`` shrink the study for smoke tests;
a sweep written with them carries them in its command.
"""

from __future__ import annotations

import argparse
import math
import shlex
from pathlib import Path

import numpy as np
from fair_study import BOOTSTRAP_SEED, REPS, interval_estimates, profile, score_matrices
from population_jobs import PopulationJob, SeedResult, find_job, population_jobs, run_job, seed_results, write_sweep
from runlib import ROOT, finished, read_metrics, run_all, write_rows

SEEDS = tuple(range(200, 220))
# task -> (env steps per run, episode length: the pink noise's horizon), PROTOCOL.md "Tasks and budgets"
TASKS = {
    "pendulum": (50_000, 200),
    "inverted_pendulum": (100_000, 1000),
    "sparse_mountain_car": (100_000, 999),
    "hopper": (300_000, 1000),
    "half_cheetah": (300_000, 1000),
}
ARMS = ("ddpg", "pink", "frozen", "frozen_state")
PRIMARY = ("frozen_state", "ddpg", "final")  # (X, Y, score): P(X > Y)
SECONDARIES = (
    ("frozen_state", "frozen", "final"),
    ("frozen_state", "pink", "final"),
    ("pink", "ddpg", "final"),
    ("frozen_state", "ddpg", "auc"),
)
ALPHA = 0.05  # one-sided, the primary's level and the secondaries' familywise level


def arm_config(env: str, arm: str) -> tuple[str, tuple[str, ...]]:
    """An arm's shipped config and overrides on ``env`` (PROTOCOL.md "Arms")."""
    if arm == "ddpg":
        return f"{env}_ddpg.yaml", ()
    if arm == "pink":
        return f"{env}_ddpg.yaml", ("--model.teacher.kind=pink", f"--model.teacher.pink_horizon={TASKS[env][1]}")
    if arm == "frozen":
        return f"{env}.yaml", ("--model.teacher.lr=0",)
    if arm == "frozen_state":
        return f"{env}.yaml", ("--model.teacher.kind=meta_state", "--model.teacher.lr=0")
    raise ValueError(f"unknown arm {arm!r}")


def study(
    tasks: list[str], arms: list[str], seeds: list[int], cap: int | None, extra: list[str]
) -> list[PopulationJob]:
    jobs = []
    for env in tasks:
        budget = TASKS[env][0] if cap is None else min(cap, TASKS[env][0])
        for arm in arms:
            config, overrides = arm_config(env, arm)
            jobs += population_jobs(env, arm, config, seeds, budget, (*overrides, *extra))
    return jobs


def auc(rows: list[dict[str, str]]) -> float:
    """The trapezoidal area under eval/return against env steps, over the span of steps (the mean return)."""
    steps = np.array([float(r["env_steps"]) for r in rows])
    returns = np.array([float(r["eval/return"]) for r in rows])
    if len(rows) < 2:
        return float(returns[0]) if len(rows) else math.nan
    return float(np.sum((returns[1:] + returns[:-1]) / 2 * np.diff(steps)) / (steps[-1] - steps[0]))


def scored(results: list[SeedResult]) -> list[dict[str, object]]:
    """One row per seed with its final score and AUC; a retired seed gets the lowest of its task's values."""
    rows: list[dict[str, object]] = [
        {"env": r.env, "arm": r.arm, "seed": r.seed, "final": r.final_score, "auc": auc(r.rows), "retired": r.retired}
        for r in results
    ]
    for key in ("final", "auc"):
        for env in {r["env"] for r in rows}:
            seen = [v for r in rows if r["env"] == env and math.isfinite(v := float(str(r[key])))]
            for r in rows:
                if r["env"] == env and r["retired"]:
                    r[key] = min(seen) if seen else -math.inf
    return rows


def matrix(rows: list[dict[str, object]], arm: str, tasks: list[str], key: str) -> np.ndarray:
    """[seeds, tasks] of one arm's values, seeds in order (rliable's layout)."""
    mine = sorted((r for r in rows if r["arm"] == arm), key=lambda r: int(str(r["seed"])))
    return np.array([[float(str(r[key])) for r in mine if r["env"] == t] for t in tasks], dtype=float).T


def improvement_test(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """P(X > Y) over tasks: point estimate, one-sided 95% lower bound, 95% interval and one-sided p-value, from
    one set of seeded stratified-bootstrap draws (the same draws rliable's intervals take with this seed)."""
    from rliable import library as rly
    from rliable import metrics

    np.random.seed(BOOTSTRAP_SEED)
    draws = rly.StratifiedIndependentBootstrap(x, y).apply(metrics.probability_of_improvement, REPS).ravel()
    return {
        "point": float(metrics.probability_of_improvement(x, y)),
        "lower5": float(np.percentile(draws, 5)),
        "lo95": float(np.percentile(draws, 2.5)),
        "hi95": float(np.percentile(draws, 97.5)),
        "p": float((1 + np.sum(draws <= 0.5)) / (1 + len(draws))),
    }


def holm(pvalues: list[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down rule: reject while the k-th smallest p-value (k from 1) is at most alpha / (m + 1 - k)."""
    reject = [False] * len(pvalues)
    for k, i in enumerate(sorted(range(len(pvalues)), key=lambda i: pvalues[i]), start=1):
        if pvalues[i] > alpha / (len(pvalues) + 1 - k):
            break
        reject[i] = True
    return reject


def endpoint_lines(rows: list[dict[str, object]], tasks: list[str], arms: list[str]) -> list[str]:
    """The primary and secondary endpoints of PROTOCOL.md over ``tasks``; those whose arms are missing are named."""
    lines = ["## Endpoints", ""]
    x, y, key = PRIMARY
    if {x, y} <= set(arms):
        t = improvement_test(matrix(rows, x, tasks, key), matrix(rows, y, tasks, key))
        verdict = "success" if t["lower5"] > 0.5 else "not shown"
        lines.append(
            f"- Primary: P({x} > {y}) on final scores = {t['point']:.3f}; one-sided 95% lower bound "
            f"{t['lower5']:.3f} ({verdict}: the bound must be above 0.5); 95% CI [{t['lo95']:.3f}, {t['hi95']:.3f}]"
        )
    else:
        lines.append(f"- Primary: needs the arms {x} and {y}")
    tests = [(s, improvement_test(matrix(rows, s[0], tasks, s[2]), matrix(rows, s[1], tasks, s[2])))
             for s in SECONDARIES if {s[0], s[1]} <= set(arms)]  # fmt: skip
    if len(tests) < len(SECONDARIES):
        lines.append(f"- Secondaries: {len(SECONDARIES) - len(tests)} of {len(SECONDARIES)} lack their arms here")
    for ((x, y, key), t), rejected in zip(tests, holm([t["p"] for _, t in tests]), strict=True):
        lines.append(
            f"- Secondary: P({x} > {y}) on {'final scores' if key == 'final' else 'normalized AUC'} = "
            f"{t['point']:.3f}, 95% CI [{t['lo95']:.3f}, {t['hi95']:.3f}], one-sided p = {t['p']:.4f}: "
            f"{'rejected' if rejected else 'not rejected'} under Holm (family of {len(tests)})"
        )
    return lines


def descriptive_lines(rows: list[dict[str, object]], tasks: list[str], arms: list[str], out: Path) -> list[str]:
    """Per-task IQMs, the IQMs of normalized scores, per-task P(frozen_state > ddpg) and seed-paired signs."""
    from rliable import metrics

    def iqm(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x)])

    lines = ["", "## Descriptive (no test)", "", "| task | arm | IQM final score [95% CI] | retired seeds |"]
    lines.append("| --- | --- | --- | --- |")
    for env in tasks:
        point, ci = interval_estimates({a: matrix(rows, a, [env], "final") for a in arms}, iqm)
        for a in arms:
            retired = [r["seed"] for r in rows if r["env"] == env and r["arm"] == a and r["retired"]]
            lines.append(
                f"| {env} | {a} | {point[a][0]:.1f} [{ci[a][0][0]:.1f}, {ci[a][1][0]:.1f}] | {retired or '-'} |"
            )
    for key, label in (("final", "final scores"), ("auc", "AUCs")):
        scores = score_matrices([{**r, "final_score": r[key]} for r in rows], arms, tasks)
        point, ci = interval_estimates(scores, iqm)
        lines += ["", f"IQM of min-max normalized {label}:", ""]
        lines += [f"- {a}: {point[a][0]:.3f} [{ci[a][0][0]:.3f}, {ci[a][1][0]:.3f}]" for a in arms]
        if key == "final":
            profile(scores, out / "profile.png")
    if {"frozen_state", "ddpg"} <= set(arms):
        lines += [
            "",
            "Per task, P(frozen_state > ddpg) and seed-paired signs (frozen_state above / below / equal):",
            "",
        ]
        for env in tasks:
            x, y = matrix(rows, "frozen_state", [env], "final"), matrix(rows, "ddpg", [env], "final")
            diff = (x - y).ravel()
            signs = f"{int((diff > 0).sum())} / {int((diff < 0).sum())} / {int((diff == 0).sum())}"
            lines.append(f"- {env}: {float(metrics.probability_of_improvement(x, y)):.3f}; {signs}")
    return lines


def report(jobs: list[PopulationJob], runs: Path, out: Path, tasks: list[str], arms: list[str]) -> Path:
    """``report.md`` (endpoints and descriptive statistics), ``runs.csv`` and ``profile.png`` into ``out``."""
    rows = scored([r for job in jobs for r in seed_results(job, runs)])
    out.mkdir(parents=True, exist_ok=True)
    write_rows(out / "runs.csv", rows)
    retired = [f"{r['env']} {r['arm']} seed {r['seed']}" for r in rows if r["retired"]]
    lines = [
        "# Confirmation of frozen_state against DDPG (PROTOCOL.md)",
        "",
        f"{len(rows)} runs in {len(jobs)} population jobs; tasks {', '.join(tasks)}; arms {', '.join(arms)}. "
        f"Retired (diverged) runs, scored the lowest value of their task: {', '.join(retired) or 'none'}.",
        "",
        *endpoint_lines(rows, tasks, arms),
        *descriptive_lines(rows, tasks, arms, out),
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def progress(job: PopulationJob, runs: Path) -> str:
    """How far an unfinished job is, by its seeds' evaluation steps only: a progress check must not show any
    result before the study ends (PROTOCOL.md), so the returns are never read here."""
    steps = [int(float(r["env_steps"])) for s in job.seeds for r in read_metrics(job.seed_dir(runs / job.name, s))]
    return f"under way: {max(steps)} of {job.budget} env steps evaluated" if steps else "to do"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    folder = ROOT / "benchmarks" / "results" / "confirmation"
    parser.add_argument("--runs", type=Path, default=None, help=f"where the jobs' folders are (default {folder}/runs)")
    parser.add_argument("--out", type=Path, default=folder, help="where --report writes")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--jobs", type=int, default=2, help="run every unfinished job here, this many at once")
    mode.add_argument("--job", help="run this one job (a sweep run's command)")
    mode.add_argument("--write-sweep", type=Path, help="write a W&B grid sweep of the jobs to this file")
    mode.add_argument("--dry-run", action="store_true", help="each job's command and progress (no results)")
    mode.add_argument("--report", action="store_true", help="the endpoints, once every job has finished")
    smoke = parser.add_argument_group("a smaller study (smoke tests only)")
    smoke.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    smoke.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    smoke.add_argument("--first-seeds", type=int, default=len(SEEDS), help="only the first N seeds")
    smoke.add_argument("--max-steps", type=int, default=None, help="cap every budget")
    smoke.add_argument("--set", action="append", default=[], help="one more CLI override for every run (--set=--a=b)")
    args = parser.parse_args(argv)
    runs = args.runs if args.runs is not None else folder / "runs"
    jobs = study(args.tasks, args.arms, list(SEEDS[: args.first_seeds]), args.max_steps, args.set)
    if args.job:
        run_job(find_job(jobs, args.job), runs)
    elif args.write_sweep:
        # the options that define this study travel in the sweep's command, so each run rebuilds the same jobs
        # (the runs folder only if given: by default each machine uses its own checkout's)
        given = [f"--runs={args.runs}"] if args.runs is not None else []
        given += ["--tasks", *args.tasks, "--arms", *args.arms, f"--first-seeds={args.first_seeds}"]
        given += [f"--max-steps={args.max_steps}"] if args.max_steps is not None else []
        given += [f"--set={s}" for s in args.set]
        write_sweep(args.write_sweep, jobs, "benchmarks/confirmation.py", given)
        print(f"{args.write_sweep}: {len(jobs)} jobs; start it with: wandb sweep {args.write_sweep}")
    elif args.dry_run:
        for job in jobs:  # as the runner would start it now: resumed where a checkpoint exists
            ckpt = runs / job.name / "checkpoints" / "last.ckpt"
            status = "finished" if finished(job, runs) else progress(job, runs)
            command = job.command(runs / job.name, ckpt if ckpt.exists() else None)
            print(f"# {job.name} ({status})\n{shlex.join(command)}")
    elif args.report:
        todo = [j.name for j in jobs if not finished(j, runs)]
        if todo:
            raise SystemExit(
                f"{len(todo)} of {len(jobs)} jobs not finished ({', '.join(todo)}): no report before all are"
            )
        print(report(jobs, runs, args.out, args.tasks, args.arms).read_text())
    else:
        todo = [j for j in jobs if not finished(j, runs)]
        run_all(todo, runs, args.jobs, lambda: None)
        print(f"{len(jobs) - len(todo)} jobs were finished before, {len(todo)} run now; --report once all are")


if __name__ == "__main__":
    main()
