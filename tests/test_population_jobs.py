"""A study as population jobs (benchmarks/population_jobs.py, benchmarks/confirmation.py): seeds grouped into
jobs, the W&B grid sweep of the jobs, one sweep run replayed as ``wandb agent`` would start it (no W&B server:
the command is expanded here), per-seed results read back, a finished job left alone, a longer one resumed,
and the protocol's statistics."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import confirmation
import numpy as np
import pytest
import yaml
from conftest import ROOT, subprocess_env
from population_jobs import PopulationJob, consecutive, population_jobs, seed_results
from runlib import final_score, finished, read_metrics

# a study of one job: Pendulum, DDPG arm, seeds 200 and 201 in one population, a few hundred steps
TINY_STUDY = [
    "--tasks", "pendulum", "--arms", "ddpg", "--first-seeds=2", "--max-steps=600",
    "--set=--data.warmup_steps=200", "--set=--data.eval_every=200", "--set=--data.eval_episodes=1",
    "--set=--model.student.hidden=[16,16]", "--set=--trainer.callbacks=[]",
]  # fmt: skip
JOB = "pendulum_ddpg_seeds200-201"


def agent_commands(sweep: dict) -> list[list[str]]:
    """What ``wandb agent`` runs for each point of a grid over ``job``: ${env} ${interpreter} and ${args} expanded."""
    expand = {"${env}": "/usr/bin/env", "${interpreter}": sys.executable}
    base = [expand.get(part, part) for part in sweep["command"]]
    return [[f"--job={name}" if p == "${args}" else p for p in base] for name in sweep["parameters"]["job"]["values"]]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, subprocess.CompletedProcess[str]]:
    """The tiny study written as a sweep and its one run replayed in a subprocess, as an agent would (W&B off)."""
    tmp = tmp_path_factory.mktemp("study")
    runs = tmp / "runs"
    confirmation.main(["--write-sweep", str(tmp / "sweep.yaml"), f"--runs={runs}", *TINY_STUDY])
    sweep = yaml.safe_load((tmp / "sweep.yaml").read_text())
    [command] = agent_commands(sweep)
    env = subprocess_env(WANDB_SWEEP_ID="replayed", WANDB_MODE="disabled")
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    return runs, sweep, done


def test_consecutive_seeds_are_one_job_and_a_gap_splits_them() -> None:
    [job] = population_jobs("pendulum", "ddpg", "pendulum_ddpg.yaml", range(200, 220), 50_000)
    assert (job.first_seed, job.size, job.name) == (200, 20, "pendulum_ddpg_seeds200-219")
    command = job.command(Path("runs") / job.name, None)
    assert "--seed_everything=200" in command and "--population=20" in command
    assert consecutive([7, 3, 1, 2, 3]) == [[1, 2, 3], [7]]
    jobs = population_jobs("hopper", "pink", "hopper_ddpg.yaml", [205, 207, *range(200, 205), 210, 211], 1000)
    assert [(j.first_seed, j.size) for j in jobs] == [(200, 6), (207, 1), (210, 2)]
    assert len({j.name for j in jobs}) == 3
    single = jobs[1].command(Path("r"), Path("r/checkpoints/last.ckpt"))
    assert not any(a.startswith("--population") for a in single)  # one seed: an ordinary run
    assert single[-1] == "--ckpt_path=r/checkpoints/last.ckpt"  # a resumed job continues its own checkpoint


def test_the_confirmation_is_one_population_per_task_and_arm_as_the_protocol_sets_it() -> None:
    jobs = confirmation.study(list(confirmation.TASKS), list(confirmation.ARMS), list(confirmation.SEEDS), None, [])
    assert len(jobs) == len({j.name for j in jobs}) == 5 * 4
    assert all((j.first_seed, j.size) == (200, 20) for j in jobs)
    by_name = {j.name: j for j in jobs}
    pink = by_name["sparse_mountain_car_pink_seeds200-219"]
    assert pink.config == "sparse_mountain_car_ddpg.yaml" and pink.budget == 100_000
    assert "--model.teacher.pink_horizon=999" in pink.overrides
    frozen_state = by_name["hopper_frozen_state_seeds200-219"]
    assert frozen_state.config == "hopper.yaml" and frozen_state.budget == 300_000
    assert set(frozen_state.overrides) == {"--model.teacher.kind=meta_state", "--model.teacher.lr=0"}
    assert by_name["half_cheetah_ddpg_seeds200-219"].overrides == ()
    assert all((ROOT / "conf" / j.config).is_file() for j in jobs)


def test_the_sweep_is_a_grid_over_every_job_that_calls_the_script_back(tmp_path: Path) -> None:
    confirmation.main(["--write-sweep", str(tmp_path / "sweep.yaml")])
    sweep = yaml.safe_load((tmp_path / "sweep.yaml").read_text())
    assert sweep["method"] == "grid" and list(sweep["parameters"]) == ["job"]
    names = [j.name for j in confirmation.study(list(confirmation.TASKS), list(confirmation.ARMS),
                                                list(confirmation.SEEDS), None, [])]  # fmt: skip
    assert sweep["parameters"]["job"]["values"] == names
    command = sweep["command"]
    assert command[:3] == ["${env}", "${interpreter}", sweep["program"]] and command[-1] == "${args}"
    assert (ROOT / sweep["program"]).is_file()
    assert not any(a.startswith("--runs") for a in command)  # each machine's own checkout, unless given


def test_a_replayed_sweep_run_writes_each_seeds_metrics_and_the_report_reads_them(replayed, tmp_path: Path) -> None:
    runs, sweep, done = replayed
    assert done.returncode == 0, done.stderr[-3000:]
    assert sweep["parameters"]["job"]["values"] == [JOB]
    [job] = confirmation.study(["pendulum"], ["ddpg"], [200, 201], 600, [])
    assert finished(job, runs)
    results = seed_results(job, runs)
    for r in results:
        rows = read_metrics(runs / JOB / f"seed_{r.seed}")
        assert float(rows[-1]["env_steps"]) == 600 and not r.retired
        assert r.final_score == final_score(rows)
    assert results[0].final_score != results[1].final_score  # two seeds, not one run twice
    confirmation.main(["--report", f"--runs={runs}", f"--out={tmp_path}", *TINY_STUDY])
    table = (tmp_path / "runs.csv").read_text().splitlines()
    assert len(table) == 3 and all(f"{r.final_score}" in table[1 + k] for k, r in enumerate(results))
    assert "Primary: needs the arms frozen_state and ddpg" in (tmp_path / "report.md").read_text()


def test_a_finished_job_is_not_run_again(replayed, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    runs, _, _ = replayed

    def no_training(*args: object) -> None:
        raise AssertionError("a finished job was started again")

    monkeypatch.setattr("population_jobs.run", no_training)
    confirmation.main(["--job", JOB, f"--runs={runs}", *TINY_STUDY])
    assert "already finished" in capsys.readouterr().out


def test_a_job_given_a_larger_budget_resumes_from_its_checkpoint(replayed, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(replayed[0], runs)
    before = read_metrics(runs / JOB / "seed_201")
    longer = [a if a != "--max-steps=600" else "--max-steps=800" for a in TINY_STUDY]
    confirmation.main(["--job", JOB, f"--runs={runs}", *longer])
    after = read_metrics(runs / JOB / "seed_201")
    assert float(after[-1]["env_steps"]) == 800
    assert after[: len(before)] == before  # the rows it had, wall times included: continued, not started over


def test_a_seed_retired_in_a_finished_population_is_kept_and_ranks_last(tmp_path: Path) -> None:
    job = PopulationJob("pendulum", "ddpg", "pendulum_ddpg.yaml", 200, 3, 1000)
    curves = {200: [(500, -300), (1000, -200)], 201: [(500, -900)], 202: [(500, -400), (1000, -100)]}
    for seed, curve in curves.items():
        (tmp_path / job.name / f"seed_{seed}").mkdir(parents=True)
        lines = ["env_steps,eval/return"] + [f"{s},{r}" for s, r in curve[:1]]
        (tmp_path / job.name / f"seed_{seed}" / "metrics.csv").write_text("\n".join(lines) + "\n")
    assert not finished(job, tmp_path)  # every seed at 500 of 1000: interrupted, not retired
    with pytest.raises(ValueError, match="not finished"):
        seed_results(job, tmp_path)
    for seed in (200, 202):
        with open(tmp_path / job.name / f"seed_{seed}" / "metrics.csv", "a") as f:
            f.write(f"{curves[seed][1][0]},{curves[seed][1][1]}\n")
    results = seed_results(job, tmp_path)
    assert [r.retired for r in results] == [False, True, False]
    scored = confirmation.scored(results)
    assert [r["final"] for r in scored] == [-200.0, -900.0, -100.0]
    others = confirmation.scored([results[0], results[2]])
    assert [r["final"] for r in others] == [-200.0, -100.0]
    results[1].rows.clear()  # retired before its first evaluation: still the lowest of its task
    assert confirmation.scored(results)[1]["final"] == -200.0


def test_auc_is_the_mean_return_under_the_trapezoidal_curve() -> None:
    rows = [{"env_steps": str(s), "eval/return": str(r)} for s, r in [(100, 0.0), (200, 10.0), (400, 10.0)]]
    assert confirmation.auc(rows) == pytest.approx((5.0 * 100 + 10.0 * 200) / 300)
    assert confirmation.auc(rows[:1]) == 0.0


def test_the_endpoint_draws_are_rliables_seeded_intervals(monkeypatch: pytest.MonkeyPatch) -> None:
    from rliable import library as rly
    from rliable import metrics

    monkeypatch.setattr(confirmation, "REPS", 500)
    rng = np.random.default_rng(0)
    x, y = rng.normal(0.3, 1.0, (20, 5)), rng.normal(0.0, 1.0, (20, 5))
    test = confirmation.improvement_test(x, y)
    for size, (lo, hi) in ((0.90, ("lower5", None)), (0.95, ("lo95", "hi95"))):
        np.random.seed(confirmation.BOOTSTRAP_SEED)
        _, ci = rly.get_interval_estimates({"p": [x, y]}, metrics.probability_of_improvement, reps=500,
                                           confidence_interval_size=size)  # fmt: skip
        assert test[lo] == pytest.approx(float(ci["p"][0][0]))
        if hi:
            assert test[hi] == pytest.approx(float(ci["p"][1][0]))
    assert 0 < test["p"] < 0.05 and test["lower5"] > 0.5


def test_holm_rejects_in_order_and_stops_at_the_first_that_is_not_small_enough() -> None:
    # sorted: 0.005 <= 0.05/4, 0.01 <= 0.05/3, 0.03 > 0.05/2: stop, so 0.04 is not rejected either
    assert confirmation.holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert confirmation.holm([0.02, 0.02, 0.02, 0.02]) == [False] * 4
    assert confirmation.holm([0.012, 0.016, 0.025, 0.05]) == [True] * 4


def test_the_primary_endpoint_is_a_success_only_when_its_lower_bound_clears_one_half(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(confirmation, "REPS", 300)
    rng = np.random.default_rng(1)
    tasks = ["a", "b"]

    def rows(shift: float) -> list[dict[str, object]]:
        return [
            {"env": t, "arm": arm, "seed": s, "final": rng.normal() + (shift if arm == "frozen_state" else 0.0),
             "auc": rng.normal(), "retired": False}
            for t in tasks for arm in confirmation.ARMS for s in range(10)
        ]  # fmt: skip

    better = "\n".join(confirmation.endpoint_lines(rows(3.0), tasks, list(confirmation.ARMS)))
    assert "(success" in better and better.count("Secondary:") == 4
    line = next(ln for ln in better.splitlines() if "P(frozen_state > frozen) on final scores" in ln)
    assert line.endswith(": rejected under Holm (family of 4)")
    same = "\n".join(confirmation.endpoint_lines(rows(0.0), tasks, list(confirmation.ARMS)))
    assert "(not shown" in same


def test_the_progress_of_a_running_job_shows_its_steps_and_no_result(tmp_path: Path, capsys) -> None:
    # PROTOCOL.md: nothing is looked at before every job has finished, so a progress check prints steps only
    [job] = confirmation.study(["pendulum"], ["ddpg"], [200, 201], 600, [])
    for seed, ret in ((200, -1234.5), (201, -987.6)):
        folder = job.seed_dir(tmp_path / job.name, seed)
        folder.mkdir(parents=True)
        (folder / "metrics.csv").write_text(f"env_steps,iteration,eval/return,r_pi,wall_time_s\n300,3,{ret},nan,1.0\n")
    assert confirmation.progress(job, tmp_path) == "under way: 300 of 600 env steps evaluated"
    confirmation.main(["--dry-run", f"--runs={tmp_path}", "--tasks", "pendulum", "--arms", "ddpg", "--first-seeds=2"])
    out = capsys.readouterr().out
    assert "under way: 300 of" in out and "1234" not in out and "987" not in out
