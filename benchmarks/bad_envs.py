"""Environments the trainer must refuse or stop on, for the bad-input table (benchmarks/bad_inputs.py).

Use as ``--data.env_id=benchmarks.bad_envs:<Id>`` from the repository root.
"""

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.pendulum import PendulumEnv


class NanAfter300(PendulumEnv):
    """Pendulum whose observations turn NaN after 300 steps."""

    steps = 0

    def step(self, action):  # type: ignore[no-untyped-def]
        obs, reward, terminated, truncated, info = super().step(action)
        NanAfter300.steps += 1
        if NanAfter300.steps > 300:
            obs = np.full_like(obs, np.nan)
        return obs, reward, terminated, truncated, info


class ImageObs(gym.Env):
    """Continuous actions but 64x64 RGB observations."""

    observation_space = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


class DictObs(gym.Env):
    """Continuous actions but dict observations."""

    observation_space = gym.spaces.Dict({"pos": gym.spaces.Box(-1.0, 1.0, (2,), np.float32)})
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


gym.register("NanPendulum-v0", entry_point=NanAfter300, max_episode_steps=200)
gym.register("ImageObs-v0", entry_point=ImageObs, max_episode_steps=10)
gym.register("DictObs-v0", entry_point=DictObs, max_episode_steps=10)
