"""Runs that survive a cluster (issue 26): a stop signal saves and says how to resume, a requeued finished run
changes nothing, one run per directory, failures to start are one paragraph with nothing left behind, an
environment that raises is named, a resumed run continues its W&B run, and the smaller refusals."""

from __future__ import annotations

import csv
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import ROOT, SMOKE, TINY, clear_run_dir_env, fit, read_metrics, subprocess_env
from jsonargparse import Namespace

from lightning_meta_rl.checkpoint import EnvStepCheckpoint, read_checkpoint
from lightning_meta_rl.cli import main
from lightning_meta_rl.module import MetaRLModule
from lightning_meta_rl.rundir import RunDir, RunLock

pytestmark = pytest.mark.usefixtures("one_thread")


def run_main(*args: str) -> int:
    """``main([...])`` in-process; returns its exit status."""
    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        clear_run_dir_env()
    return 0


def fit_args(run_dir: Path, *extra: str) -> list[str]:
    return ["fit", "--config", SMOKE, "--run_dir", str(run_dir), *TINY, "--trainer.enable_progress_bar=false", *extra]


def files_of(run_dir: Path) -> dict[Path, bytes]:
    """Every file of a run, W&B's and the lock's aside (the lock names the process that last held it)."""
    return {
        p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and "wandb" not in p.parts and p.name != ".lock"
    }


def ckpt_env_steps(run_dir: Path) -> int:
    return int(read_checkpoint(str(run_dir / "checkpoints" / "last.ckpt"))["RolloutDataModule"]["env_steps"])


# ----------------------------------------------------------------------------- 1. preemption
def signal_at_iteration(monkeypatch: pytest.MonkeyPatch, signum: int, iteration: int) -> None:
    """Send ``signum`` to this process in the middle of the given training iteration."""
    original = MetaRLModule.training_step

    def step(self: MetaRLModule, batch: int, batch_idx: int) -> None:
        if self.iteration + 1 == iteration:
            os.kill(os.getpid(), signum)
        original(self, batch, batch_idx)

    monkeypatch.setattr(MetaRLModule, "training_step", step)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1], ids=["TERM", "INT", "USR1"])
def test_a_stop_signal_saves_at_the_next_boundary_and_exits_with_128_plus_the_signal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, signum: int
) -> None:
    run = tmp_path / "run"
    signal_at_iteration(monkeypatch, signum, iteration=3)
    before = signal.getsignal(signum)
    code = run_main(*fit_args(run, "--data.total_env_steps=5000"))
    out = capsys.readouterr().out
    assert code == 128 + signum, out[-2000:]
    steps = ckpt_env_steps(run)  # a complete checkpoint, written at the end of the signalled iteration
    assert 200 < steps < 5000
    line = next(ln for ln in out.splitlines() if "stopped by" in ln)
    assert signal.Signals(signum).name in line and f"after {steps} env steps" in line
    resume = shlex.split(line.split("Resume with: ", 1)[1])
    assert resume[:3] == ["python", "-m", "lightning_meta_rl"]
    assert resume[-4:] == ["--run_dir", str(run), "--ckpt_path", "last"]
    assert signal.getsignal(signum) == before  # the process's handlers are given back
    assert not list(run.rglob("*.tmp"))


def test_the_resume_command_it_prints_continues_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    signal_at_iteration(monkeypatch, signal.SIGTERM, iteration=2)
    assert run_main(*fit_args(run, "--data.total_env_steps=2500")) == 128 + signal.SIGTERM
    assert ckpt_env_steps(run) < 2500
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "Resume with: " in ln)
    monkeypatch.undo()
    assert run_main(*shlex.split(line.split("Resume with: ", 1)[1])[3:]) == 0
    assert ckpt_env_steps(run) >= 2500


