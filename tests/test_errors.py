"""User errors end in one clean paragraph on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DICT_ID, IMAGE_ID, NAN_AFTER, NAN_OBS_ID, NAN_REWARD_ID, SMOKE, TINY, clear_run_dir_env

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
