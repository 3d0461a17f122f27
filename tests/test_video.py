"""EvaluationVideo: real episodes rendered headless, written as mp4, decoded back frame by frame."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMOKE, fit, read_metrics, run_module

from callbacks.video import EvaluationVideo, video_frame_count, write_mp4
from lightning_meta_rl.datamodule import RolloutDataModule
from lightning_meta_rl.module import MetaRLModule


def _student(env_id: str) -> tuple[MetaRLModule, RolloutDataModule]:
    data = RolloutDataModule(env_id=env_id, total_env_steps=2000, warmup_steps=10)
    data.setup("fit")
    torch.manual_seed(0)
    return MetaRLModule(data.obs_dim, data.act_dim, data.action_low, data.action_high), data


def _episode_length(module: MetaRLModule, data: RolloutDataModule, seed: int) -> int:
    """Length of the student's deterministic episode from ``seed``, on an environment without rendering."""
    import gymnasium as gym

    env = gym.make(data.env_id)
    obs, _ = env.reset(seed=seed)
    t = 0
    with torch.no_grad():
        while True:
            a = module.student.actor(data.normalizer(torch.as_tensor(obs, dtype=torch.float32))[None])[0].numpy()
            obs, _, terminated, truncated, _ = env.step(a)
            t += 1
            if terminated or truncated:
                return t


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "InvertedPendulum-v5"])
def test_a_real_episode_is_rendered_and_decodes_to_its_frames(tmp_path: Path, env_id: str) -> None:
    module, data = _student(env_id)
    cb = EvaluationVideo(frame_stride=1, seed=7, width=64, height=64)
    frames, fps = cb.render_episodes(module, data)
    cb._close()
    steps = _episode_length(module, data, seed=7)
    assert len(frames) == steps + 1  # the reset frame, then one per step
    assert frames[0].ndim == 3 and frames[0].shape[2] == 3 and frames[0].dtype == np.uint8
    assert float(np.abs(frames[0].astype(float) - frames[-1].astype(float)).mean()) > 0.1  # the scene moved
    assert frames[0].std() > 1  # not a blank image
    path = tmp_path / "v.mp4"
    write_mp4(str(path), frames, fps)
    assert video_frame_count(str(path)) == steps + 1


def test_frame_stride_and_max_frames_bound_the_kept_frames() -> None:
    module, data = _student("Pendulum-v1")  # 200-step episodes: 201 frames
    frames, fps = EvaluationVideo(frame_stride=4, seed=0).render_episodes(module, data)
    assert len(frames) == 51 and fps == pytest.approx(30 / 4)
    frames, _ = EvaluationVideo(frame_stride=1, max_frames=20, episodes=2, seed=0).render_episodes(module, data)
    assert len(frames) == 40  # 20 per episode


def _video_config(tmp_path: Path, every_n_evals: int) -> str:
    conf = tmp_path / "video.yaml"
    conf.write_text(
        "trainer:\n  callbacks:\n    - class_path: callbacks.video.EvaluationVideo\n      init_args:\n"
        f"        every_n_evals: {every_n_evals}\n        max_frames: 5\n"
    )
    return str(conf)


def test_fit_records_first_every_nth_and_last_evaluation_without_changing_training(tmp_path: Path) -> None:
    budget = ["--data.total_env_steps=1400", "--data.eval_every=200", "--model.teacher.kind=gaussian"]
    with_video = fit(tmp_path / "a", *budget, "--config", _video_config(tmp_path, every_n_evals=3))
    _, rows = read_metrics(tmp_path / "a")
    steps = [int(float(r["env_steps"])) for r in rows]
    assert len(steps) >= 5
    keep = {s for k, s in enumerate(steps, start=1) if k == 1 or k % 3 == 0 or k == len(steps)}
    videos = sorted(p.name for p in (tmp_path / "a" / "videos").iterdir())
    assert videos == sorted(f"{s}.mp4" for s in keep)
    cb = next(c for c in with_video.trainer.callbacks if isinstance(c, EvaluationVideo))
    assert all(video_frame_count(p) == 5 for p in cb.paths)

    # the same run without the callback trains exactly alike: recording touches no training stream
    conf = tmp_path / "none.yaml"
    conf.write_text("trainer:\n  callbacks: []\n")
    fit(tmp_path / "b", *budget, "--config", str(conf))
    _, rows_b = read_metrics(tmp_path / "b")
    assert [r["eval/return"] for r in rows] == [r["eval/return"] for r in rows_b]
    assert not (tmp_path / "b" / "videos").exists()


def test_a_failed_recording_warns_once_and_training_goes_on(tmp_path: Path) -> None:
    cb = EvaluationVideo()
    cb.render_episodes = lambda *a: (_ for _ in ()).throw(RuntimeError("no GL"))  # type: ignore[method-assign]
    module, data = _student("Pendulum-v1")

    class _Trainer:
        datamodule = data
        default_root_dir = str(tmp_path)
        loggers: list = []  # noqa: RUF012

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cb._record(_Trainer(), module, 100, prefix="")  # type: ignore[arg-type]
        cb._record(_Trainer(), module, 200, prefix="")  # type: ignore[arg-type]
    messages = [str(w.message) for w in seen if "EvaluationVideo" in str(w.message)]
    assert len(messages) == 1 and "no GL" in messages[0] and "MUJOCO_GL" in messages[0]
    assert cb.paths == [] and not (tmp_path / "videos").exists()


def test_the_test_subcommand_records_a_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    fit(run)
    config_before = (run / "config.yaml").read_bytes()
    env_steps = int(float(read_metrics(run)[1][-1]["env_steps"]))
    out = run_module("test", "--config", SMOKE, "--ckpt_path", "last", "--run_dir", str(run))
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"Loaded model weights from the checkpoint at {run / 'checkpoints' / 'last.ckpt'}" in out.stdout + out.stderr
    video = run / "videos" / f"test_{env_steps}.mp4"
    assert video.is_file()
    assert video_frame_count(str(video)) == 50  # conf/smoke.yaml keeps 50 frames
    assert (run / "config.yaml").read_bytes() == config_before  # the run's own config is kept


def test_test_with_last_and_no_checkpoint_is_refused(tmp_path: Path) -> None:
    out = run_module("test", "--config", SMOKE, "--ckpt_path", "last", "--run_dir", str(tmp_path / "none"))
    assert out.returncode == 2
    assert "no checkpoint" in out.stderr and "Traceback" not in out.stderr
