"""Collector over a tiny env with asymmetric bounds: termination vs time-limit truncation, real final
observations, episodes continuing across calls, what the replay buffer stores, executed actions in bounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DRIFT_HIGH, DRIFT_ID, DRIFT_LIMIT, DRIFT_LOW, ConstantPolicy

from lightning_meta_rl.buffer import ReplayBuffer
from lightning_meta_rl.envs import EnvRunner, probe
from lightning_meta_rl.exploration import GaussianNoise
from lightning_meta_rl.networks import ActionScale, Student
from lightning_meta_rl.policies import ExplorationPolicy
from lightning_meta_rl.rollout import Collector
from lightning_meta_rl.teachers import MetaTeacher

PUSH = [0.4, 0.25]  # x: 0.4, 0.8, 1.2 -> terminates on the 3rd step
STAY = [0.0, 0.0]  # x stays 0 -> truncated by the time limit after DRIFT_LIMIT steps


@pytest.fixture
def collector() -> Collector:
    return Collector([EnvRunner(DRIFT_ID, None, seed=0)], normalize=lambda x: x)


def test_probe_reports_asymmetric_bounds_and_limit() -> None:
    spec = probe(DRIFT_ID)
    assert (spec.obs_dim, spec.act_dim, spec.max_episode_steps) == (2, 2, DRIFT_LIMIT)
    assert spec.action_low == DRIFT_LOW.tolist() and spec.action_high == DRIFT_HIGH.tolist()


def test_termination_is_flagged_and_keeps_final_observation(collector: Collector) -> None:
    r = collector.steps(ConstantPolicy(PUSH), 4)
    assert r.terminated.tolist() == [0.0, 0.0, 1.0, 0.0]
    assert r.truncated.tolist() == [0.0, 0.0, 0.0, 0.0]
    np.testing.assert_allclose(r.next_obs[2].numpy(), [1.2, 3.0], rtol=1e-6)  # the real terminal state
    np.testing.assert_allclose(r.obs[3].numpy(), [0.0, 0.0])  # then a fresh episode
    assert r.episode_returns == pytest.approx([-(0.4 + 0.8 + 1.2)])


def test_truncation_is_not_termination(collector: Collector) -> None:
    r = collector.steps(ConstantPolicy(STAY), DRIFT_LIMIT + 2)
    assert r.terminated.sum().item() == 0.0
    assert r.truncated.tolist() == [0.0] * (DRIFT_LIMIT - 1) + [1.0, 0.0, 0.0]
    np.testing.assert_allclose(r.next_obs[DRIFT_LIMIT - 1].numpy(), [0.0, DRIFT_LIMIT])  # not a reset obs
    np.testing.assert_allclose(r.obs[DRIFT_LIMIT].numpy(), [0.0, 0.0])


def test_episodes_continue_across_steps_calls(collector: Collector) -> None:
    policy = ConstantPolicy(STAY)
    first = collector.steps(policy, 3)
    second = collector.steps(policy, 4)
    assert policy.resets == 2  # one at the very start, one after the truncation; none at the call boundary
    torch.testing.assert_close(second.obs[0], first.next_obs[-1])
    assert second.obs[0, 1].item() == 3.0  # 4th step of the same episode
    assert second.truncated.tolist() == [0.0, 1.0, 0.0, 0.0]  # time limit at the episode's 5th step


def test_episodes_mode_runs_whole_episodes(collector: Collector) -> None:
    collector.steps(ConstantPolicy(STAY), 2)  # an episode in progress is abandoned by episodes()
    r = collector.episodes(ConstantPolicy(STAY), 2)
    assert len(r) == 2 * DRIFT_LIMIT
    assert len(r.episode_returns) == 2
    assert r.truncated.tolist() == ([0.0] * (DRIFT_LIMIT - 1) + [1.0]) * 2


def test_replay_buffer_stores_terminated_not_truncated(collector: Collector) -> None:
    push = collector.steps(ConstantPolicy(PUSH), 3)  # ends terminated
    stay = collector.steps(ConstantPolicy(STAY), DRIFT_LIMIT)  # ends truncated
    buf = ReplayBuffer(100, obs_dim=2, act_dim=2)
    buf.add(push)
    buf.add(stay)
    assert buf.terminated[: len(buf)].tolist() == [0.0, 0.0, 1.0] + [0.0] * DRIFT_LIMIT
    assert stay.truncated[-1].item() == 1.0
    torch.testing.assert_close(buf.next_obs[len(buf) - 1], torch.tensor([0.0, float(DRIFT_LIMIT)]))


def noisy_policies(scale: ActionScale):
    torch.manual_seed(0)
    student = Student(2, scale, [16, 16], True)
    g = torch.Generator().manual_seed(0)
    yield ExplorationPolicy(GaussianNoise(scale, sigma=1.5), student, g)
    yield ExplorationPolicy(
        MetaTeacher(2, scale, sigma=1.5, learn_std=False, hidden=[16], layer_norm=False), student, g
    )


def test_noisy_actions_are_clipped_into_asymmetric_bounds(collector: Collector) -> None:
    scale = ActionScale(DRIFT_LOW.tolist(), DRIFT_HIGH.tolist())
    low, high = torch.from_numpy(DRIFT_LOW), torch.from_numpy(DRIFT_HIGH)
    for policy in noisy_policies(scale):
        r = collector.steps(policy, 200)
        assert bool(((r.raw_action < low) | (r.raw_action > high)).any()), "the noise never left the box"
        assert bool((r.action >= low).all()) and bool((r.action <= high).all())
        torch.testing.assert_close(r.action, torch.maximum(torch.minimum(r.raw_action, high), low))
        if policy.exploration.learned:  # the teacher's input is kept for log pi_e
            assert r.context is not None and r.context.shape == (200, 2)
            torch.testing.assert_close(r.context, r.obs)  # meta's context is the (here unnormalized) obs
        # collected under inference mode, but handed out as ordinary tensors (the teacher's loss backprops)
        fields = [r.obs, r.action, r.raw_action, r.reward, r.next_obs, r.terminated, r.truncated, r.context]
        assert not any(t.is_inference() for t in fields if t is not None)
    received = np.stack(collector.runners[0].env.unwrapped.received)
    assert received.shape == (400, 2)
    assert (received >= DRIFT_LOW).all() and (received <= DRIFT_HIGH).all()  # what the env really got


def test_several_environments_step_together_and_keep_their_own_episodes() -> None:
    runners = [EnvRunner(DRIFT_ID, None, seed=i) for i in range(3)]
    collector = Collector(runners, normalize=lambda x: x)
    policy = ConstantPolicy([0.1, 0.2])  # no episode ends within these 4 steps per env
    r = collector.steps(policy, 7)  # rounded up to a whole number of steps of every environment
    assert len(r) == 9
    for i, runner in enumerate(runners):
        assert runner.steps_taken == 3
        own = r.obs[i::3]  # transitions interleave env 0, 1, 2, 0, ...
        torch.testing.assert_close(own[1:], r.next_obs[i::3][:-1])  # each env's stream is contiguous
    assert policy.resets == 3  # one episode start per environment
    second = collector.steps(policy, 3)
    torch.testing.assert_close(second.obs, r.next_obs[-3:])  # every episode continues across calls
