"""User errors end in one clean paragraph on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DICT_ID, IMAGE_ID, NAN_AFTER, NAN_OBS_ID, NAN_REWARD_ID, SMOKE, TINY, clear_run_dir_env, fit

from lightning_meta_rl.cli import RUN_DIR_ENV, main

PREFIX = "lightning-meta-rl: error:"


def run_main(tmp_path: Path, capsys: pytest.CaptureFixture[str], *overrides: str, run_dir: Path | None = None) -> str:
    """main(fit on the smoke config + overrides) must exit 2; returns its one-paragraph message."""
    args = ["fit", "--config", SMOKE, "--run_dir", str(run_dir or tmp_path / "run"), *TINY, *overrides]
    try:
        with pytest.raises(SystemExit) as exc:
            main(args)
    finally:
        clear_run_dir_env()
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(PREFIX)]
    assert len(lines) == 1, err
    return lines[0]


def test_unknown_env_id_names_it_and_suggests_the_right_one(tmp_path: Path, capsys) -> None:
    msg = run_main(tmp_path, capsys, "--data.env_id=Pendulm-v1")
    assert "Pendulm-v1" in msg
    assert "Pendulum-v1" in msg


def test_discrete_action_env_is_rejected(tmp_path: Path, capsys) -> None:
    msg = run_main(tmp_path, capsys, "--data.env_id=CartPole-v1")
    assert "CartPole-v1" in msg and "Discrete" in msg and "continuous" in msg


@pytest.mark.parametrize(("env_id", "what"), [(IMAGE_ID, "(8, 8, 3)"), (DICT_ID, "Dict")])
def test_image_and_dict_observations_are_rejected(tmp_path: Path, capsys, env_id: str, what: str) -> None:
    msg = run_main(tmp_path, capsys, f"--data.env_id={env_id}")
    assert env_id in msg and "observation" in msg and what in msg


def test_existing_non_empty_run_dir_is_never_overwritten(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "taken"
    run_dir.mkdir()
    (run_dir / "metrics.csv").write_text("precious\n")
    msg = run_main(tmp_path, capsys, run_dir=run_dir)
    assert str(run_dir) in msg and "already exists" in msg
    assert (run_dir / "metrics.csv").read_text() == "precious\n"
    assert sorted(p.name for p in run_dir.iterdir()) == ["metrics.csv"]


@pytest.mark.parametrize("env_id", [NAN_OBS_ID, NAN_REWARD_ID])
def test_nan_from_the_environment_stops_training_with_the_step(tmp_path: Path, capsys, env_id: str) -> None:
    msg = run_main(tmp_path, capsys, f"--data.env_id={env_id}")
    assert env_id in msg and "non-finite" in msg
    assert f"on step {NAN_AFTER} of this environment" in msg


def test_subprocess_discrete_env_exits_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != RUN_DIR_ENV}
    env["WANDB_MODE"] = "disabled"
    cmd = [sys.executable, "-m", "lightning_meta_rl", "fit", "--config", SMOKE, "--data.env_id=CartPole-v1"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "CartPole-v1" in proc.stderr and "Discrete" in proc.stderr


INVALID = {
    "actor_lr": (["--model.student.actor_lr=-1"], "actor_lr"),
    "gamma": (["--model.student.gamma=1.5"], "gamma"),
    "critic_lr_zero": (["--model.student.critic_lr=0"], "critic_lr"),
    "teacher_lr": (["--model.teacher.lr=-0.001"], "lr"),
    "sigma": (["--model.teacher.sigma=0"], "sigma"),
    "num_envs": (["--data.num_envs=0"], "num_envs"),
    "env_threads": (["--population=2", "--data.env_threads=0"], "env_threads"),
    "warmup": (["--data.warmup_steps=5000"], "warmup_steps"),
    "batch_vs_buffer": (["--model.student.batch_size=4096", "--data.buffer_size=1000"], "buffer_size"),
}


@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_hyperparameter_gives_a_clean_message(tmp_path: Path, capsys, name: str) -> None:
    overrides, field = INVALID[name]
    msg = run_main(tmp_path, capsys, *overrides)
    assert field in msg
    assert not (tmp_path / "run" / "metrics.csv").exists()  # rejected before any training


def test_diverging_losses_stop_with_a_message(tmp_path: Path, capsys) -> None:
    msg = run_main(tmp_path, capsys, "--model.student.critic_lr=1e30", "--model.student.actor_lr=1e30")
    assert "non-finite" in msg or "NaN" in msg
    assert "diverged" in msg


def test_broken_yaml_is_refused_without_traceback(tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  teacher: [kind: meta\n")
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(broken), "--run_dir", str(tmp_path / "run")])
    clear_run_dir_env()
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "Traceback" not in err
    assert "error" in err.lower() and "parsing" in err.lower()
    assert not (tmp_path / "run").exists()  # nothing written for a config that never parsed


def test_environment_without_time_limit_is_refused_with_a_remedy(tmp_path: Path, capsys) -> None:
    import gymnasium as gym
    from gymnasium.envs.classic_control.pendulum import PendulumEnv

    if "LmrlTestNoLimit-v0" not in gym.registry:
        gym.register("LmrlTestNoLimit-v0", entry_point=PendulumEnv)  # no max_episode_steps
    msg = run_main(tmp_path, capsys, "--data.env_id=LmrlTestNoLimit-v0")
    assert "no time limit" in msg and "max_episode_steps" in msg


def test_time_limit_given_through_env_kwargs_makes_it_usable() -> None:
    import gymnasium as gym
    from gymnasium.envs.classic_control.pendulum import PendulumEnv

    from lightning_meta_rl.envs import probe

    if "LmrlTestNoLimit-v0" not in gym.registry:
        gym.register("LmrlTestNoLimit-v0", entry_point=PendulumEnv)
    assert probe("LmrlTestNoLimit-v0", {"max_episode_steps": 50}).max_episode_steps == 50


def test_seed_everything_true_still_runs(tmp_path: Path) -> None:
    from lightning_meta_rl.cli import _int_seed

    assert _int_seed(7) == 7
    assert isinstance(_int_seed(True), int) and isinstance(_int_seed(None), int)


def test_environments_are_closed_when_training_stops_with_an_error(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_meta_rl.envs import EnvRunner

    closed: list[EnvRunner] = []
    real_close = EnvRunner.close

    def close(self: EnvRunner) -> None:
        closed.append(self)
        real_close(self)

    monkeypatch.setattr(EnvRunner, "close", close)
    run_main(tmp_path, capsys, "--model.student.critic_lr=1e30", "--model.student.actor_lr=1e30")
    assert len(closed) == 3  # training, student-rollout and evaluation environments, each once


# ----------------------------------------------------------------------------- checkpoints, devices, max_steps
def _nothing_written(path: Path) -> None:
    assert not path.exists(), f"{path} was left behind: {list(path.rglob('*'))}"


def test_missing_checkpoint_is_named_and_nothing_is_written(tmp_path: Path, capsys) -> None:
    msg = run_main(tmp_path, capsys, "--ckpt_path", str(tmp_path / "nothere.ckpt"))
    assert "nothere.ckpt" in msg and "does not exist" in msg
    _nothing_written(tmp_path / "run")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign"])
def test_unreadable_checkpoint_is_refused_before_anything_is_written(tmp_path: Path, capsys, damage: str) -> None:
    fit(tmp_path / "good")
    good = (tmp_path / "good" / "checkpoints" / "last.ckpt").read_bytes()
    bad = tmp_path / "bad.ckpt"
    if damage == "truncated":
        bad.write_bytes(good[: len(good) // 2])
    elif damage == "garbage":
        bad.write_text("not a checkpoint\n")
    else:
        torch.save({"weights": torch.zeros(3)}, bad)
    msg = run_main(tmp_path, capsys, "--ckpt_path", str(bad))
    assert str(bad) in msg
    assert ("not a lightning-meta-rl checkpoint" in msg) if damage == "foreign" else ("cannot be read" in msg)
    _nothing_written(tmp_path / "run")


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("--data.env_id=InvertedPendulum-v5", "environment: checkpoint 'Pendulum-v1', this run 'InvertedPendulum-v5'"),
        ("--model.student.hidden=[32,32]", "model.student.hidden: checkpoint [16, 16], this run [32, 32]"),
        ("--model.teacher.kind=meta_state", "model.teacher.kind: checkpoint meta, this run meta_state"),
        ("--model.student.layer_norm=false", "model.student.layer_norm: checkpoint True, this run False"),
        ("--data.num_envs=2", "data.num_envs: checkpoint 1, this run 2"),
        ("--data.buffer_size=5000", "data.buffer_size: checkpoint 1000000, this run 5000"),
    ],
)
def test_resuming_a_mismatched_checkpoint_names_what_differs_and_changes_nothing(
    tmp_path: Path, capsys, override: str, named: str
) -> None:
    run = tmp_path / "run"
    fit(run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and "wandb" not in p.parts}
    msg = run_main(tmp_path, capsys, "--ckpt_path", "last", override, run_dir=run)
    assert named in msg and str(run / "checkpoints" / "last.ckpt") in msg
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and "wandb" not in p.parts}
    assert after == before  # the run directory is exactly as it was, checkpoint included


def test_checkpoint_from_before_env_ids_were_stored_is_caught_by_its_sizes(tmp_path: Path, capsys) -> None:
    fit(tmp_path / "old")
    ckpt = torch.load(tmp_path / "old" / "checkpoints" / "last.ckpt", weights_only=False)
    del ckpt["RolloutDataModule"]["env_id"]  # as written by earlier versions
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    msg = run_main(tmp_path, capsys, "--ckpt_path", str(old), "--data.env_id=InvertedPendulum-v5")
    assert "observation/action sizes 3/1" in msg and "'InvertedPendulum-v5' has 4/1" in msg
    _nothing_written(tmp_path / "run")


def test_ckpt_path_last_without_a_checkpoint_starts_fresh(tmp_path: Path) -> None:
    fit(tmp_path / "run", "--ckpt_path", "last")
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_gpu_accelerator_without_a_gpu_is_refused(tmp_path: Path, capsys) -> None:
    msg = run_main(tmp_path, capsys, "--trainer.accelerator=gpu")
    assert "--trainer.accelerator=gpu" in msg and "no CUDA GPU" in msg and "accelerator=cpu" in msg
    _nothing_written(tmp_path / "run")


def test_lightning_refusing_trainer_settings_is_one_paragraph(tmp_path: Path, capsys) -> None:
    # Lightning raises MisconfigurationException or ValueError for these when the Trainer is built
    msg = run_main(tmp_path, capsys, "--trainer.devices=0")
    assert "devices='0'" in msg and "refused before the run started" in msg
    _nothing_written(tmp_path / "run")


def test_max_steps_is_refused_with_a_pointer_to_the_env_step_budget(tmp_path: Path, capsys) -> None:
    msg = run_main(tmp_path, capsys, "--trainer.max_steps=3")
    assert "optimizer steps" in msg and "--data.total_env_steps" in msg
    _nothing_written(tmp_path / "run")


def test_a_refused_start_removes_the_run_directory_it_began(tmp_path: Path) -> None:
    from lightning_meta_rl.errors import ConfigError, TrainingDiverged
    from lightning_meta_rl.rundir import RunDir

    run_dir = RunDir()

    def begun(name: str, checkpoint: bool = False) -> Path:
        d = tmp_path / name
        (d / "wandb" / "offline-run-x").mkdir(parents=True)
        (d / "config.yaml").write_text("seed_everything: 0\n")
        if checkpoint:
            (d / "checkpoints").mkdir()
            (d / "checkpoints" / "last.ckpt").write_bytes(b"x")
        run_dir.begun = str(d)
        return d

    refused = begun("refused")
    run_dir.remove_if_refused(ConfigError("bad"))
    assert not refused.exists()
    diverged = begun("diverged")
    run_dir.remove_if_refused(TrainingDiverged("nan"))
    assert (diverged / "config.yaml").exists()  # a run that trained keeps what it wrote
    kept = begun("kept", checkpoint=True)
    run_dir.remove_if_refused(ConfigError("bad"))
    assert (kept / "checkpoints" / "last.ckpt").exists()  # a checkpoint is never deleted


def test_wandb_logger_does_not_pass_the_deprecated_anonymous_setting() -> None:
    from lightning_meta_rl.logger import WandbLogger

    args = WandbLogger(project="p", offline=True, group="g").init_args
    assert args is not None and "anonymous" not in args and args["group"] == "g" and args["project"] == "p"
    assert WandbLogger(project="p", offline=True, anonymous=True).init_args["anonymous"] == "allow"  # type: ignore[index]
    assert WandbLogger(project="p", log_model=True).init_args is None  # Lightning starts that run itself


def test_a_refused_call_never_removes_the_directory_of_an_earlier_successful_run(tmp_path: Path, capsys) -> None:
    earlier = tmp_path / "earlier"
    fit(earlier, "--trainer.enable_checkpointing=false")
    assert (earlier / "metrics.csv").exists()
    run_main(tmp_path, capsys, "--trainer.max_steps=3")  # refused before it reaches its own run directory
    assert (earlier / "metrics.csv").exists() and (earlier / "config.yaml").exists()


def test_the_thread_count_is_exported_for_ddp_ranks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_meta_rl.runtime import set_torch_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "")  # restored after the test, whatever set_torch_threads writes
    monkeypatch.delenv("OMP_NUM_THREADS")
    before = torch.get_num_threads()
    try:
        assert "torch threads 1" in set_torch_threads(None)
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
        assert "torch threads 2 (--torch_threads)" in set_torch_threads(2)
        assert os.environ["OMP_NUM_THREADS"] == "2"
    finally:
        torch.set_num_threads(before)


def test_population_buffers_that_do_not_fit_the_device_are_refused_with_the_settings_to_lower(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GPU without room for the members' replay buffers (simulated: there is no GPU here) ends in a paragraph
    naming the memory needed and what to lower, not an out-of-memory traceback."""
    import lightning_meta_rl.population_data as population_data

    def no_room(*args: object, **kwargs: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 27.60 GiB")

    monkeypatch.setattr(population_data, "StackedBuffers", no_room)
    msg = run_main(tmp_path, capsys, "--population=4", "--data.buffer_size=10000000")
    assert "data.buffer_size" in msg and "--population" in msg
    assert "1.3 GiB" in msg  # 4 members x 1e7 rows x 9 floats (Pendulum: 3 + 3 observation, 1 action, 2)


def test_env_threads_without_a_population_says_what_it_needs(tmp_path: Path, capsys) -> None:
    msg = run_main(tmp_path, capsys, "--data.env_threads=2")
    assert "data.env_threads" in msg and "--population=N" in msg
