"""Why and when does the learned teacher lose? Meta-reward noise and four off-by-default remedies.

On Pendulum-v1 (50k steps) and InvertedPendulum-v5 (100k), seeds 0-4 (the reproduction's seeds, fixed in
advance), every arm is the Meta config ``conf/<env>.yaml`` plus overrides:

* ``meta``: the faithful method, rerun with every iteration logged (its final scores must equal the
  reproduction's: logging does not touch any random stream);
* ``no_lookahead``: ``lookahead_updates=0``, so pi' = pi and the meta-reward R(pi') - R(pi) is pure
  evaluation noise: the noise floor the teacher's signal has to rise above;
* ``teacher_lr_1e-4``: a 10x smaller teacher learning rate;
* ``shaped``: running-mean baseline and running-std normalization of the meta-reward;
* ``paired``: R(pi) measured in the same iteration from the same reset seeds as D1 (common random numbers).

And on Reacher-v5 (300k), where Meta loses clearly, ``d0_steps=1000``: a larger share of teacher data.

Writes ``<out>/table.md`` (final scores, meta-reward statistics, what the teacher did late in training) and
``<out>/runs.csv``; resumable like benchmarks/reproduce.py (the same job runner, runlib.py).

    python benchmarks/investigate.py
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from pathlib import Path

import numpy as np
from reproduce import ENVS, SEEDS, add_run_options, bootstrap_ci, d0_share, fmt
from runlib import ROOT, Job, final_score, finished, read_metrics, run_all, write_rows

INVESTIGATED = ("pendulum", "inverted_pendulum")
ARMS: dict[str, tuple[str, ...]] = {
    "meta": (),
    "no_lookahead": ("--model.meta.lookahead_updates=0",),
    "teacher_lr_1e-4": ("--model.teacher.lr=1e-4",),
    "shaped": ("--model.meta.baseline=true", "--model.meta.normalize=true"),
    "paired": ("--model.meta.paired_evaluation=true",),
}
REPRODUCTION = ROOT / "benchmarks" / "results" / "reproduce" / "runs"


# Reacher: does the Meta arm lose because only ~2/3 of its steps are exploration data? 1000 teacher steps per
# iteration instead of 200 raise that share to ~0.9 (compared with the reproduction's Meta and DDPG runs).
MORE_D0 = ("reacher", "d0_steps_1000", ("--model.meta.d0_steps=1000",))


def jobs(cap: int | None = None, seeds: tuple[int, ...] = SEEDS) -> list[Job]:
    def budget(env: str) -> int:
        return ENVS[env][0] if cap is None else min(cap, ENVS[env][0])

    out = [
        Job(env, arm, seed, budget(env), overrides, log_csv=True)
        for env in INVESTIGATED
        for seed in seeds
        for arm, overrides in ARMS.items()
    ]
    env, arm, overrides = MORE_D0
    return out + [Job(env, arm, seed, budget(env), overrides, log_csv=True) for seed in seeds]


def iteration_log(run_dir: Path) -> list[dict[str, str]]:
    """Every iteration's logged metrics, once each. A resumed run logs into a new CSVLogger version and
    repeats the iterations after its last checkpoint: the latest version's row of a step wins."""
    by_step: dict[int, dict[str, str]] = {}
    versions = sorted((run_dir / "iterations").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    for version in versions:
        with open(version / "metrics.csv", newline="") as f:
            by_step.update({int(r["step"]): r for r in csv.DictReader(f) if r.get("meta/reward")})
    return [by_step[k] for k in sorted(by_step)]


def column(rows: list[dict[str, str]], key: str) -> np.ndarray:
    return np.array([float(r[key]) for r in rows if r.get(key) not in (None, "", "nan")])


def run_stats(job: Job, runs: Path) -> dict[str, object]:
    metrics = read_metrics(runs / job.name)
    log = iteration_log(runs / job.name)
    m = column(log, "meta/reward")
    late = log[len(log) * 3 // 4 :]  # the last quarter of the iterations
    gap, d0_return = column(late, "explore/action_gap"), column(late, "train/episode_return")
    reference = read_metrics(REPRODUCTION / f"{job.env}_meta_seed{job.seed}")
    return {
        "env": job.env,
        "arm": job.arm,
        "seed": job.seed,
        "final_score": round(final_score(metrics), 3),
        "iterations": len(m),
        "meta_reward_mean": float(m.mean()) if m.size else math.nan,
        "meta_reward_std": float(m.std()) if m.size else math.nan,
        "meta_reward_positive": float((m > 0).mean()) if m.size else math.nan,
        "late_action_gap": float(gap.mean()) if gap.size else math.nan,
        "late_d0_episode_return": float(d0_return.mean()) if d0_return.size else math.nan,
        "reproduction_score": round(final_score(reference), 3) if reference else math.nan,
        "d0_share": round(d0_share(runs / job.name, metrics), 3),
    }


def table(rows: list[dict[str, object]]) -> str:
    def pick(env: str, arm: str, key: str) -> list[float]:
        return [float(r[key]) for r in rows if r["env"] == env and r["arm"] == arm]  # type: ignore[arg-type]

    lines = [
        "# Where the teacher loses: meta-reward noise and off-by-default remedies",
        "",
        "Command: `python benchmarks/investigate.py`",
        "",
        "Every arm is the Meta config plus the overrides named in the script; seeds 0-4; final score as in",
        "the reproduction table. Difference = arm - faithful Meta, 95% bootstrap interval over seeds.",
        "",
        "## Final scores",
        "",
        "| env | arm | final score | arm - Meta [95% CI] | per seed |",
        "| --- | --- | --- | --- | --- |",
    ]
    for env in INVESTIGATED:
        base = pick(env, "meta", "final_score")
        for arm in ARMS:
            scores = pick(env, arm, "final_score")
            diff = "-"
            if arm != "meta" and len(scores) > 1 and len(base) > 1:
                lo, hi = bootstrap_ci(scores, base)
                diff = f"{statistics.fmean(scores) - statistics.fmean(base):.1f} [{lo:.1f}, {hi:.1f}]"
            per_seed = ", ".join(f"{s:.0f}" for s in scores)
            lines.append(f"| {ENVS[env][1]} | {arm} | {fmt(scores)} | {diff} | {per_seed} |")
    lines += [
        "",
        "## The meta-reward and the teacher (means over seeds)",
        "",
        "std(m): standard deviation of the meta-reward over a run's iterations. With `no_lookahead`, pi' = pi",
        "and m is pure evaluation noise. Late: the last quarter of the iterations. Action gap: distance of D0's",
        "actions from the student's mu(s), in half action ranges. D0 return: return of the teacher's own",
        "training-environment episodes.",
        "",
        "| env | arm | iterations | mean m | std(m) | P(m > 0) | late action gap | late D0 return |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for env in INVESTIGATED:
        for arm in ARMS:
            if not pick(env, arm, "iterations"):
                continue
            cells = [statistics.fmean(pick(env, arm, k)) for k in ("iterations", "meta_reward_mean", "meta_reward_std")]
            more = [
                statistics.fmean(pick(env, arm, k))
                for k in ("meta_reward_positive", "late_action_gap", "late_d0_episode_return")
            ]
            lines.append(
                f"| {ENVS[env][1]} | {arm} | {cells[0]:.0f} | {cells[1]:.1f} | {cells[2]:.1f} | {more[0]:.2f} | "
                f"{more[1]:.2f} | {more[2]:.1f} |"
            )
    env, arm, _ = MORE_D0
    more = pick(env, arm, "final_score")
    if more:
        repro = {a: reproduction_scores(env, a) for a in ("meta", "ddpg")}
        lines += [
            "",
            f"## {ENVS[env][1]}: more teacher data per iteration",
            "",
            "| arm | final score | D0 share | per seed |",
            "| --- | --- | --- | --- |",
            f"| Meta, d0_steps 200 (reproduction) | {fmt(repro['meta'])} | see reproduction | "
            + ", ".join(f"{x:.1f}" for x in repro["meta"])
            + " |",
            f"| Meta, d0_steps 1000 | {fmt(more)} | {statistics.fmean(pick(env, arm, 'd0_share')):.2f} | "
            + ", ".join(f"{x:.1f}" for x in more)
            + " |",
            f"| DDPG (reproduction) | {fmt(repro['ddpg'])} | 1 | "
            + ", ".join(f"{x:.1f}" for x in repro["ddpg"])
            + " |",
        ]
    same = [r for r in rows if r["arm"] == "meta" and not math.isnan(float(r["reproduction_score"]))]  # type: ignore[arg-type]
    equal = sum(float(r["final_score"]) == float(r["reproduction_score"]) for r in same)  # type: ignore[arg-type]
    lines += ["", f"Faithful Meta reruns equal to the reproduction's runs: {equal} of {len(same)}."]
    return "\n".join(lines) + "\n"


def reproduction_scores(env: str, arm: str) -> list[float]:
    scores = []
    for seed in SEEDS:
        metrics = read_metrics(REPRODUCTION / f"{env}_{arm}_seed{seed}")
        if metrics and float(metrics[-1]["env_steps"]) >= ENVS[env][0]:
            scores.append(final_score(metrics))
    return scores


def report(all_jobs: list[Job], out: Path) -> None:
    runs = out / "runs"
    rows = [run_stats(j, runs) for j in all_jobs if finished(j, runs)]
    write_rows(out / "runs.csv", rows)
    (out / "table.md").write_text(table(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_options(parser, ROOT / "benchmarks" / "results" / "investigate", "table.md and runs.csv")
    args = parser.parse_args()
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    all_jobs = jobs(args.max_steps, tuple(args.seeds))
    if not args.report:
        todo = [j for j in all_jobs if not finished(j, args.out / "runs")]
        run_all(todo, args.out / "runs", args.jobs, lambda: report(all_jobs, args.out))
    report(all_jobs, args.out)
    print((args.out / "table.md").read_text())


if __name__ == "__main__":
    main()
