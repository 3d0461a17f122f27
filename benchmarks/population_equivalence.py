"""Do a population's members and single runs come from the same distribution? (issue 29, scope item 5)

Per arm (DDPG: ``conf/pendulum_ddpg.yaml``, Meta: ``conf/pendulum.yaml``) on Pendulum-v1 with 30,000 env steps
per seed and the configs' own evaluation schedule, seeds 0-4 are trained twice: once as one population
(``--seed_everything=0 --population=5``) and once as five single runs (``--seed_everything=k``). Member k is
meant to be the run of seed k up to the order of float summations. Jobs, folders and results go through
population_jobs.py and runlib (resumable; a finished run is never redone).

    python benchmarks/population_equivalence.py           # the full study (about 15-30 min on one core)
    python benchmarks/population_equivalence.py --quick   # two seeds, a tiny budget; prints, writes nothing

How "same distribution" is tested, fixed before any full run:

1. Primary, per arm: a two-sided exact permutation test of the five population final scores against the five
   single-run final scores. The statistic is the difference of means; the p-value is the share of the 252
   ways of splitting the ten scores into two groups of five whose |difference| is at least the observed one.
   "Different" if p < 0.05, else "no difference detected".
2. Paired, per arm: the differences member k - single k, their mean and largest |value|, set against the
   spread across seeds (std of the ten final scores), and an exact sign-flip test of the five differences
   (32 sign patterns). Its smallest possible two-sided p-value is 2/32 = 0.0625: it can never reach 5%, so it
   is reported as a description only.
3. Curves, per seed: the first evaluation (env steps) at which the member's and the single run's eval/return
   differ by more than 1e-3 relative (|a - b| > 1e-3 * max(|a|, |b|)); "never" if they agree throughout.

What n = 5 can show: the permutation test's smallest p-value is 2/252 = 0.008, and with five seeds a side a 5%
test has 80% power only for a shift of about 2 standard deviations of the seed-to-seed spread (two-sample t
test, normal scores; Pendulum's scores are not normal, with occasional failed seeds). A "no difference
detected" is therefore not evidence of equality; it excludes only a gross difference such as a population
that systematically fails or a member trained on the wrong seed. Item 3 is the sharper check: if the curves
agree for a stretch of evaluations and then part, the members follow their seeds' single runs until float
rounding sends the trajectories apart, after which each pair behaves like two draws of the same seed's
distribution.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import shlex
import statistics
import subprocess
import tempfile
from datetime import date
from hashlib import sha256
from pathlib import Path

from population_jobs import PopulationJob, seed_results
from runlib import ROOT, finished, run_all, write_keeping_earlier, write_rows

FOLDER = ROOT / "benchmarks" / "results" / "population_equivalence"
ARMS = {"ddpg": "pendulum_ddpg.yaml", "meta": "pendulum.yaml"}
SEEDS = (0, 1, 2, 3, 4)
BUDGET = 30_000
QUIET = ("--trainer.callbacks=[]", "--trainer.enable_model_summary=false")
# --quick: two seeds and a budget just past the configs' 1000 warm-up steps, evaluated often and briefly
QUICK = ("--data.eval_every=500", "--data.eval_episodes=1")
RELATIVE = 1e-3  # curves differ where |a - b| > RELATIVE * max(|a|, |b|)


def study(seeds: tuple[int, ...], budget: int, overrides: tuple[str, ...]) -> dict[str, list[PopulationJob]]:
    """Per arm: the population job first, then one single-seed job per seed (a population of one is a plain run)."""
    jobs = {}
    for arm, config in ARMS.items():
        population = PopulationJob("pendulum", arm, config, seeds[0], len(seeds), budget, overrides)
        singles = [PopulationJob("pendulum", arm, config, s, 1, budget, overrides) for s in seeds]
        jobs[arm] = [population, *singles]
    return jobs


def tolerance(values: list[float]) -> float:
    """How much two means may differ by rounding alone: a statistic that close to the observed one counts as a tie."""
    return 1e-9 * max(1.0, *(abs(v) for v in values))


def permutation_p(x: list[float], y: list[float]) -> float:
    """Two-sided exact permutation test of the difference of means: every split of x + y into len(x) and len(y)."""
    pooled, n = x + y, len(x)
    observed = abs(statistics.fmean(x) - statistics.fmean(y)) - tolerance(pooled)
    hits = total = 0
    for chosen in itertools.combinations(range(len(pooled)), n):
        a = [pooled[i] for i in chosen]
        b = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        total += 1
        hits += abs(statistics.fmean(a) - statistics.fmean(b)) >= observed
    return hits / total


def sign_flip_p(diffs: list[float]) -> float:
    """Two-sided exact sign-flip test of the mean paired difference (2^n sign patterns)."""
    observed = abs(statistics.fmean(diffs)) - tolerance(diffs)
    flips = list(itertools.product((1, -1), repeat=len(diffs)))
    hits = sum(abs(statistics.fmean([s * d for s, d in zip(signs, diffs, strict=True)])) >= observed
               for signs in flips)  # fmt: skip
    return hits / len(flips)


def first_divergence(a: list[dict[str, str]], b: list[dict[str, str]]) -> str:
    """The env steps of the first evaluation where the two curves differ by more than RELATIVE; 'never' if none."""
    for ra, rb in zip(a, b, strict=False):
        if ra["env_steps"] != rb["env_steps"]:
            return f"schedules differ at {ra['env_steps']} / {rb['env_steps']}"
        x, y = float(ra["eval/return"]), float(rb["eval/return"])
        if abs(x - y) > RELATIVE * max(abs(x), abs(y)):
            return str(int(float(ra["env_steps"])))
    return "never" if len(a) == len(b) else f"never (but {len(a)} against {len(b)} evaluations)"


def relative(a: dict[str, str], b: dict[str, str]) -> float:
    """|a - b| / max(|a|, |b|) of two evaluations' returns."""
    x, y = float(a["eval/return"]), float(b["eval/return"])
    return abs(x - y) / max(abs(x), abs(y), 1e-12)


