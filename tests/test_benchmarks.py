"""The pure parts of the benchmark scripts: the statistics and the run commands behind the published tables.

The scripts are imported from benchmarks/ (``pythonpath`` in pyproject.toml)."""

from __future__ import annotations

import numpy as np
import pytest
from reproduce import ENVS, bootstrap_ci, jobs_for, make_job, table
from runlib import Job, final_score, finished


def test_bootstrap_interval_of_constant_arms_is_the_exact_difference() -> None:
    lo, hi = bootstrap_ci([5.0, 5.0, 5.0], [2.0, 2.0, 2.0])
    assert lo == pytest.approx(3.0) and hi == pytest.approx(3.0)


def test_bootstrap_interval_brackets_the_difference_and_separates_distinct_arms() -> None:
    rng = np.random.default_rng(1)
    a, b = list(rng.normal(10, 1, 5)), list(rng.normal(0, 1, 5))
    lo, hi = bootstrap_ci(a, b)
    diff = np.mean(a) - np.mean(b)
    assert lo < diff < hi
    assert lo > 0  # ten standard deviations apart: the interval excludes zero
    lo2, hi2 = bootstrap_ci(b, a)
    assert lo2 == pytest.approx(-hi, abs=0.5) and hi2 == pytest.approx(-lo, abs=0.5)


def test_final_score_is_the_mean_of_the_last_tenth_of_evaluations() -> None:
    rows = [{"eval/return": str(float(i))} for i in range(20)]  # last 10% = the last 2 points
    assert final_score(rows) == pytest.approx(18.5)
    assert final_score(rows[:3]) == pytest.approx(2.0)  # at least one point


def test_jobs_cover_both_arms_everywhere_and_variants_on_two_envs() -> None:
    jobs = jobs_for(list(ENVS), (0, 1, 2, 3, 4), None)
    for env in ENVS:
        arms = {j.arm for j in jobs if j.env == env}
        assert {"meta", "ddpg"} <= arms
    assert {j.env for j in jobs if j.arm in ("meta_state", "meta_variance")} == {"pendulum", "inverted_pendulum"}
    assert len(jobs) == len(set(jobs)) == 6 * 2 * 5 + 2 * 2 * 5
    assert all(j.budget >= 50_000 for j in jobs)


def test_job_command_picks_the_config_and_resumes_from_a_checkpoint(tmp_path) -> None:
    ddpg = make_job("hopper", "ddpg", 3, None).command(tmp_path / "r", None)
    assert ddpg[ddpg.index("--config") + 1].endswith("conf/hopper_ddpg.yaml")
    assert "--seed_everything=3" in ddpg and "--data.total_env_steps=300000" in ddpg
    assert "--flush_denormal=false" in ddpg  # the studies' protocol predates the CLI's flush default
    variant = make_job("pendulum", "meta_state", 0, 1000).command(tmp_path / "r", tmp_path / "last.ckpt")
    assert variant[variant.index("--config") + 1].endswith("conf/pendulum.yaml")
    assert "--model.teacher.kind=meta_state" in variant and "--data.total_env_steps=1000" in variant
    assert variant[-1] == f"--ckpt_path={tmp_path / 'last.ckpt'}"


def test_a_run_is_finished_only_once_its_metrics_reach_the_budget(tmp_path) -> None:
    job = make_job("pendulum", "meta", 0, 1000)
    run_dir = tmp_path / job.name
    assert not finished(job, tmp_path)
    run_dir.mkdir()
    (run_dir / "metrics.csv").write_text("env_steps,eval/return\n500.0,-1\n")
    assert not finished(job, tmp_path)
    (run_dir / "metrics.csv").write_text("env_steps,eval/return\n500.0,-1\n1100.0,-2\n")
    assert finished(job, tmp_path)


def test_table_reports_a_difference_only_with_two_seeds_per_arm() -> None:
    rows = [
        {"env": "pendulum", "arm": arm, "seed": s, "budget": 50_000, "final_score": v, "d0_share": 0.5}
        for arm, values in (("meta", [-150.0, -160.0]), ("ddpg", [-200.0]))
        for s, v in enumerate(values)
    ]
    line = next(x for x in table(rows, "cmd").splitlines() if x.startswith("| Pendulum | 50k"))
    assert "| -155 +- 7 (n=2) | -200 +- 0 (n=1) |" in line
    assert "| - |" in line  # one DDPG seed: no interval


