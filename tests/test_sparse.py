"""lightning_meta_rl/SparseMountainCar-v0: reward only at the goal, otherwise MountainCarContinuous."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from lightning_meta_rl.envs import probe
from lightning_meta_rl.sparse import GOAL_REWARD, SPARSE_MOUNTAIN_CAR


def test_every_step_short_of_the_goal_earns_zero_and_the_goal_earns_the_bonus() -> None:
    sparse, stock = gym.make(SPARSE_MOUNTAIN_CAR), gym.make("MountainCarContinuous-v0")
    try:
        obs, _ = sparse.reset(seed=3)
        stock_obs, _ = stock.reset(seed=3)
        np.testing.assert_array_equal(obs, stock_obs)
        for _ in range(50):  # full throttle: the stock task charges for it, the sparse one does not
            obs, reward, terminated, _, _ = sparse.step(np.array([1.0], dtype=np.float32))
            stock_obs, stock_reward, *_ = stock.step(np.array([1.0], dtype=np.float32))
            np.testing.assert_array_equal(obs, stock_obs)  # the same dynamics
            assert reward == 0.0 and stock_reward < 0.0 and not terminated
        sparse.unwrapped.state = np.array([0.449, 0.07])  # one push from the goal
        _, reward, terminated, _, _ = sparse.step(np.array([1.0], dtype=np.float32))
        assert terminated and reward == GOAL_REWARD
    finally:
        sparse.close()
        stock.close()


def test_the_task_is_usable_by_id_with_the_stock_time_limit() -> None:
    spec = probe(SPARSE_MOUNTAIN_CAR)
    assert (spec.obs_dim, spec.act_dim, spec.max_episode_steps) == (2, 1, 999)
    assert spec.action_low == pytest.approx([-1.0]) and spec.action_high == pytest.approx([1.0])