def test_a_second_signal_during_the_save_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    signal_at_iteration(monkeypatch, signal.SIGTERM, iteration=3)
    original = EnvStepCheckpoint.save

    def save(self: EnvStepCheckpoint, trainer) -> None:
        if trainer.should_stop:  # the save that the SIGTERM asked for
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the checkpoint is being written
        original(self, trainer)

    monkeypatch.setattr(EnvStepCheckpoint, "save", save)
    code = run_main(*fit_args(run, "--data.total_env_steps=5000"))
    assert code == 128 + signal.SIGTERM  # the first signal decides
    assert ckpt_env_steps(run) < 5000 and not list(run.rglob("*.tmp"))


def test_slurm_requeue_handler_runs_after_the_checkpoint_at_a_boundary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning's auto-requeue installs a SIGUSR1 handler (save, ``scontrol requeue``) under SLURM; it must
    still run, once, after the run's own checkpoint is written."""
    run = tmp_path / "run"
    calls: list[bool] = []

    def requeue(signum: int, frame) -> None:
        calls.append((run / "checkpoints" / "last.ckpt").is_file())

    previous = signal.signal(signal.SIGUSR1, requeue)
    try:
        signal_at_iteration(monkeypatch, signal.SIGUSR1, iteration=3)
        assert run_main(*fit_args(run, "--data.total_env_steps=5000")) == 128 + signal.SIGUSR1
        assert calls == [True]
        assert signal.getsignal(signal.SIGUSR1) is requeue
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_sigterm_to_a_subprocess_fit_exits_143_with_a_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    log = tmp_path / "log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lightning_meta_rl", *fit_args(run, "--data.total_env_steps=100000")],
            cwd=ROOT,
            env=subprocess_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while "run directory:" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert code == 143, text[-3000:]
    assert "stopped by SIGTERM" in text and "--ckpt_path last" in text and "Traceback" not in text
    assert ckpt_env_steps(run) > 0


# ----------------------------------------------------------------------------- 2. requeue is idempotent
def test_resuming_a_finished_run_changes_nothing_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    fit(run)
    capsys.readouterr()
    before = files_of(run)
    assert run_main(*fit_args(run, "--ckpt_path", "last")) == 0
    assert "already complete" in capsys.readouterr().out
    assert files_of(run) == before
    # a larger budget still extends it
    assert run_main(*fit_args(run, "--ckpt_path", "last", "--data.total_env_steps=1200")) == 0
    assert ckpt_env_steps(run) >= 1200


# ----------------------------------------------------------------------------- 3. one run per directory
def test_a_directory_in_use_is_refused_and_free_again_when_its_holder_dies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from lightning_meta_rl.rundir import RunLock; lock = RunLock({str(run)!r}); lock.acquire(); "
            "print('locked', flush=True); import time; time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert run_main(*fit_args(run, "--ckpt_path", "last")) == 2
        err = capsys.readouterr().err
        assert "in use by a running fit" in err and f"pid {holder.pid}" in err
        assert run.is_dir() and sorted(p.name for p in run.iterdir()) == [".lock"]  # not removed, not written
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    lock = RunLock(str(run))
    lock.acquire()  # the OS let go of the killed holder's lock at once
    lock.release()


def test_two_fits_started_together_into_one_directory_one_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [sys.executable, "-m", "lightning_meta_rl", *fit_args(run, "--trainer.callbacks=[]")]
    procs = [
        subprocess.Popen(
            args, cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=240) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], results
    refused = next(err for (_, err), p in zip(results, procs, strict=True) if p.returncode == 2)
    assert "in use by a running fit" in refused or "not empty" in refused
    _, rows = read_metrics(run)
    assert [r["env_steps"] for r in rows] == sorted({r["env_steps"] for r in rows}, key=int)  # one run's rows


# ----------------------------------------------------------------------------- 4. failures to start, environments that raise
def test_a_run_dir_under_a_file_is_one_paragraph_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("x")
    assert run_main(*fit_args(tmp_path / "afile" / "run")) == 2
    err = capsys.readouterr().err
    assert "cannot be created or written" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # no W&B run, no directory


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_run_dir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        assert run_main(*fit_args(parent / "run")) == 2
        assert "cannot be created or written" in capsys.readouterr().err
    finally:
        parent.chmod(0o700)


