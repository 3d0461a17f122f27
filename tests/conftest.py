"""Shared helpers: tiny test environments (registered with gymnasium), rollout builders, CLI runners.

Every test runs in its own temporary working directory with W&B disabled and no inherited run directory.
"""

from __future__ import annotations

import contextlib
import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from lightning_meta_rl.cli import RUN_DIR_ENV, cli
from lightning_meta_rl.rollout import Action
from lightning_meta_rl.types import Rollout

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SMOKE = str(CONF / "smoke.yaml")

# Small, fast settings for in-process fits (Pendulum-v1 via conf/smoke.yaml).
TINY = [
    "--model.student.hidden=[16,16]",
    "--model.teacher.hidden=[16]",
    "--model.meta.d0_steps=100",
    "--model.meta.lookahead_updates=5",
    "--data.warmup_steps=200",
    "--data.total_env_steps=800",
    "--data.eval_every=400",
    "--trainer.enable_model_summary=false",
]


# ----------------------------------------------------------------------------- test environments
DRIFT_ID = "LmrlTestDrift-v0"
DRIFT_LOW = np.array([-1.0, 0.0], dtype=np.float32)
DRIFT_HIGH = np.array([3.0, 0.5], dtype=np.float32)
DRIFT_LIMIT = 5  # max_episode_steps (time-limit truncation)
DRIFT_THRESHOLD = 1.0  # the episode terminates once x >= this