def test_bit_identical_comparison_notices_any_changed_evaluation_or_weight(tmp_path) -> None:
    import torch
    from bit_identical import compare

    def write(root, value: float, weight: float) -> None:
        run = root / "fit"
        (run / "checkpoints").mkdir(parents=True)
        (run / "metrics.csv").write_text(
            f"env_steps,iteration,eval/return,r_pi,wall_time_s\n500.0,1.0,{value},nan,0.3\n"
        )
        torch.save({"state_dict": {"w": torch.tensor([1.0, weight])}}, run / "checkpoints" / "last.ckpt")

    write(tmp_path / "a", -1.5, 2.0)
    write(tmp_path / "b", -1.5, 2.0)
    assert compare(tmp_path / "a", tmp_path / "b", "fit") == (True, True, 1, 1)
    write(tmp_path / "c", -1.5, 2.0 + 1e-6)  # one float32 step or so
    assert compare(tmp_path / "a", tmp_path / "c", "fit")[:2] == (True, False)
    write(tmp_path / "d", -1.5000001, 2.0)
    assert compare(tmp_path / "a", tmp_path / "d", "fit")[:2] == (False, True)


def test_every_learned_arm_of_the_fair_test_has_a_frozen_null_with_its_protocol() -> None:
    from fair_study import ARM_OVERRIDES, MATCHED_NULL

    def protocol(arm: str) -> set[str]:  # everything but what the teacher is and whether it learns
        return {o for o in ARM_OVERRIDES[arm] if not o.startswith(("--model.teacher.kind", "--model.teacher.lr"))}

    learned = {a for a in ARM_OVERRIDES if a.startswith("meta")}
    assert set(MATCHED_NULL) == learned
    for arm, null in MATCHED_NULL.items():
        assert "--model.teacher.lr=0" in ARM_OVERRIDES[null]
        if arm == "meta_critic":  # documented: its null collects D0 from five environments, not one
            assert protocol(null) == protocol(arm) | {"--model.meta.samples=5", "--data.num_envs=5"}
        else:
            assert protocol(null) == protocol(arm), arm


def test_the_exact_twin_of_a_learned_arm_differs_only_in_the_teacher_never_learning() -> None:
    from fair_study import ARM_OVERRIDES, EXACT_TWIN

    for arm, twin in EXACT_TWIN.items():
        assert set(ARM_OVERRIDES[twin]) == set(ARM_OVERRIDES[arm]) | {"--model.teacher.lr=0"}, arm


def test_a_fair_test_report_of_some_arms_keeps_every_arms_runs_and_the_stage_report(tmp_path) -> None:
    # a run of one arm once rewrote evaluation_runs.csv and evaluation.md with that arm alone
    import csv

    from fair_study import STAGE_ARMS, jobs, report, report_name

    runs, out = tmp_path / "runs", tmp_path / "out"
    for arm, score in (("ddpg", -150.0), ("frozen_state", -140.0)):
        run_dir = runs / Job("pendulum", arm, 100, 50_000).name
        run_dir.mkdir(parents=True)
        rows = [f"{steps},{score},{steps / 1000}" for steps in (25_000, 50_000)]
        (run_dir / "metrics.csv").write_text("env_steps,eval/return,wall_time_s\n" + "\n".join(rows) + "\n")
    (out / "evaluation.md").parent.mkdir(parents=True)
    (out / "evaluation.md").write_text("the stage's report\n")

    path = report("evaluation", jobs("evaluation", ["frozen_state"], None), runs, out, ["frozen_state"])

    assert path == out / "evaluation_frozen_state.md" and "--arms frozen_state" in path.read_text()
    assert (out / "evaluation.md").read_text() == "the stage's report\n"
    with open(out / "evaluation_runs.csv", newline="") as f:
        assert {(r["arm"], r["seed"], float(r["final_score"])) for r in csv.DictReader(f)} == {
            ("ddpg", "100", -150.0),
            ("frozen_state", "100", -140.0),
        }
    assert report_name("evaluation", list(reversed(STAGE_ARMS["evaluation"]))) == "evaluation"


def test_a_fair_test_report_rebuilt_from_the_same_runs_repeats_every_interval(tmp_path) -> None:
    # rliable draws from numpy's global generator: unseeded, each rebuild moved the committed intervals
    from fair_study import jobs, report

    runs = tmp_path / "runs"
    scores = {"ddpg": [-300, -150, -700, -160, -140, -420], "frozen_state": [-130, -900, -170, -150, -250, -145]}
    for arm, finals in scores.items():
        for seed, score in zip(range(100, 106), finals, strict=True):
            run_dir = runs / Job("pendulum", arm, seed, 50_000).name
            run_dir.mkdir(parents=True)
            rows = [f"{steps},{score},{steps / 1000}" for steps in (25_000, 50_000)]
            (run_dir / "metrics.csv").write_text("env_steps,eval/return,wall_time_s\n" + "\n".join(rows) + "\n")

    def build(arms: list[str], out: str) -> list[str]:
        lines = report("evaluation", jobs("evaluation", arms, None), runs, tmp_path / out, arms).read_text()
        return [line for line in lines.splitlines() if "[" in line and "]" in line and "Seeds" not in line]

    both = build(["ddpg", "frozen_state"], "a")
    assert any("P(frozen_state > ddpg)" in line for line in both)
    assert build(["ddpg", "frozen_state"], "b") == both

    # an arm's interval does not depend on the other arms in the report
    def frozen_state_rows(lines: list[str]) -> list[str]:
        return [line for line in lines if "| frozen_state |" in line]

    assert frozen_state_rows(both) == frozen_state_rows(build(["frozen_state"], "c"))