RAISES_ID = "LmrlTestRaises-v0"
RAISES_RESET_ID = "LmrlTestRaisesOnReset-v0"
RAISE_AT = 1500  # an instance's 1500th step raises: several iterations in, after the first checkpoint


class RaisingEnv(gym.Env):
    def __init__(self, on_reset: bool = False) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self.action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
        self.on_reset, self.steps = on_reset, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if self.on_reset:
            raise ConnectionError("simulator socket closed")
        return np.zeros(3, np.float32), {}

    def step(self, action):
        self.steps += 1
        if self.steps >= RAISE_AT:
            raise RuntimeError("sensor cable unplugged")
        return np.zeros(3, np.float32), 0.0, False, False, {}


for _id, _kwargs in ((RAISES_ID, {}), (RAISES_RESET_ID, {"on_reset": True})):
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=RaisingEnv, kwargs=_kwargs, max_episode_steps=200)


def test_an_environment_that_raises_is_named_and_the_checkpoint_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    # no callbacks: the video callback cannot render this test environment (no render_mode), and says so
    assert (
        run_main(*fit_args(run, f"--data.env_id={RAISES_ID}", "--data.total_env_steps=5000", "--trainer.callbacks=[]"))
        == 2
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"'{RAISES_ID}'" in err and "RuntimeError in step()" in err and f"on step {RAISE_AT} " in err
    assert "sensor cable unplugged" in err
    assert 0 < ckpt_env_steps(run) < 5000  # the last checkpoint is intact


def test_an_environment_that_raises_on_reset_and_the_traceback_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # gymnasium's checker resets at start-up, so the failure is refused before training: the message still names it
    monkeypatch.setattr(sys, "argv", ["lightning_meta_rl"])
    assert run_main(*fit_args(tmp_path / "run", f"--data.env_id={RAISES_RESET_ID}", "--traceback")) == 2
    err = capsys.readouterr().err
    assert "simulator socket closed" in err and "Traceback" in err


# 5. one training, one W&B run: tests/test_wandb.py (W&B's process-wide settings are reset there)


# ----------------------------------------------------------------------------- 7. the smaller items
def test_ckpt_path_last_without_run_dir_asks_for_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main("validate", "--config", SMOKE, "--ckpt_path", "last") == 2
    err = capsys.readouterr().err
    assert "None" not in err and "--run_dir" in err
    assert not (tmp_path / "runs").exists()


def test_an_empty_unknown_config_section_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  teacherr: {}\ndata:\n  env_kwargs: {}\n")  # env_kwargs is a real (empty) setting
    assert run_main(*fit_args(tmp_path / "run", "--config", str(typo))) == 2
    err = capsys.readouterr().err
    assert "model.teacherr" in err and "env_kwargs" not in err
    assert not (tmp_path / "run").exists()


HUGE_ID = "LmrlTestHugeActions-v0"
if HUGE_ID not in gym.registry:
    gym.register(
        id=HUGE_ID,
        entry_point="test_cluster:_huge_env",
        max_episode_steps=50,
    )


def _huge_env() -> gym.Env:
    env = RaisingEnv()
    env.action_space = gym.spaces.Box(-1e6, 1e6, (1,), np.float32)
    return env


def test_action_bounds_that_make_the_noise_meaningless_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(*fit_args(tmp_path / "run", f"--data.env_id={HUGE_ID}")) == 2
    err = capsys.readouterr().err
    assert "RescaleAction" in err and "1e+06" in err


def _config(env_id: str) -> Namespace:
    return Namespace(
        run_dir=None, data=Namespace(env_id=env_id), model=Namespace(teacher=Namespace(kind="meta")), seed_everything=0
    )


def test_run_dir_names_are_safe_and_evaluations_are_told_apart(tmp_path: Path) -> None:
    fit_dir = RunDir().choose(_config("my_pkg.envs:MyEnv-v0"), "fit")
    test_dir = RunDir().choose(_config("Pendulum-v1"), "test")
    clear_run_dir_env()
    assert ":" not in fit_dir and os.path.basename(fit_dir).startswith("my_pkg.envs_MyEnv-v0_meta_seed0_")
    assert os.path.basename(test_dir).startswith("test_Pendulum-v1_")


def test_metrics_csv_counts_are_integers(tmp_path: Path) -> None:
    fit(tmp_path / "run", "--trainer.callbacks=[]")
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["env_steps"].isdigit() and r["iteration"].isdigit() for r in rows)