def compare(arm: str, jobs: list[PopulationJob], runs: Path) -> tuple[list[dict[str, object]], dict[str, float]]:
    """One row per seed (both final scores, their difference, where the curves part) and the arm's statistics."""
    members = seed_results(jobs[0], runs)
    singles = [seed_results(job, runs)[0] for job in jobs[1:]]
    rows: list[dict[str, object]] = []
    for m, s in zip(members, singles, strict=True):
        rows.append({
            "arm": arm, "seed": m.seed, "population": round(m.final_score, 3), "single": round(s.final_score, 3),
            "difference": round(m.final_score - s.final_score, 3), "curves_part_at": first_divergence(m.rows, s.rows),
            "first_eval_relative_diff": f"{relative(m.rows[0], s.rows[0]):.1e}",
            "retired": m.retired or s.retired,
        })  # fmt: skip
    pop = [m.final_score for m in members]
    one = [s.final_score for s in singles]
    diffs = [p - o for p, o in zip(pop, one, strict=True)]
    stats = {
        "pop_mean": statistics.fmean(pop), "pop_std": statistics.stdev(pop),
        "single_mean": statistics.fmean(one), "single_std": statistics.stdev(one),
        "spread": statistics.stdev(pop + one), "mean_diff": statistics.fmean(diffs),
        "max_abs_diff": max(abs(d) for d in diffs), "p_permutation": permutation_p(pop, one),
        "p_sign_flip": sign_flip_p(diffs),
    }  # fmt: skip
    return rows, stats


