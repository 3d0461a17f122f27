"""A fair test of the teacher (issue 12): arms, seeds and statistics, in two stages.

    python benchmarks/fair_study.py --stage development          # seeds 0-4, Pendulum 50k, InvertedPendulum 100k
    python benchmarks/fair_study.py --stage evaluation           # 10 fresh seeds, five tasks, the arms of STAGE_ARMS
    python benchmarks/fair_study.py --stage evaluation --arms meta_state frozen_state --report  # a report of two arms
    python benchmarks/fair_study.py --stage development --report # only rebuild the report

Writes into ``benchmarks/results/fair_test/`` (the folder keeps the script's former name, fair_test.py):
``<stage>.md``, ``<stage>_runs.csv``, ``profile_<stage>.png`` and the runs under ``runs/``.

Every run goes through the real CLI in its own process (one torch thread each, ``--jobs`` at once), logs
every iteration with a CSVLogger (``teacher/steps``, ``meta/snr``, ``meta/reward``, ...) and is resumable:
a finished run is never redone, an interrupted one continues from its checkpoint (the runner of runlib.py).

The configs of the 300k-step tasks (Hopper, HalfCheetah) were set to ``model.compile: true`` before any of
their evaluation runs: those tasks run compiled in every arm, the other three eager in every arm.
Every run keeps IEEE denormals (``--flush_denormal=false``, set in runlib.py's Job.command), as the
runs before the CLI's flush default had.

Arms (each the Meta config ``conf/<env>.yaml`` plus overrides, except ``ddpg``):

* ``ddpg``: conf/<env>_ddpg.yaml (Gaussian noise);
* ``frozen``: the faithful protocol with a teacher that never learns (``teacher.lr=0``): the null for
  "does the teacher's learning matter";
* ``meta``: the faithful method;
* ``meta_critic``: the critic meta-reward (``meta.reward=critic``: no D1 or R(pi) rollouts);
* ``meta_state`` / ``meta_variance``: the fixed variants (standardized Q feature; learnable sigma);
* ``meta_k5``: five D0 segments per teacher step (one from each of five training environments), five
  look-ahead students as one batched update, a leave-one-out baseline (``meta.samples=5``), with the
  paper's return meta-reward;
* ``meta_critic_k5``: both, the critic meta-reward with five samples;
* ``frozen_state``: Meta (State) frozen, its exact twin (added after the evaluation stage's first two tasks,
  as a stricter null beside ``frozen``; see ``EXACT_TWIN``);
* ``frozen_k5`` / ``frozen_critic_k5``: the matched nulls of the two K arms, the same protocol (five
  environments, five look-aheads, the same rollouts) with a teacher that never learns. ``frozen`` is the
  null of ``meta``, ``meta_state`` and ``meta_variance``; ``frozen_critic_k5`` also serves ``meta_critic``
  (with a frozen teacher and no rollouts the two protocols differ only in collecting D0 from five
  environments instead of one).

How the evaluation stage's configurations are chosen (written down, and committed, after the development
stage's Pendulum runs and before any of its InvertedPendulum results were looked at): among the new
configurations (``meta_critic``, ``meta_k5``, ``meta_critic_k5``, ``meta_state``, ``meta_variance``), the two
with the highest probability of improvement over their matched frozen null, aggregated over both development
tasks (does the teacher's learning matter?); ties broken by the probability of improvement over ``ddpg``.
The evaluation stage then runs ``ddpg``, ``frozen``, ``meta``, the two chosen arms and their matched nulls.

Statistics use rliable (``pip install -e ".[bench]"``): per task, the IQM of final scores with a 95%
stratified-bootstrap interval; over tasks, the IQM of min-max normalized scores (each task's scores
mapped to [0, 1] by the lowest and highest final score of any run of that task, all arms together); the
probability of improvement of each arm over ``ddpg`` and over its matched frozen null, with 95% intervals; and a
performance profile (``profile_<stage>.png``). Final score = mean eval/return over the last 10% of a run's
evaluation points (SPEC.md section 3). Seeds are fixed below, before any run.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from runlib import ROOT, Job, final_score, finished, read_metrics, run_all

DEV_SEEDS = (0, 1, 2, 3, 4)
EVAL_SEEDS = tuple(range(100, 110))  # fixed before any evaluation run; never used in development
STAGES = {
    "development": ({"pendulum": 50_000, "inverted_pendulum": 100_000}, DEV_SEEDS),
    "evaluation": (
        {
            "pendulum": 50_000,
            "inverted_pendulum": 100_000,
            "sparse_mountain_car": 100_000,  # reward only at the goal: lightning_meta_rl/sparse.py says why
            "hopper": 300_000,
            "half_cheetah": 300_000,
        },
        EVAL_SEEDS,
    ),
}
ARM_OVERRIDES: dict[str, tuple[str, ...]] = {
    "ddpg": (),
    "frozen": ("--model.teacher.lr=0",),
    "meta": (),
    "meta_critic": ("--model.meta.reward=critic",),
    "meta_state": ("--model.teacher.kind=meta_state",),
    "meta_variance": ("--model.teacher.kind=meta_variance",),
    "meta_k5": ("--model.meta.samples=5", "--data.num_envs=5"),
    "meta_critic_k5": ("--model.meta.reward=critic", "--model.meta.samples=5", "--data.num_envs=5"),
    "frozen_k5": ("--model.teacher.lr=0", "--model.meta.samples=5", "--data.num_envs=5"),
    "frozen_critic_k5": (
        "--model.teacher.lr=0",
        "--model.meta.reward=critic",
        "--model.meta.samples=5",
        "--data.num_envs=5",
    ),
    "frozen_state": ("--model.teacher.kind=meta_state", "--model.teacher.lr=0"),
}
# each learned arm's frozen-teacher null: the same protocol, a teacher that never takes a step
MATCHED_NULL = {
    "meta": "frozen",
    "meta_state": "frozen",
    "meta_variance": "frozen",
    "meta_k5": "frozen_k5",
    "meta_critic": "frozen_critic_k5",
    "meta_critic_k5": "frozen_critic_k5",
}
# added after the evaluation stage's first two tasks (Meta (State) led on InvertedPendulum): a stricter null for
# Meta (State) than the pre-registered ``frozen``, its exact twin (the same state, Q and mu features) frozen.
# Reported beside the matched null, never instead of it.
EXACT_TWIN = {"meta_state": "frozen_state"}
# the arms each stage's report covers, in its order: ``--arms`` defaults to them, and only a report of exactly these
# arms is written as ``<stage>.md``; a report of other arms goes to a file named after them, so that a run of one
# arm never overwrites the stage's report (``frozen_state`` joined the evaluation stage after its first two tasks)
STAGE_ARMS = {
    "development": [
        "ddpg", "frozen", "meta", "meta_critic", "meta_state", "meta_variance",
        "meta_k5", "meta_critic_k5", "frozen_k5", "frozen_critic_k5",
    ],
    "evaluation": ["ddpg", "frozen", "meta", "meta_k5", "frozen_k5", "meta_state", "frozen_state"],
}  # fmt: skip
# stratified-bootstrap draws: 2000, as in rliable's own examples of probability of improvement; with ten arms
# and 20000 draws the report took over 15 minutes on this machine
REPS = 2000
# rliable draws its bootstrap indices from numpy's global generator (its ``random_state`` argument is not used by
# the stratified bootstraps of rliable 1.2), so the report seeds that generator with this fixed value before each
# estimate: a rebuild from the same runs gives the same intervals, and an arm's interval does not depend on which
# other arms share the report. Fixed before the evaluation's last two tasks were reported; never varied.
BOOTSTRAP_SEED = 0


def jobs(stage: str, arms: list[str], cap: int | None, n_seeds: int | None = None) -> list[Job]:
    tasks, seeds = STAGES[stage]
    seeds = seeds[:n_seeds]
    return [
        Job(env, arm, seed, budget if cap is None else min(cap, budget), ARM_OVERRIDES[arm], log_csv=True)
        for env, budget in tasks.items()
        for seed in seeds
        for arm in arms
    ]


def iteration_log(run_dir: Path) -> list[dict[str, str]]:
    files = sorted((run_dir / "iterations").glob("version_*/metrics.csv"))
    if not files:
        return []
    with open(files[-1], newline="") as f:
        return list(csv.DictReader(f))


def last_value(rows: list[dict[str, str]], key: str) -> float:
    values = [float(r[key]) for r in rows if r.get(key) not in (None, "", "nan")]
    return values[-1] if values else math.nan


def run_row(job: Job, runs: Path) -> dict[str, object]:
    run_dir = runs / job.name
    log = iteration_log(run_dir)
    metrics = read_metrics(run_dir)
    return {
        "env": job.env,
        "arm": job.arm,
        "seed": job.seed,
        "final_score": final_score(metrics),
        "ms_per_env_step": 1e3 * float(metrics[-1]["wall_time_s"]) / float(metrics[-1]["env_steps"]),
        "teacher_steps": last_value(log, "teacher/steps"),
        "meta_snr": last_value(log, "meta/snr"),
        "iterations": len(log),
    }


def score_matrices(rows: list[dict[str, object]], arms: list[str], tasks: list[str]) -> dict[str, np.ndarray]:
    """arm -> [runs, tasks] of min-max normalized final scores (rliable's layout)."""
    out: dict[str, np.ndarray] = {}
    for arm in arms:
        cols = []
        for env in tasks:
            all_scores = [float(r["final_score"]) for r in rows if r["env"] == env]  # type: ignore[arg-type]
            lo, hi = min(all_scores), max(all_scores)
            mine = sorted(
                (r for r in rows if r["env"] == env and r["arm"] == arm),
                key=lambda r: int(r["seed"]),  # type: ignore[call-overload]
            )
            cols.append([(float(r["final_score"]) - lo) / (hi - lo or 1.0) for r in mine])  # type: ignore[arg-type]
        out[arm] = np.array(cols, dtype=float).T
    return out


def report_name(stage: str, arms: list[str]) -> str:
    """``<stage>`` for the stage's own arms, ``<stage>_<arm>-<arm>...`` for any other selection."""
    return stage if sorted(arms) == sorted(STAGE_ARMS[stage]) else f"{stage}_{'-'.join(arms)}"


def write_runs(stage: str, runs: Path, out: Path, cap: int | None = None) -> list[dict[str, object]]:
    """``<stage>_runs.csv``: one row per finished run of every arm, whichever arms this invocation runs."""
    rows = [run_row(j, runs) for j in jobs(stage, list(ARM_OVERRIDES), cap) if finished(j, runs)]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{stage}_runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["env"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def balanced_seeds(env: str, all_jobs: list[Job], runs: Path) -> list[int]:
    """The seeds of ``env`` whose run is finished in every arm."""
    jobs_here = [j for j in all_jobs if j.env == env]
    return sorted({j.seed for j in jobs_here} - {j.seed for j in jobs_here if not finished(j, runs)})


def aggregate_sets(
    seeds: dict[str, list[int]], stage_seeds: dict[str, set[int]]
) -> list[tuple[str, list[str], list[int]]]:
    """The (label, tasks, seeds) the aggregates are computed over. rliable's [runs, tasks] layout needs the same
    seeds in every task, so a task still running would cut every other task to its few seeds: the tasks whose
    stage seeds are all finished come first (and give the performance profile), then every task with at least
    three finished seeds over the seeds they share. With every task complete, or none, the two are one."""
    started = [t for t, s in seeds.items() if len(s) >= 3]
    complete = [t for t in started if set(seeds[t]) == stage_seeds[t]]
    sets = []
    for label, tasks in (("the complete tasks", complete), ("every task with three or more seeds", started)):
        if tasks and all(tasks != other for _, other, _ in sets):
            sets.append((label, tasks, sorted(set.intersection(*(set(seeds[t]) for t in tasks)))))
    return sets


def interval_estimates(
    scores: dict[str, Any], func: Callable[..., np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """rliable's point estimates and 95% stratified-bootstrap intervals, each key's drawn from a generator seeded
    with ``BOOTSTRAP_SEED`` (see there)."""
    from rliable import library as rly

    point, ci = {}, {}
    for key, value in scores.items():
        np.random.seed(BOOTSTRAP_SEED)
        p, c = rly.get_interval_estimates({key: value}, func, reps=REPS)
        point[key], ci[key] = p[key], c[key]
    return point, ci


def report(stage: str, all_jobs: list[Job], runs: Path, out: Path, arms: list[str], cap: int | None = None) -> Path:
    """The rliable report of ``arms`` (``all_jobs``' arms) and its performance profile; returns the report's path."""
    all_rows = [r for r in write_runs(stage, runs, out, cap) if r["arm"] in arms]
    name = report_name(stage, arms)
    done = [j for j in all_jobs if finished(j, runs)]
    # a task enters the statistics with the seeds whose runs are finished in every arm (at least three)
    seeds = {t: balanced_seeds(t, all_jobs, runs) for t in STAGES[stage][0]}
    tasks = [t for t, s in seeds.items() if len(s) >= 3]
    rows = [r for r in all_rows if r["seed"] in seeds[str(r["env"])]]
    lines = [
        f"# Fair test of the teacher, {stage} stage",
        "",
        f"`python benchmarks/fair_study.py --stage {stage} --arms {' '.join(arms)}`; {len(done)} of "
        f"{len(all_jobs)} runs finished. Seeds finished in every arm: "
        + "; ".join(f"{t} {list(s)}" for t, s in seeds.items())
        + ".",
        "",
    ]
    if tasks:
        from rliable import metrics

        lines += [
            "| task | arm | IQM final score [95% CI] | mean +- std | teacher steps | meta-reward SNR "
            "| ms per env step |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        detectable = []
        for env in tasks:
            raw = {
                a: np.array([[float(r["final_score"])] for r in rows if r["env"] == env and r["arm"] == a])  # type: ignore[arg-type]
                for a in arms
            }
            point, ci = interval_estimates(raw, lambda x: np.array([metrics.aggregate_iqm(x)]))
            for a in arms:
                mine = [r for r in rows if r["env"] == env and r["arm"] == a]
                steps = [float(r["teacher_steps"]) for r in mine]  # type: ignore[arg-type]
                snr = [float(r["meta_snr"]) for r in mine]  # type: ignore[arg-type]
                cost = np.median([float(r["ms_per_env_step"]) for r in mine])  # type: ignore[arg-type]
                has_teacher = not np.isnan(steps).all()  # DDPG has none: "-" rather than a NaN warning
                lines.append(
                    f"| {env} | {a} | {point[a][0]:.1f} [{ci[a][0][0]:.1f}, {ci[a][1][0]:.1f}] | "
                    f"{raw[a].mean():.1f} +- {raw[a].std(ddof=1):.1f} | "
                    f"{f'{np.nanmedian(steps):.0f}' if has_teacher else '-'} | "
                    f"{f'{np.nanmedian(snr):+.3f}' if has_teacher else '-'} | {cost:.2f} |"
                )
            # the smallest difference of means that n seeds per arm detect (two-sided 5%, power 80%, normal
            # approximation) given the pooled spread: what a null result on this task could have seen
            pooled = float(np.sqrt(np.mean([raw[a].var(ddof=1) for a in arms])))
            n = len(raw[arms[0]])
            detectable.append(f"{env} {2.8 * pooled * np.sqrt(2 / n):.0f} (pooled std {pooled:.0f}, {n} seeds)")
        lines += [
            "",
            "Detectable difference of mean final scores between two arms, per task (two-sided 5%, power 80%, "
            "from the pooled seed-to-seed std): " + "; ".join(detectable) + ".",
            "`ms per env step`: median over seeds of a run's wall time / env steps, two runs sharing the 2 cores "
            "(indicative: other work shared the machine too).",
        ]
        stage_seeds = {t: {j.seed for j in all_jobs if j.env == t} for t in tasks}
        for k, (label, agg_tasks, common) in enumerate(aggregate_sets(seeds, stage_seeds)):
            lines += ["", f"### Aggregates over {label}: {', '.join(agg_tasks)}; seeds {common}", ""]
            scores = score_matrices([r for r in rows if r["seed"] in common], arms, agg_tasks)
            point, ci = interval_estimates(scores, lambda x: np.array([metrics.aggregate_iqm(x)]))
            lines += ["IQM of min-max normalized scores:", ""]
            lines += [f"- {a}: {point[a][0]:.3f} [{ci[a][0][0]:.3f}, {ci[a][1][0]:.3f}]" for a in arms]
            pairs = {f"{a} > ddpg": (scores[a], scores["ddpg"]) for a in arms if a != "ddpg" and "ddpg" in arms}
            pairs |= {
                f"{a} > {MATCHED_NULL[a]}": (scores[a], scores[MATCHED_NULL[a]])
                for a in arms
                if a in MATCHED_NULL and MATCHED_NULL[a] in arms
            }
            pairs |= {
                f"{a} > {EXACT_TWIN[a]}": (scores[a], scores[EXACT_TWIN[a]]) for a in arms if EXACT_TWIN.get(a) in arms
            }
            if pairs:
                prob, prob_ci = interval_estimates(pairs, metrics.probability_of_improvement)
                lines += ["", "Probability of improvement [95% CI]:", ""]
                lines += [
                    f"- P({key}) = {float(prob[key]):.2f} [{float(prob_ci[key][0][0]):.2f}, "
                    f"{float(prob_ci[key][1][0]):.2f}]"
                    for key in pairs
                ]
            if k == 0:
                profile(scores, out / f"profile_{name}.png")
    path = out / f"{name}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def profile(scores: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import library as rly
    from rliable import plot_utils

    thresholds = np.linspace(0.0, 1.0, 81)
    np.random.seed(BOOTSTRAP_SEED)  # the profile's bands, like the report's intervals, are reproducible
    dist, dist_ci = rly.create_performance_profile(scores, thresholds, reps=REPS)
    fig, ax = plt.subplots(figsize=(6, 4))
    plot_utils.plot_performance_profiles(
        dist, thresholds, performance_profile_cis=dist_ci, xlabel="normalized final score tau", ax=ax
    )
    ax.legend(handles=ax.get_lines()[: len(scores)], labels=list(scores), loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=list(STAGES), required=True)
    parser.add_argument(
        "--arms", nargs="+", choices=list(ARM_OVERRIDES), default=None, help="default: the stage's (STAGE_ARMS)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one per core)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fair_test")
    parser.add_argument("--report", action="store_true", help="only rebuild the report")
    parser.add_argument("--max-steps", type=int, default=None, help="cap every budget (smoke tests only)")
    parser.add_argument("--first-seeds", type=int, default=None, help="only the stage's first N seeds (smoke tests)")
    args = parser.parse_args()
    runs = args.out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    arms = args.arms or STAGE_ARMS[args.stage]
    all_jobs = jobs(args.stage, arms, args.max_steps, args.first_seeds)
    todo = [j for j in all_jobs if not finished(j, runs)]
    if not args.report:
        # after each run only the cheap per-run table: the rliable statistics (tens of thousands of bootstrap
        # draws per arm and pair) took minutes once a task was complete, with both job slots waiting on them
        def after_each() -> None:
            write_runs(args.stage, runs, args.out, args.max_steps)

        run_all(todo, runs, args.jobs, after_each)
    print(report(args.stage, all_jobs, runs, args.out, arms, args.max_steps).read_text())


if __name__ == "__main__":
    main()