class DriftEnv(gym.Env):
    """obs = [x, t]; x += action[0] each step; terminates when x >= 1. Asymmetric action bounds.

    Records every action it receives in ``received`` (to check what the collector executed).
    """

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Box(DRIFT_LOW, DRIFT_HIGH, dtype=np.float32)
        self.x, self.t = 0.0, 0
        self.received: list[np.ndarray] = []

    def _obs(self) -> np.ndarray:
        return np.array([self.x, self.t], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = 0.0, 0
        return self._obs(), {}

    def step(self, action):
        action = np.asarray(action, dtype=np.float32)
        self.received.append(action.copy())
        self.x += float(action[0])
        self.t += 1
        return self._obs(), -abs(self.x), self.x >= DRIFT_THRESHOLD, False, {}


NAN_OBS_ID = "LmrlTestNanObs-v0"
NAN_REWARD_ID = "LmrlTestNanReward-v0"
NAN_AFTER = 250  # the instance's 250th step returns NaN


class NanEnv(gym.Env):
    """A pendulum-sized toy whose observation (or reward) becomes NaN at its NAN_AFTER-th step."""

    def __init__(self, where: str = "obs") -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self.action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
        self.where = where
        self.steps = 0  # over the instance's lifetime, across resets
        self.state = np.zeros(3, dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return self.state.copy(), {}

    def step(self, action):
        self.steps += 1
        self.state = np.clip(0.9 * self.state + 0.1 * float(action[0]), -1, 1).astype(np.float32)
        obs, reward = self.state.copy(), -float(np.sum(self.state**2))
        if self.steps >= NAN_AFTER:
            if self.where == "obs":
                obs[:] = np.nan
            else:
                reward = float("nan")
        return obs, reward, False, False, {}


IMAGE_ID = "LmrlTestImageObs-v0"
DICT_ID = "LmrlTestDictObs-v0"


class _SpaceOnlyEnv(gym.Env):
    """Never stepped: the trainer must reject it from its spaces alone."""

    def __init__(self, observation_space: gym.Space) -> None:
        self.observation_space = observation_space
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def _image_env() -> gym.Env:
    return _SpaceOnlyEnv(gym.spaces.Box(0, 255, (8, 8, 3), np.uint8))


def _dict_env() -> gym.Env:
    return _SpaceOnlyEnv(gym.spaces.Dict({"pos": gym.spaces.Box(-1.0, 1.0, (2,), np.float32)}))


def _register(env_id: str, entry_point, **kwargs) -> None:
    if env_id not in gym.registry:
        gym.register(id=env_id, entry_point=entry_point, **kwargs)


_register(DRIFT_ID, DriftEnv, max_episode_steps=DRIFT_LIMIT)
_register(NAN_OBS_ID, lambda: NanEnv("obs"), max_episode_steps=200)
_register(NAN_REWARD_ID, lambda: NanEnv("reward"), max_episode_steps=200)
_register(IMAGE_ID, _image_env)
_register(DICT_ID, _dict_env)


# ----------------------------------------------------------------------------- isolation
@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Own working directory, W&B disabled, no run directory inherited from an earlier CLI call, and
    denormals back to IEEE after the test (the CLI flushes them, a process-wide flag)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    # setenv first so that teardown removes what the CLI writes into os.environ during the test
    monkeypatch.setenv(RUN_DIR_ENV, "")
    monkeypatch.delenv(RUN_DIR_ENV)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr(sys, "argv", ["lightning_meta_rl"])  # the CLI must not see pytest's arguments
    yield
    torch.set_flush_denormal(False)


def finish_wandb() -> None:
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def clear_run_dir_env() -> None:
    os.environ.pop(RUN_DIR_ENV, None)


def fit(run_dir: Path, *overrides: str, config: str = SMOKE):
    """``fit`` in-process on a small budget; returns the CLI object (model, datamodule, trainer)."""
    try:
        return cli(["fit", "--config", config, "--run_dir", str(run_dir), *TINY, *overrides])
    finally:
        finish_wandb()
        clear_run_dir_env()


def read_metrics(run_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


# ----------------------------------------------------------------------------- rollouts and policies
def make_rollout(n: int, obs_dim: int = 2, act_dim: int = 1, start: int = 0) -> Rollout:
    """A rollout whose step i carries the value start + i in every field (easy to trace in a buffer)."""
    v = torch.arange(start, start + n, dtype=torch.float32)
    return Rollout(
        obs=v[:, None].repeat(1, obs_dim),
        action=v[:, None].repeat(1, act_dim),
        raw_action=v[:, None].repeat(1, act_dim),
        reward=v.clone(),
        next_obs=(v[:, None] + 0.5).repeat(1, obs_dim),
        terminated=(v % 2 == 0).float(),
        truncated=torch.zeros(n),
    )


class ConstantPolicy:
    """Always the same action (raw = executed); counts episode resets."""

    def __init__(self, action) -> None:
        self.action = torch.as_tensor(action, dtype=torch.float32).reshape(1, -1)
        self.resets = 0

    def act(self, obs: torch.Tensor) -> Action:
        a = self.action.expand(obs.shape[0], -1).clone()
        return Action(a, a.clone())

    def reset(self, index: int) -> None:
        self.resets += 1


def params_snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# ----------------------------------------------------------------------------- helpers for the slower end-to-end tests
@contextlib.contextmanager
def isolated_env(path: Path) -> Iterator[pytest.MonkeyPatch]:
    """What the autouse ``_isolated`` fixture does, for module-scoped fixtures (they run before it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(path)
        mp.setenv("WANDB_MODE", "disabled")
        mp.setenv(RUN_DIR_ENV, "")
        mp.delenv(RUN_DIR_ENV)
        mp.setenv("WANDB_SILENT", "true")
        mp.setattr(sys, "argv", ["lightning_meta_rl"])
        yield mp


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run in-process fits with ``n`` intra-op threads (tiny networks gain nothing from more; busy CI cores lose)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for ``python -m lightning_meta_rl`` subprocesses: W&B off, one thread per process, no
    inherited run directory."""
    env = {k: v for k, v in os.environ.items() if k != RUN_DIR_ENV}
    env.update({"WANDB_MODE": "disabled", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1", **extra})
    return env


def run_module(*args: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m lightning_meta_rl ARGS`` from the repository root (so ``conf/...`` resolves)."""
    return subprocess.run(
        [sys.executable, "-m", "lightning_meta_rl", *args],
        cwd=ROOT,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_ddp_fit(run_dir: Path, *overrides: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``fit`` of conf/smoke.yaml with two gloo CPU ranks and tests/ddp_probe.py's DDPProbe callback."""
    return run_module(
        "fit",
        "--config",
        "conf/smoke.yaml",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp_find_unused_parameters_true",
        "--trainer.enable_progress_bar=false",
        "--trainer.callbacks+=ddp_probe.DDPProbe",
        f"--run_dir={run_dir}",
        *overrides,
        timeout=timeout,
        WANDB_MODE="disabled",
        MASTER_ADDR="127.0.0.1",
        GLOO_SOCKET_IFNAME="lo",
        PYTHONPATH=str(ROOT / "tests"),
    )
