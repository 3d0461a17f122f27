"""W&B: what an offline run stores, the automatic offline fallback without credentials, and that W&B
trouble never stops training."""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SMOKE, TINY, clear_run_dir_env, fit, read_metrics

from lightning_meta_rl import logger as logger_module
from lightning_meta_rl.cli import wandb_has_credentials

pytestmark = pytest.mark.usefixtures("one_thread")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _reset_wandb() -> None:
    """Finish any run and drop W&B's process-wide settings, which it reads from the environment once (an
    earlier in-process fit with WANDB_MODE=disabled would otherwise decide the mode of every later one)."""
    wandb = sys.modules.get("wandb")
    if wandb is None:
        return
    if getattr(wandb, "run", None) is not None:
        wandb.finish()
    wandb.teardown()


@pytest.fixture(autouse=True)
def _fresh_wandb() -> Iterator[None]:
    _reset_wandb()
    yield
    _reset_wandb()


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No API key and no ~/.netrc (HOME and NETRC point into the test's own directory)."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
    monkeypatch.delenv("WANDB_CONFIG_DIR", raising=False)
    (tmp_path / "home").mkdir()


def settled(record: Path, timeout_s: float = 20.0) -> bytes:
    """The run's record file once W&B's writer (a separate service process) has filled it. Rarely, the
    file held only its 7-byte header right after ``wandb.finish()`` returned (twice in about 40 runs of
    this test here, wandb 0.31); it is read again until the logged metrics are in it."""
    deadline = time.monotonic() + timeout_s
    data = record.read_bytes()
    while b"eval/return" not in data and time.monotonic() < deadline:
        time.sleep(0.25)
        data = record.read_bytes()
    return data


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def test_offline_run_stores_metrics_config_and_media(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    fit(run_dir, "--trainer.enable_progress_bar=false")  # finishes the W&B run

    runs = offline_runs(run_dir)
    assert len(runs) == 1, list((run_dir / "wandb").iterdir()) if (run_dir / "wandb").exists() else "no wandb/"
    records = list(runs[0].glob("run-*.wandb"))
    assert len(records) == 1
    data = settled(records[0])
    for key in (b"eval/return", b"meta/reward", b"env_steps", b"meta/reward_mean", b"teacher/entropy"):
        assert key in data, key
    assert b"seed_everything" in data  # the resolved config is stored with the run
    assert b"total_env_steps" in data

    images = runs[0] / "files" / "media" / "images"
    for name in ("visitation", "learning_curve"):
        pngs = list(images.glob(f"{name}_*.png"))
        assert len(pngs) == 1, (name, sorted(p.name for p in images.iterdir()))
        assert pngs[0].read_bytes()[:8] == PNG_MAGIC
        assert pngs[0].read_bytes() == (run_dir / f"{name}.png").read_bytes()


@pytest.mark.usefixtures("no_credentials")
def test_no_credentials_switches_to_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE")
    assert not wandb_has_credentials()
    run_dir = tmp_path / "run"
    c = fit(run_dir, "--trainer.enable_progress_bar=false", "--trainer.callbacks=[]")
    assert os.environ["WANDB_MODE"] == "offline"
    assert isinstance(c.trainer.logger, logger_module.WandbLogger)
    runs = offline_runs(run_dir)
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb"))
    _, rows = read_metrics(run_dir)
    assert rows


@pytest.mark.usefixtures("no_credentials")
def test_wandb_has_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / "home" / ".netrc"
    assert not wandb_has_credentials()  # no key, no netrc file
    netrc.write_text("machine github.com\n  login someone\n  password secret\n")
    assert not wandb_has_credentials()  # a netrc without W&B
    netrc.write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    assert wandb_has_credentials()
    netrc.unlink()
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123456789abcdef01234567")
    assert wandb_has_credentials()
    monkeypatch.setenv("WANDB_API_KEY", "")
    assert not wandb_has_credentials()


@pytest.mark.usefixtures("no_credentials")
def test_netrc_in_home_is_found_without_the_netrc_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NETRC")
    assert not wandb_has_credentials()
    (tmp_path / "home" / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    assert wandb_has_credentials()


def test_failing_wandb_calls_never_stop_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(logger_module.WandbLogger, "_warned", False)
    parent = logger_module._LightningWandbLogger

    def broken(*args, **kwargs):
        raise RuntimeError("W&B is down")

    for method in ("log_metrics", "log_image", "log_hyperparams"):
        monkeypatch.setattr(parent, method, broken)
    run_dir = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c = fit(run_dir, "--trainer.enable_progress_bar=false")
    messages = [str(w.message) for w in caught]
    failed = [m for m in messages if "W&B is down" in m]
    assert failed, messages
    assert any("training continues" in m for m in failed)
    assert c.trainer.state.finished
    _, rows = read_metrics(run_dir)
    assert len(rows) >= 1 and float(rows[-1]["env_steps"]) >= 800
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "visitation.png").is_file() and (run_dir / "learning_curve.png").is_file()


def test_wandb_that_cannot_start_falls_back_to_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    monkeypatch.setenv("WANDB_MODE", "online")
    real_init = wandb.init
    modes: list[str | None] = []

    def init(*args, **kwargs):
        mode = kwargs.get("mode") or os.environ.get("WANDB_MODE")
        modes.append(mode)
        if mode != "offline":
            raise wandb.errors.CommError("no network")  # instead of trying to reach api.wandb.ai
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    run_dir = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(run_dir, "--trainer.enable_progress_bar=false", "--trainer.callbacks=[]")
    assert modes[0] == "online" and modes[-1] == "offline"
    assert any("logging offline instead" in str(w.message) for w in caught)
    assert os.environ["WANDB_MODE"] == "offline"
    assert len(offline_runs(run_dir)) == 1
    _, rows = read_metrics(run_dir)
    assert rows


def test_metrics_not_measured_are_left_out_of_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NaN marks a metric an iteration did not measure; W&B gets the key left out instead."""
    sent: list[dict[str, float]] = []
    monkeypatch.setattr(logger_module._LightningWandbLogger, "log_metrics", lambda self, m, step=None: sent.append(m))
    logger = logger_module.WandbLogger(save_dir=str(tmp_path), offline=True)
    logger.log_metrics({"env_steps": 200.0, "student/critic_loss": float("nan"), "meta/reward": -3.5}, step=1)
    assert sent == [{"env_steps": 200.0, "meta/reward": -3.5}]


def test_a_run_stopped_by_an_error_is_marked_failed_in_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    from lightning_meta_rl.cli import main

    monkeypatch.setenv("WANDB_MODE", "offline")
    real_finish, codes = wandb.finish, []

    def finish(exit_code: int | None = None, **kwargs) -> None:
        codes.append(exit_code)
        real_finish(exit_code=exit_code, **kwargs)

    monkeypatch.setattr(wandb, "finish", finish)
    args = ["fit", "--config", SMOKE, "--run_dir", str(tmp_path / "run"), *TINY]
    try:
        with pytest.raises(SystemExit) as exc:  # diverges: a clean error, exit status 2
            main([*args, "--model.student.critic_lr=1e30", "--model.student.actor_lr=1e30"])
    finally:
        clear_run_dir_env()
    assert exc.value.code == 2 and codes == [2]


def test_a_resumed_run_continues_its_wandb_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One training, one W&B run: the resumed fit logs to the run id it started with (issue 26)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    fit(run_dir, "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false")
    # W&B names a run's folder by the second it started and the run id: two fits of the same id in one
    # second would share a folder and hide the second one from this check.
    time.sleep(1.1)
    fit(run_dir, "--trainer.callbacks=[]", "--ckpt_path", "last", "--data.total_env_steps=1200")
    runs = offline_runs(run_dir)
    assert len(runs) == 2 and len({p.name.rsplit("-", 1)[1] for p in runs}) == 1, runs


def test_each_seed_of_a_population_has_its_own_wandb_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--population: beside the population's run, one W&B run per seed (its evaluations and final score, in
    seed_<s>/wandb, id = the population's id + "-seed<s>"); a resumed population continues the same runs."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    quiet = ["--trainer.callbacks=[]", "--trainer.enable_progress_bar=false", "--model.teacher.kind=gaussian"]
    fit(run_dir, *quiet, "--population=2")
    (main,) = offline_runs(run_dir)
    main_id = main.name.rsplit("-", 1)[1]
    for seed in (0, 1):
        (member,) = offline_runs(run_dir / f"seed_{seed}")
        assert member.name.endswith(f"-{main_id}-seed{seed}"), member.name
        data = settled(next(member.glob("run-*.wandb")))
        assert b"final_score" in data and b"seed_everything" in data
    time.sleep(1.1)  # see test_a_resumed_run_continues_its_wandb_run
    fit(run_dir, *quiet, "--population=2", "--ckpt_path", "last", "--data.total_env_steps=1200")
    ids = {p.name.split("-", 3)[3] for p in offline_runs(run_dir / "seed_1")}
    assert ids == {f"{main_id}-seed1"} and len(offline_runs(run_dir / "seed_1")) == 2
