"""Checkpoints and resume: a run killed with SIGKILL and resumed with ``--ckpt_path last`` reports exactly
what an uninterrupted run reports; the checkpoint holds everything resume needs and can be loaded the way
Lightning loads it; an existing run directory is never overwritten."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import (
    ROOT,
    SMOKE,
    TINY,
    ConstantPolicy,
    clear_run_dir_env,
    finish_wandb,
    fit,
    isolated_env,
    read_metrics,
    run_module,
    subprocess_env,
    torch_threads,
)

from lightning_meta_rl.buffer import RunningNorm
from lightning_meta_rl.cli import cli, main
from lightning_meta_rl.envs import EnvRunner
from lightning_meta_rl.rollout import Collector

pytestmark = pytest.mark.usefixtures("one_thread")

RESUME_ARGS = [
    "fit",
    "--config",
    "conf/smoke.yaml",
    "--data.total_env_steps=5000",
    "--trainer.enable_progress_bar=false",
]


def start(run_dir: Path, log: Path, *extra: str) -> subprocess.Popen:
    with open(log, "w") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "lightning_meta_rl", *RESUME_ARGS, f"--run_dir={run_dir}", *extra],
            cwd=ROOT,
            env=subprocess_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def curve(run_dir: Path) -> list[tuple[str, str]]:
    _, rows = read_metrics(run_dir)
    return [(r["env_steps"], r["eval/return"]) for r in rows]


def load_ckpt(path: Path) -> dict:
    return torch.load(path, weights_only=False)


# ----------------------------------------------------------------------------- SIGKILL and resume
@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A: uninterrupted. B: SIGKILLed as soon as its first checkpoint exists, then resumed with
    ``--ckpt_path last``. Same seed and arguments; A and B run side by side, one thread each.

    (With the smoke config the training environment is between episodes at every checkpoint: Pendulum
    episodes are 200 steps and D0 is 100. Mid-episode checkpoints are covered further down.)
    """
    base = tmp_path_factory.mktemp("resume")
    a_dir, b_dir = base / "A", base / "B"
    last = b_dir / "checkpoints" / "last.ckpt"
    a = start(a_dir, base / "a.log")
    b = start(b_dir, base / "b.log")
    try:
        deadline = time.monotonic() + 240
        while not last.exists():
            assert b.poll() is None, (base / "b.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.02)
        os.kill(b.pid, signal.SIGKILL)
        killed = b.wait(timeout=60)
        # what the kill left behind must load as a complete checkpoint
        killed_at = load_ckpt(last)["RolloutDataModule"]["env_steps"]
        resumed = run_module(*RESUME_ARGS, f"--run_dir={b_dir}", "--ckpt_path", "last", timeout=240)
        a_code = a.wait(timeout=240)
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return SimpleNamespace(
        a_dir=a_dir,
        b_dir=b_dir,
        killed=killed,
        killed_at=killed_at,
        resumed=resumed,
        a_code=a_code,
        a_log=(base / "a.log").read_text(),
    )


def test_killed_and_resumed_run_matches_an_uninterrupted_one(killed_and_resumed: SimpleNamespace) -> None:
    r = killed_and_resumed
    assert r.killed == -signal.SIGKILL  # B was still running: really interrupted
    assert r.a_code == 0, r.a_log[-3000:]
    assert r.resumed.returncode == 0, r.resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint" in r.resumed.stderr + r.resumed.stdout

    expected = curve(r.a_dir)
    assert len(expected) >= 4 and float(expected[-1][0]) >= 5000
    assert 0 < r.killed_at < 5000
    assert any(float(steps) > r.killed_at for steps, _ in expected)  # B had evaluations left after resuming
    assert curve(r.b_dir) == expected


def test_resume_leaves_a_complete_checkpoint_and_no_temporary_files(killed_and_resumed: SimpleNamespace) -> None:
    r = killed_and_resumed
    assert r.resumed.returncode == 0, r.resumed.stderr[-3000:]
    assert not list((r.b_dir / "checkpoints").glob("*.tmp"))
    assert not list(r.b_dir.glob("*.tmp"))
    final = load_ckpt(r.b_dir / "checkpoints" / "last.ckpt")
    assert final["RolloutDataModule"]["env_steps"] >= 5000
    assert final["global_step"] == load_ckpt(r.a_dir / "checkpoints" / "last.ckpt")["global_step"]


def test_resumed_run_keeps_its_state_visitation_data(killed_and_resumed: SimpleNamespace) -> None:
    r = killed_and_resumed
    assert r.resumed.returncode == 0, r.resumed.stderr[-3000:]
    with np.load(r.a_dir / "visitation.npz") as a, np.load(r.b_dir / "visitation.npz") as b:
        assert sorted(b.files) == sorted(a.files)
        for key in a.files:
            np.testing.assert_array_equal(b[key], a[key])


# ----------------------------------------------------------------------------- checkpoint contents
def test_checkpoint_holds_what_resume_needs(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    c = fit(run_dir, "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false")
    ckpt = load_ckpt(run_dir / "checkpoints" / "last.ckpt")
    assert len(ckpt["optimizer_states"]) == 3  # actor, critic, teacher

    data = ckpt["RolloutDataModule"]
    assert {"env_steps", "normalizer", "rng", "collectors", "buffer"} <= set(data)
    env_steps = c.datamodule.env_steps
    assert data["env_steps"] == env_steps >= 800
    assert set(data["rng"]) == {"noise_rng", "sample_rng", "pair_rng"}
    assert set(data["collectors"]) == {"train_collector", "rollout_collector", "eval_collector"}
    for name, state in data["collectors"].items():
        assert state["runners"][0]["steps_taken"] > 0, name
        assert "np_random" in state["runners"][0]
    # every counted step was stored and folded into the observation statistics
    assert data["buffer"]["size"] == env_steps
    assert data["buffer"]["obs"].shape == (env_steps, 3)
    assert data["normalizer"]["count"] == env_steps

    meta = ckpt["meta_rl"]
    # each part's own state, by part (no hand-kept list of fields)
    assert set(meta) == {"credit", "meta_reward", "evaluation", "r_pi", "iteration", "teacher_steps", "exploration"}
    assert meta["r_pi"] == pytest.approx(c.model.r_pi)
    assert meta["iteration"] == c.model.iteration > 0
    _, rows = read_metrics(run_dir)
    assert [r["eval/return"] for r in meta["evaluation"]["history"]["rows"]] == pytest.approx(
        [float(r["eval/return"]) for r in rows]
    )


def test_ddpg_arm_checkpoint_has_two_optimizers_and_buffer_can_be_left_out(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    fit(
        run_dir,
        "--model.teacher.kind=gaussian",
        "--data.checkpoint_buffer=false",
        "--trainer.callbacks=[]",
        "--trainer.enable_progress_bar=false",
    )
    ckpt = load_ckpt(run_dir / "checkpoints" / "last.ckpt")
    assert len(ckpt["optimizer_states"]) == 2  # actor, critic: no teacher to train
    data = ckpt["RolloutDataModule"]
    assert "buffer" not in data
    assert {"env_steps", "normalizer", "rng", "collectors"} <= set(data)
    assert not any(k.startswith("exploration.") and "mean_net" in k for k in ckpt["state_dict"])


# ----------------------------------------------------------------------------- checkpoints taken mid-episode
@pytest.fixture(scope="module")
def mid_episode_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """conftest.TINY: warm-up 200 (one Pendulum episode), then one iteration whose 100-step D0 leaves the
    training environment in the middle of an episode when the final checkpoint is written."""
    base = tmp_path_factory.mktemp("mid_episode")
    with isolated_env(base), torch_threads(1):
        fit(base / "run", "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false")
    ckpt = load_ckpt(base / "run" / "checkpoints" / "last.ckpt")
    assert ckpt["RolloutDataModule"]["collectors"]["train_collector"]["obs"][0] is not None  # mid-episode
    return base / "run"


def run_cli(*args: str):
    try:
        return cli(list(args))
    finally:
        finish_wandb()
        clear_run_dir_env()


def test_mid_episode_checkpoint_loads_with_weights_only(mid_episode_run: Path) -> None:
    torch.load(mid_episode_run / "checkpoints" / "last.ckpt", weights_only=True)


@pytest.mark.parametrize(("env_id", "action"), [("Pendulum-v1", [0.5]), ("Hopper-v5", [0.1, -0.1, 0.2])])
def test_collector_state_is_weights_only_loadable(env_id: str, action: list[float]) -> None:
    runner = EnvRunner(env_id, None, 0)
    collector = Collector([runner], RunningNorm(runner.env.observation_space.shape[0], 5.0))
    try:
        collector.steps(ConstantPolicy(action), 5)
        buf = io.BytesIO()
        torch.save(collector.state_dict(), buf)
        buf.seek(0)
        torch.load(buf, weights_only=True)
    finally:
        runner.close()


@pytest.mark.parametrize(("env_id", "action"), [("Pendulum-v1", [0.5]), ("Hopper-v5", [0.1, -0.1, 0.2])])
def test_collector_restored_mid_episode_continues_exactly(env_id: str, action: list[float]) -> None:
    policy = ConstantPolicy(action)
    runners = EnvRunner(env_id, None, 0), EnvRunner(env_id, None, 123)  # a fresh process would use another seed
    obs_dim = runners[0].env.observation_space.shape[0]
    first, fresh = (Collector([r], RunningNorm(obs_dim, 5.0)) for r in runners)
    try:
        first.steps(policy, 10)
        buf = io.BytesIO()
        torch.save(first.state_dict(), buf)
        buf.seek(0)
        fresh.load_state_dict(torch.load(buf, weights_only=False))
        expected, got = first.steps(policy, 30), fresh.steps(policy, 30)
        assert torch.equal(got.obs, expected.obs)
        assert torch.equal(got.reward, expected.reward)
        assert got.episode_returns == expected.episode_returns
    finally:
        first.runners[0].close()
        fresh.runners[0].close()


def test_fit_resumes_from_a_mid_episode_checkpoint(mid_episode_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(mid_episode_run, run_dir)
    before = curve(run_dir)
    c = run_cli(
        "fit",
        "--config",
        SMOKE,
        "--run_dir",
        str(run_dir),
        *TINY,
        "--data.total_env_steps=1300",
        "--trainer.callbacks=[]",
        "--trainer.enable_progress_bar=false",
        "--ckpt_path",
        "last",
    )
    assert c.datamodule.env_steps >= 1300
    after = curve(run_dir)
    assert after[: len(before)] == before and len(after) > len(before)


def test_validate_a_mid_episode_checkpoint(mid_episode_run: Path, tmp_path: Path) -> None:
    c = run_cli(
        "validate",
        "--config",
        SMOKE,
        *TINY,
        "--trainer.enable_progress_bar=false",
        "--run_dir",
        str(tmp_path / "validate"),
        "--ckpt_path",
        str(mid_episode_run / "checkpoints" / "last.ckpt"),
    )
    assert "eval/return" in c.trainer.callback_metrics


# ----------------------------------------------------------------------------- run directories
def test_fit_into_an_existing_run_dir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    fit(run_dir, "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false")
    before = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert Path("metrics.csv") in before and Path("checkpoints/last.ckpt") in before
    capsys.readouterr()
    try:
        with pytest.raises(SystemExit) as exc:
            main(["fit", "--config", SMOKE, "--run_dir", str(run_dir), *TINY, "--trainer.enable_progress_bar=false"])
    finally:
        clear_run_dir_env()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--ckpt_path" in err
    after = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before  # byte-identical, nothing added


def test_second_in_process_cli_uses_its_own_run_dir(tmp_path: Path) -> None:
    """The run directory handed to DDP's re-launched ranks must not leak into a later in-process cli() call."""
    first, second = tmp_path / "first", tmp_path / "second"
    try:
        c1 = cli(["--config", SMOKE, "--run_dir", str(first), *TINY], run=False)
        c2 = cli(["--config", SMOKE, "--run_dir", str(second), *TINY], run=False)
    finally:
        finish_wandb()
        clear_run_dir_env()
    assert c1.trainer.default_root_dir == str(first)
    assert c2.trainer.default_root_dir == str(second)