def test_fair_test_aggregates_complete_tasks_first_so_a_task_in_progress_cannot_cut_their_seeds() -> None:
    from fair_study import aggregate_sets

    ten = set(range(100, 110))
    stage = {"pendulum": ten, "inverted_pendulum": ten, "sparse_mountain_car": ten, "hopper": ten}
    seeds = {"pendulum": sorted(ten), "inverted_pendulum": sorted(ten), "sparse_mountain_car": [100, 101, 102]}
    seeds["hopper"] = [100, 101]  # under three seeds: in no aggregate
    assert aggregate_sets(seeds, stage) == [
        ("the complete tasks", ["pendulum", "inverted_pendulum"], sorted(ten)),
        (
            "every task with three or more seeds",
            ["pendulum", "inverted_pendulum", "sparse_mountain_car"],
            [100, 101, 102],
        ),
    ]
    done = {t: sorted(ten) for t in stage}
    assert aggregate_sets(done, stage) == [("the complete tasks", list(stage), sorted(ten))]  # one set, not two
    partial = {"pendulum": [100, 101, 102, 103], "hopper": [100, 101, 102]}
    assert aggregate_sets(partial, stage) == [
        ("every task with three or more seeds", ["pendulum", "hopper"], [100, 101, 102])
    ]


def test_throughput_ratios_price_the_compiled_arm_by_its_steady_state_and_its_first_compile() -> None:
    from throughput import Run, ratio_lines

    def run(arm: str, repeat: int, steps_per_s: float, startup: float = 0.0) -> Run:
        return Run("default", arm, repeat, 1000, 1000 / steps_per_s, 250, startup)

    runs = [run("ref", r, 500) for r in range(3)] + [run("ddpg", r, 520) for r in range(3)]
    runs += [run("ddpg_compiled", 0, 800, 30.0), run("ddpg_compiled", 1, 760, 0.1), run("ddpg_compiled", 2, 700)]
    lines = ratio_lines(runs, "default")
    assert not [line for line in lines if "Meta" in line]  # no Meta arm ran: no Meta ratio
    compiled = next(line for line in lines if line.startswith("- default: compiled DDPG arm / reference"))
    assert "= 1.520 (target >= 1.5: met)" in compiled  # the median 760 against 500
    assert "compiled / eager DDPG arm = 1.462" in compiled
    assert "compile start-up 30.0 s" in compiled  # the first compiled run's, not the median's 0.1
    slow = [r for r in runs if r.arm != "ddpg_compiled"] + [run("ddpg_compiled", r, 600) for r in range(3)]
    assert "(target >= 1.5: NOT met)" in next(line for line in ratio_lines(slow, "default") if "compiled" in line)


def test_version_speed_takes_each_ratio_within_its_pair_and_refuses_unpaired_timings() -> None:
    from version_speed import Timing, fit_args, ratios, table_rows

    # the machine slows down between pairs: every pair's ratio is 0.9
    assert ratios([9.0, 18.0, 90.0], [10.0, 20.0, 100.0]) == pytest.approx((0.9, 0.9, 0.9))
    assert ratios([11.0, 9.0, 10.0], [10.0, 10.0, 10.0]) == pytest.approx((1.0, 0.9, 1.1))
    # the median of the pairs' ratios, neither the ratio of the medians (20 / 15) nor of sorted timings (1.2)
    assert ratios([12.0, 20.0, 30.0], [40.0, 10.0, 15.0]) == pytest.approx((2.0, 0.3, 2.0))
    with pytest.raises(ValueError, match="as many timings"):
        ratios([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least one"):
        ratios([], [])
    wall, cpu = table_rows("s", [Timing(9.0, 18.0)], [Timing(10.0, 12.0)])
    assert "| s | wall seconds | 10.0 | 9.0 | **0.900** |" in wall
    assert "| s | cpu seconds | 12.0 | 18.0 | **1.500** |" in cpu
    args = fit_args("conf/hopper.yaml", "compiled", 5000)
    assert "--model.compile=true" in args and "--data.total_env_steps=5000" in args
    assert "--model.compile=false" in fit_args("conf/hopper.yaml", "eager", 5000)
    assert not [a for a in args if "population" in a]
    assert fit_args("conf/hopper.yaml", "eager", 5000, 8)[-1] == "--population=8"
