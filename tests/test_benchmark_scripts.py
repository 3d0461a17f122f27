"""Every kept benchmark script still imports against the package, so a rename in lightning_meta_rl/ cannot
break one unnoticed; and the update micro-benchmark runs end to end in its quick form.

The scripts are imported from benchmarks/ (``pythonpath`` in pyproject.toml); benchmarks/README.md lists them.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

SCRIPTS = (
    "bit_identical",
    "confirmation",
    "env_threads",
    "fair_study",
    "gpu_check",
    "investigate",
    "population_equivalence",
    "population_speed",
    "profile_breakdown",
    "reproduce",
    "study_speed",
    "teacher_acting",
    "teacher_probe",
    "throughput",
    "update_speed",
    "version_speed",
)


def test_the_list_of_scripts_is_the_folder() -> None:
    # a script added to benchmarks/ without a smoke test here fails this test
    found = {p.stem for p in (ROOT / "benchmarks").glob("*.py")}
    assert found == {*SCRIPTS, "runlib", "population_jobs"}


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_kept_script_imports_and_has_a_main(name: str) -> None:
    module = importlib.import_module(name)
    assert callable(module.main)


def test_the_shared_module_imports() -> None:
    runlib = importlib.import_module("runlib")
    for helper in ("final_score", "fit_command", "read_metrics", "run_quietly", "write_rows", "run_all"):
        assert callable(getattr(runlib, helper)), helper
    population_jobs = importlib.import_module("population_jobs")
    for helper in ("population_jobs", "seed_results", "run_job", "write_sweep"):
        assert callable(getattr(population_jobs, helper)), helper


def test_a_rerun_keeps_the_earlier_result_file_below_the_new_one(tmp_path: Path) -> None:
    runlib = importlib.import_module("runlib")
    out = tmp_path / "sub" / "result.md"
    runlib.write_keeping_earlier(out, "# First\n\n| a | 1.00 |\n")
    assert out.read_text() == "# First\n\n| a | 1.00 |\n"
    runlib.write_keeping_earlier(out, "# Second\n\n| a | 2.00 |\n")
    text = out.read_text()
    assert text.startswith("# Second\n") and "## Earlier runs of this file" in text
    assert text.index("| a | 2.00 |") < text.index("## First") < text.index("| a | 1.00 |")


def test_the_study_comparison_reads_both_studies_committed_runs(tmp_path: Path) -> None:
    out = tmp_path / "study_speed.md"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "study_speed.py"), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| ")]
    gains = [r for r in rows if len(r) == 5 and r[1] in ("ddpg", "frozen", "frozen_state")]
    assert len(gains) == 15  # five tasks x the three arms both studies ran
    total = next(r for r in rows if r[0] == "| all")
    assert float(total[1]) > 59  # the fair test's ~59.8M env steps
    assert float(total[3].rstrip(" |")) < float(total[2])


def test_the_update_benchmark_runs_in_its_quick_form() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "update_speed.py"), "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ms per update" in done.stdout


def test_the_teacher_acting_benchmark_runs_in_its_quick_form() -> None:
    # it calls TeacherStack directly: a change of its signature must break this test, not the next measurement
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "teacher_acting.py"), "--quick"],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| meta")]
    assert [r.split(" | ")[0] for r in rows] == ["| meta", "| meta_state", "| meta_variance"]


def test_the_profile_breakdown_sums_samples_into_non_overlapping_parts() -> None:
    breakdown = importlib.import_module("profile_breakdown")
    raw = "\n".join(
        [
            "main (cli.py:1);PopulationModule._evaluate_members (p.py:2);EnvRunner.step (envs.py:3) 5",
            "main (cli.py:1);drive (r.py:4);Collector.stepper (r.py:5);EnvRunner.step (envs.py:3) 7",
            "main (cli.py:1);drive (r.py:4);EnvRunner.step (envs.py:3);MujocoEnv._step_mujoco_simulation (m.py:1) 8",
            "main (cli.py:1);drive (r.py:4);Collector.stepper (r.py:5);RunningNorm.__call__ (b.py:6) 2",
            "main (cli.py:1);Learner.step (l.py:7);ddpg_step (l.py:8) 4",
            "main (cli.py:1);Learner.step (l.py:7);compile_wrapper (e.py:1);Runner.call (k.py:2) 6",
            "main (cli.py:1);Learner.step (l.py:7);compile_wrapper (e.py:1);ConvertFrame.__call__ (c.py:3) 9",
            "<module> (x.py:1);_find_and_load (i.py:1) 3",
        ]
    )
    counts = breakdown.parts(raw)
    assert counts == {
        "evaluation": 5,  # its environment steps belong to the evaluation
        "MuJoCo's physics (mj_step)": 8,
        "environment step, the rest (gymnasium's Python, checks)": 7,
        "collecting, the rest": 2,
        "compiling the update (its first calls)": 9,  # tracing is not updating
        "update (ddpg_step)": 10,  # eager, and the compiled code's calls
        breakdown.OTHER: 3,
    }