# ----------------------------------------------------------------------------- 6. from Python
def test_python_fit_refuses_a_directory_holding_an_earlier_run(tmp_path: Path) -> None:
    from lightning_meta_rl.errors import UserError

    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"an earlier run's checkpoint")
    import lightning as L

    from lightning_meta_rl import RolloutDataModule

    L.seed_everything(0)
    data = RolloutDataModule(env_id="Pendulum-v1", total_env_steps=300, warmup_steps=100, eval_every=200)
    model = MetaRLModule(data.obs_dim, data.act_dim, data.action_low, data.action_high)
    trainer = L.Trainer(
        max_epochs=-1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[EnvStepCheckpoint()],
    )
    with pytest.raises(UserError, match="earlier run"):
        trainer.fit(model, datamodule=data)
    assert ckpt.read_bytes() == b"an earlier run's checkpoint" and not (tmp_path / "metrics.csv").exists()


def test_python_fit_without_a_seed_says_it_cannot_be_repeated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import lightning as L

    from lightning_meta_rl import RolloutDataModule

    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    data = RolloutDataModule(env_id="Pendulum-v1", total_env_steps=300, warmup_steps=100, eval_every=200)
    model = MetaRLModule(data.obs_dim, data.act_dim, data.action_low, data.action_high)
    trainer = L.Trainer(max_epochs=-1, logger=False, enable_progress_bar=False, default_root_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="seed_everything"):
        trainer.fit(model, datamodule=data)
    assert torch.isfinite(next(model.parameters())).all()


# ----------------------------------------------------------------------------- 7. training metrics, locally
def train_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "train_metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_every_logged_training_metric_is_also_written_locally(tmp_path: Path) -> None:
    """With W&B off (the tests' mode), the losses, meta-reward and teacher statistics are still readable from
    <run_dir>/train_metrics.csv, one row per metric and logged iteration, with the value the loggers got."""
    run = tmp_path / "run"
    c = fit(run, "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false", "--trainer.callbacks=[]")
    rows = train_rows(run)
    metrics = {r["metric"] for r in rows}
    assert {"student/critic_loss", "student/actor_loss", "meta/reward", "teacher/loss", "teacher/sigma"} <= metrics
    iterations = sorted({int(r["iteration"]) for r in rows})
    assert iterations == list(range(1, c.model.iteration + 1))  # every iteration, at log_every_n_steps=1
    last = {r["metric"]: float(r["value"]) for r in rows if int(r["iteration"]) == c.model.iteration}
    assert last["teacher/steps"] == c.model.teacher_steps
    assert all(r["value"] not in ("nan", "") for r in rows)  # a metric not measured has no row


def test_a_resumed_run_keeps_its_training_metrics_up_to_the_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    signal_at_iteration(monkeypatch, signal.SIGTERM, iteration=3)
    args = fit_args(run, "--data.total_env_steps=2500", "--trainer.log_every_n_steps=1", "--trainer.callbacks=[]")
    assert run_main(*args) == 128 + signal.SIGTERM
    monkeypatch.undo()
    saved = int(read_checkpoint(str(run / "checkpoints" / "last.ckpt"))["meta_rl"]["iteration"])
    (run / "train_metrics.csv").open("a").write(f"{saved + 5},0,student/critic_loss,1.0\n")  # rows past it
    assert (
        run_main(
            *fit_args(
                run,
                "--data.total_env_steps=2500",
                "--trainer.log_every_n_steps=1",
                "--trainer.callbacks=[]",
                "--ckpt_path",
                "last",
            )
        )
        == 0
    )
    iterations = [int(r["iteration"]) for r in train_rows(run) if r["metric"] == "student/critic_loss"]
    assert iterations == sorted(set(iterations)) and iterations[-1] > saved  # no row twice, none left over
