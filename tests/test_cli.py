"""In-process fits through the CLI: run directory contents, budgets, both arms and every teacher kind,
determinism, and that ``callbacks`` is our package."""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SMOKE, TINY, fit, read_metrics

from lightning_meta_rl import learner
from lightning_meta_rl.cli import cli

KIND_RUNS = {
    "meta": [],
    "gaussian": [],
    "meta_state": [],
    "meta_variance": [],
    "ou": [],
    "meta_options": [  # every deviation switched on at once: in-place look-ahead, paired evaluation, shaping
        "--model.meta.lookahead=inplace",
        "--model.meta.paired_evaluation=true",
        "--model.meta.baseline=true",
        "--model.meta.normalize=true",
    ],
}


@pytest.mark.parametrize("name", list(KIND_RUNS))
def test_fit_writes_a_complete_run_directory(tmp_path: Path, name: str) -> None:
    kind = "meta" if name == "meta_options" else name
    run_dir = tmp_path / "run"
    c = fit(run_dir, f"--model.teacher.kind={kind}", *KIND_RUNS[name])

    assert c.model.teacher_cfg.kind == kind
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    header, rows = read_metrics(run_dir)
    assert header[:3] == ["env_steps", "iteration", "eval/return"]
    assert len(rows) >= 1
    assert all(r["eval/return"] not in ("", "nan") for r in rows)
    total = c.datamodule.total_env_steps
    assert total == 800
    assert c.datamodule.env_steps >= total
    assert float(rows[-1]["env_steps"]) >= total  # the final evaluation happens at the end of the budget
    assert float(c.trainer.optimizers[0].state_dict()["state"][0]["step"]) > 0  # the student was actually trained


@pytest.mark.parametrize("kind", ["meta", "gaussian"])
def test_every_env_step_counts_and_both_arms_get_utd_updates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    calls: list[object] = []
    original = learner.ddpg_step

    def spy(student, *args, **kwargs):
        calls.append(student)
        return original(student, *args, **kwargs)

    monkeypatch.setattr(learner, "ddpg_step", spy)
    c = fit(tmp_path / "run", f"--model.teacher.kind={kind}", "--data.total_env_steps=1500")
    dm = c.datamodule
    # the budget counts every step of the training and student-rollout environments (not reporting evaluation)
    assert dm.env_steps == dm.train_collector.runners[0].steps_taken + dm.rollout_collector.runners[0].steps_taken
    assert dm.eval_collector.runners[0].steps_taken > 0
    # student updates: utd_ratio (0.25) per env step after warm-up, in both arms alike; the meta arm's
    # last R(pi) rollout (one 200-step Pendulum episode) may not have been turned into updates yet
    live = sum(1 for s in calls if s is c.model.student)
    expected = 0.25 * (dm.env_steps - dm.warmup_steps)
    slack = 0.25 * 200 + 1 if kind == "meta" else 1
    assert expected - slack <= live <= expected
    lookahead = len(calls) - live
    iterations = c.model.iteration
    assert iterations >= 3
    assert lookahead == (5 * iterations if kind == "meta" else 0)  # lookahead_updates x iterations, on copies


def test_same_seed_gives_identical_eval_returns(tmp_path: Path) -> None:
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        # meta arm, three iterations: evaluations at 900, 1400 and 1900 env steps
        fit(tmp_path / name, f"--seed_everything={seed}", "--data.total_env_steps=1500")
        _, rows = read_metrics(tmp_path / name)
        runs[name] = [(r["env_steps"], r["eval/return"]) for r in rows]
    assert len(runs["a"]) >= 2
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]  # and the seed matters (the comparison above is not vacuous)


def _import_callbacks(cwd: Path) -> tuple[list[str], str | None]:
    code = "import callbacks; print(repr((list(callbacks.__path__), getattr(callbacks, '__file__', None))))"
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True)
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("where", ["repo", "elsewhere"])
def test_import_callbacks_resolves_to_our_package(tmp_path: Path, where: str) -> None:
    ours = (ROOT / "callbacks").resolve()
    paths, init_file = _import_callbacks(ROOT if where == "repo" else tmp_path)
    real_dirs = [Path(p).resolve() for p in paths if Path(p).is_dir()]
    assert real_dirs == [ours], paths  # nothing from site-packages
    if where == "repo" and (ours / "__init__.py").exists():
        assert init_file is not None and Path(init_file).resolve() == ours / "__init__.py"
    # no installed distribution other than ours provides a top-level `callbacks`
    assert set(importlib.metadata.packages_distributions().get("callbacks", [])) <= {"lightning-meta-rl"}


@pytest.mark.parametrize("kind", ["meta", "gaussian"])
def test_fit_with_several_training_environments(tmp_path: Path, kind: str) -> None:
    c = fit(
        tmp_path / "run", f"--model.teacher.kind={kind}", "--data.num_envs=3", "--trainer.enable_progress_bar=false"
    )
    dm = c.datamodule
    assert [r.steps_taken > 0 for r in dm.train_collector.runners] == [True, True, True]
    seeds = {int(r.env.unwrapped.np_random.bit_generator.state["state"]["state"]) for r in dm.train_collector.runners}
    assert len(seeds) == 3  # differently seeded environments
    assert dm.env_steps >= dm.total_env_steps


def test_config_lands_in_the_run_directory_whatever_the_logger(tmp_path: Path) -> None:
    import yaml

    run_dir = tmp_path / "run"
    fit(
        run_dir,
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={tmp_path / 'csv'}",
        "--trainer.callbacks=[]",
        "--trainer.enable_progress_bar=false",
    )
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["data"]["env_id"] == "Pendulum-v1" and saved["run_dir"] == str(run_dir)


def test_the_cli_flushes_denormals_to_zero_unless_told_not_to(tmp_path: Path) -> None:
    """Denormal floats slowed a 256-256 run without LayerNorm 2.3x (Adam moments of dead ReLU units decay into
    them): the CLI flushes them by default, and --flush_denormal=false keeps them."""
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush denormals")
    denormal = torch.tensor(1e-39)
    assert (denormal * 1.0).item() != 0.0  # IEEE by default (the autouse fixture restores it after each test)
    cli(["--config", SMOKE, "--run_dir", str(tmp_path / "on"), *TINY], run=False)
    assert (denormal * 1.0).item() == 0.0
    cli(["--config", SMOKE, "--run_dir", str(tmp_path / "off"), *TINY, "--flush_denormal=false"], run=False)
    assert (denormal * 1.0).item() != 0.0
