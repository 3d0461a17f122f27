"""A sparse-reward task for testing exploration: ``lightning_meta_rl/SparseMountainCar-v0``.

The dynamics, observation, action space and goal are gymnasium's ``MountainCarContinuous-v0``; the reward is
100 on reaching the goal (position >= 0.45, which ends the episode) and 0 on every other step. The stock
task also charges 0.1 * a^2 per step; without that cost nothing but the goal is rewarded at all.

Why it tests exploration: the car cannot drive up the hill directly; it must swing back and forth to build
momentum, so the goal is reached only by a long run of consistent pushes. Small Gaussian noise around a
policy that has seen no reward (and uniformly random warm-up actions) almost never produces one, so until
some exploratory trajectory reaches the goal every transition has reward 0, the critic learns nothing,
and DDPG's own noise is the only way out. An exploration policy that learns to push consistently can get
there; a teacher whose meta-reward stays 0 (no look-ahead student ever reaches the goal) gets no signal.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.continuous_mountain_car import Continuous_MountainCarEnv

SPARSE_MOUNTAIN_CAR = "lightning_meta_rl/SparseMountainCar-v0"
GOAL_REWARD = 100.0


class SparseMountainCar(Continuous_MountainCarEnv):
    """MountainCarContinuous with the reward only at the goal (see the module's docstring)."""

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, _, terminated, truncated, info = super().step(action)
        return obs, GOAL_REWARD if terminated else 0.0, terminated, truncated, info


def register() -> None:
    """Register the task with gymnasium (idempotent); ``lightning_meta_rl.envs`` calls it on import."""
    if SPARSE_MOUNTAIN_CAR not in gym.registry:
        gym.register(
            id=SPARSE_MOUNTAIN_CAR,
            entry_point="lightning_meta_rl.sparse:SparseMountainCar",
            max_episode_steps=999,  # as MountainCarContinuous-v0
        )