def report(rows: list[dict[str, object]], stats: dict[str, dict[str, float]], header: list[str]) -> str:
    lines = [*header, "", "## Final scores per seed", ""]
    lines += ["| arm | seed | population member | single run | member - single | curves part at (env steps) |"]
    lines += ["| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['seed']} | {r['population']:.1f} | {r['single']:.1f} | "
                     f"{r['difference']:+.1f} | {r['curves_part_at']} |")  # fmt: skip
    lines += ["", "## Statistics", "", "| arm | population mean +- std | single mean +- std | std of all scores | "
              "mean paired diff | max abs paired diff | permutation p (primary) | sign-flip p | verdict |"]  # fmt: skip
    lines += ["| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for arm, s in stats.items():
        verdict = "different" if s["p_permutation"] < 0.05 else "no difference detected"
        lines.append(
            f"| {arm} | {s['pop_mean']:.1f} +- {s['pop_std']:.1f} | {s['single_mean']:.1f} +- {s['single_std']:.1f} | "
            f"{s['spread']:.1f} | {s['mean_diff']:+.1f} | {s['max_abs_diff']:.1f} | {s['p_permutation']:.3f} | "
            f"{s['p_sign_flip']:.3f} | {verdict} |"
        )
    lines += ["", "## Verdict", ""]
    for arm, s in stats.items():
        mine = [r for r in rows if r["arm"] == arm]
        parts = [str(r["curves_part_at"]) for r in mine]
        first = max(float(str(r["first_eval_relative_diff"])) for r in mine)
        lines.append(
            f"- {arm}: permutation p = {s['p_permutation']:.3f}, "
            f"{'different' if s['p_permutation'] < 0.05 else 'no difference detected'}. With five seeds a side, "
            f"80% power needs a shift of about 2 std of the scores, here about {2 * s['spread']:.0f}. The paired "
            f"differences average {s['mean_diff']:+.1f} (largest {s['max_abs_diff']:.1f}; std of all scores "
            f"{s['spread']:.1f}). At the first evaluation member and single run differ by at most {first:.0e} "
            f"relative; the curves part (1e-3 relative) at env steps {', '.join(parts)} (seeds in order)."
        )
    return "\n".join(lines) + "\n"


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def package_state() -> str:
    """The commit, and any uncommitted edits under lightning_meta_rl/ (a hash of their diff, the new files)."""
    diff = git("diff", "HEAD", "--", "lightning_meta_rl")
    new = git("ls-files", "--others", "--exclude-standard", "lightning_meta_rl").split()
    state = f"commit {git('rev-parse', '--short', 'HEAD')}"
    if diff or new:
        digest = sha256(diff.encode()).hexdigest()[:12]
        state += (
            f" with uncommitted changes under lightning_meta_rl/ (diff sha256 {digest}; new files: {new or 'none'})"
        )
    return state


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="seeds 0-1, 1500 env steps, in a temporary folder")
    args = parser.parse_args(argv)
    seeds, budget, overrides = ((0, 1), 1500, QUIET + QUICK) if args.quick else (SEEDS, BUDGET, QUIET)
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) if args.quick else FOLDER / "runs"
        jobs = study(seeds, budget, overrides)
        every = [job for arm_jobs in jobs.values() for job in arm_jobs]
        todo = [j for j in every if not finished(j, runs)]
        state = package_state() if todo else "runs made by an earlier invocation"
        # one training at a time; a failed arm (say, Meta's population) leaves the other arm's results usable
        try:
            run_all(todo, runs, 1, lambda: None)
        except SystemExit as failed:
            if args.quick:
                raise
            print(f"{failed}; reporting the arms whose runs all finished", flush=True)
        rows: list[dict[str, object]] = []
        stats = {}
        for arm, arm_jobs in jobs.items():
            if all(finished(j, runs) for j in arm_jobs):
                arm_rows, stats[arm] = compare(arm, arm_jobs, runs)
                rows += arm_rows
            else:
                print(f"{arm}: not every run finished, no result for this arm", flush=True)
    if state != package_state():
        state += f", then {package_state()}: the package changed while the runs ran"
    population = jobs["ddpg"][0]
    example = ["python", *population.command(Path("<runs>") / population.name, None)[1:]]
    example = [a.replace(f"{ROOT}/", "") for a in example]
    header = [
        "# Population members against single runs (Pendulum-v1)",
        "",
        f"{date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} CPUs, one torch thread, one training at "
        f"a time; {state}. `python benchmarks/population_equivalence.py{' --quick' if args.quick else ''}`: per arm, seeds "
        f"{seeds[0]}-{seeds[-1]} with {budget} env steps, as one population and as {len(seeds)} single runs. "
        "Final score: mean eval/return over the last 10% of evaluation points (runlib.final_score). The test "
        "plan is in the script's docstring. The DDPG population's command (the single runs drop `--population`):",
        "",
        f"    {shlex.join(example)}",
    ]
    text = report(rows, stats, header)
    print(text)
    if not args.quick and rows:
        write_rows(FOLDER / "scores.csv", rows)
        write_keeping_earlier(FOLDER / "population_equivalence.md", text)  # scores.csv: the latest run


if __name__ == "__main__":
    main()
