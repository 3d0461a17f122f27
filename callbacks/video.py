"""Videos of the student: deterministic evaluation episodes rendered headless to mp4 and W&B."""

from __future__ import annotations

import os
import warnings
from typing import Any

import lightning as L
import numpy as np
import torch

from lightning_meta_rl.datamodule import RolloutDataModule
from lightning_meta_rl.envs import make_env
from lightning_meta_rl.module import MetaRLModule


def use_headless_gl() -> None:
    """Without a display, MuJoCo renders through EGL (unless the user chose a backend with MUJOCO_GL) and
    pygame (classic control) through its dummy video driver. Gymnasium reads MUJOCO_GL when it first
    renders, so setting it here is early enough."""
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("MUJOCO_GL", "egl")
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


class EvaluationVideo(L.Callback):
    """Records ``episodes`` deterministic episodes of the student as ``<run_dir>/videos/<env_steps>.mp4``
    (and to W&B as ``video/eval``) at the first evaluation, every ``every_n_evals``-th one and the last.
    ``test`` (``python -m lightning_meta_rl test --ckpt_path ...``) records ``videos/test_<env_steps>.mp4``.

    Recording runs on an environment of its own, seeded with ``seed``: it touches none of training's
    environments or random streams, so a run trains exactly the same with or without this callback, and
    between recordings it costs nothing.

    Args:
        every_n_evals: record every this many evaluations (besides the first and the last); 0: only those two.
        episodes: episodes per video (one after the other).
        frame_stride: keep every this-many-th frame; None picks the stride that brings the environment's
            frame rate closest to ``target_fps`` (MuJoCo tasks run at 100-125 fps, so about every 4th frame).
        target_fps: the video frame rate aimed at when ``frame_stride`` is None.
        max_frames: stop an episode's recording after this many kept frames (bounds the cost of one video).
        width, height: frame size of MuJoCo environments (classic-control ones render at their own size).
        shadows: MuJoCo shadows and reflections; off by default, which makes software (EGL/OSMesa on the CPU)
            rendering about 5x faster.
        seed: reset seed of the recorded episodes.
        on_test: record in ``test`` too.
    """

    def __init__(
        self,
        every_n_evals: int = 10,
        episodes: int = 1,
        frame_stride: int | None = None,
        target_fps: int = 30,
        max_frames: int = 1000,
        width: int = 256,
        height: int = 256,
        shadows: bool = False,
        seed: int = 12345,
        on_test: bool = True,
    ) -> None:
        for name, value in (("episodes", episodes), ("target_fps", target_fps), ("max_frames", max_frames)):
            if value <= 0:
                raise ValueError(f"EvaluationVideo.{name} must be positive, got {value}")
        if every_n_evals < 0:
            raise ValueError(f"EvaluationVideo.every_n_evals must be >= 0, got {every_n_evals}")
        if frame_stride is not None and frame_stride <= 0:
            raise ValueError(f"EvaluationVideo.frame_stride must be positive, got {frame_stride}")
        self.every_n_evals, self.episodes, self.frame_stride = every_n_evals, episodes, frame_stride
        self.target_fps, self.max_frames = target_fps, max_frames
        self.width, self.height, self.shadows, self.seed, self.on_test = width, height, shadows, seed, on_test
        self.paths: list[str] = []  # videos written by this callback, in order
        self._seen_evals = 0
        self._recorded_at: float | None = None  # env steps of the last evaluation recorded
        self._env: Any = None
        self._failed = False

    # ---------------------------------------------------------------- when
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # resumed from a checkpoint without this callback's state: the evaluations before it are not new
        if self._seen_evals == 0 and isinstance(pl_module, MetaRLModule):
            self._seen_evals = len(pl_module.history.rows)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not trainer.is_global_zero or not isinstance(pl_module, MetaRLModule):
            return
        rows = pl_module.history.rows
        if len(rows) == self._seen_evals:  # no evaluation in this iteration
            return
        self._seen_evals = len(rows)
        k = len(rows)  # this run's k-th evaluation (counting those before a resume)
        every = self.every_n_evals
        if k == 1 or (every > 0 and k % every == 0) or trainer.should_stop:
            self._record(trainer, pl_module, rows[-1]["env_steps"], prefix="")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the last evaluation, when the run was stopped by something that decided after this callback ran
        rows = pl_module.history.rows if isinstance(pl_module, MetaRLModule) else []
        if trainer.is_global_zero and rows and rows[-1]["env_steps"] != self._recorded_at:
            self._record(trainer, pl_module, trainer.datamodule.env_steps, prefix="")  # type: ignore[arg-type,attr-defined]
        self._close()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.on_test and trainer.is_global_zero and isinstance(pl_module, MetaRLModule):
            data = trainer.datamodule  # type: ignore[attr-defined]
            self._record(trainer, pl_module, data.env_steps, prefix="test_")
        self._close()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._close()

    # ---------------------------------------------------------------- how
    def _record(self, trainer: L.Trainer, module: MetaRLModule, env_steps: float, prefix: str) -> None:
        if self._failed:
            return
        data = trainer.datamodule  # type: ignore[attr-defined]
        path = os.path.join(trainer.default_root_dir, "videos", f"{prefix}{int(env_steps)}.mp4")
        try:
            frames, fps = self.render_episodes(module, data)
            write_mp4(path, frames, fps)
        except Exception as exc:  # a video is never worth a training run: warn once and stop recording
            self._failed = True
            warnings.warn(
                f"EvaluationVideo could not record {data.env_id} ({type(exc).__name__}: {exc}); no more videos "
                f"this run. MuJoCo tasks render headless through EGL or OSMesa (set MUJOCO_GL=egl or osmesa; "
                f"Debian packages libegl1 / libosmesa6), classic-control ones need pygame.",
                stacklevel=2,
            )
            return
        self.paths.append(path)
        self._recorded_at = env_steps
        _log_video(trainer, f"video/{prefix or 'eval'}", path, env_steps)

    @torch.no_grad()
    def render_episodes(self, module: MetaRLModule, data: RolloutDataModule) -> tuple[list[np.ndarray], float]:
        """The kept frames of ``episodes`` deterministic episodes of the student (of a population: its first
        seed's), and the video's frame rate."""
        env = self._render_env(data)
        fps = float(env.metadata.get("render_fps") or self.target_fps)
        stride = self.frame_stride or max(1, round(fps / self.target_fps))
        actor = module.student.actor
        members = getattr(data, "members", None)
        if members:  # a population (--population): its first seed, by that member's own actor and statistics
            data, actor = members[0], getattr(module, "actors")[0]  # noqa: B009 (a PopulationModule's)
        device = next(actor.parameters()).device
        frames: list[np.ndarray] = []
        for episode in range(self.episodes):
            obs, _ = env.reset(seed=self.seed + episode)
            kept, t, done = 0, 0, False
            while True:
                if t % stride == 0 and kept < self.max_frames:
                    frames.append(np.asarray(env.render()))
                    kept += 1
                if done or kept >= self.max_frames:
                    break
                x = data.normalizer(torch.as_tensor(np.asarray(obs, dtype=np.float32))[None])
                action = actor(x.to(device))[0].float().cpu().numpy()
                obs, _, terminated, truncated, _ = env.step(action)
                done, t = bool(terminated or truncated), t + 1
        return frames, fps / stride

    def _render_env(self, data: RolloutDataModule) -> Any:
        if self._env is None:
            use_headless_gl()
            kwargs = {**(data.env_kwargs or {}), "render_mode": "rgb_array"}
            try:  # MuJoCo tasks take a frame size; classic-control ones do not
                env = make_env(data.env_id, {**kwargs, "width": self.width, "height": self.height}, check=False)
            except TypeError:
                env = make_env(data.env_id, kwargs, check=False)
            env.reset(seed=self.seed)
            env.render()  # the renderer exists from the first frame on
            if not self.shadows:
                _mujoco_shadows_off(env)
            self._env = env
        return self._env

    def _close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    def state_dict(self) -> dict[str, Any]:
        return {"seen_evals": self._seen_evals, "recorded_at": self._recorded_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._seen_evals, self._recorded_at = state["seen_evals"], state["recorded_at"]


def _mujoco_shadows_off(env: Any) -> None:
    """Turn off shadows and reflections of a MuJoCo env's off-screen renderer (gymnasium has no public option
    for these scene flags); other environments are left as they are."""
    renderer = getattr(env.unwrapped, "mujoco_renderer", None)
    viewer = getattr(renderer, "viewer", None)
    scene = getattr(viewer, "scn", None)
    if scene is None:
        return
    import mujoco

    scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0


def write_mp4(path: str, frames: list[np.ndarray], fps: float) -> None:
    """H.264 mp4 through the ffmpeg binary that the imageio-ffmpeg wheel ships (written to a temporary file,
    then renamed, so a reader never sees half a video)."""
    import imageio.v2 as imageio

    if not frames:
        raise ValueError("no frames to write")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.mp4"
    h, w = frames[0].shape[:2]
    even: list[Any] = [f[: h - h % 2, : w - w % 2] for f in frames]  # yuv420p needs even sides
    try:
        imageio.mimwrite(tmp, even, fps=max(1.0, fps), codec="libx264", macro_block_size=1, quality=7)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _log_video(trainer: L.Trainer, key: str, path: str, env_steps: float) -> None:
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            try:
                import wandb

                logger.experiment.log({key: wandb.Video(path, format="mp4"), "env_steps": env_steps})
            except Exception as exc:
                warnings.warn(f"could not log {key} to W&B: {exc}", stacklevel=2)


def video_frame_count(path: str) -> int:
    """Frames in an mp4 file, decoded (for tests and users checking a recording)."""
    import imageio.v2 as imageio

    reader: Any = imageio.get_reader(path)
    try:
        return sum(1 for _ in reader)
    finally:
        reader.close()


__all__ = ["EvaluationVideo", "use_headless_gl", "video_frame_count", "write_mp4"]
