"""Collector: steps a policy in one environment for n steps or k whole episodes and returns a Rollout.

Collectors act; they never compute a loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from lightning_meta_rl.envs import EnvRunner
from lightning_meta_rl.errors import TrainingDiverged
from lightning_meta_rl.types import Rollout


class Action(NamedTuple):
    """A policy's output for a batch of one: raw (pre-clip) and executed action [1, act], teacher context."""

    raw: torch.Tensor
    executed: torch.Tensor
    context: torch.Tensor | None = None


class Policy(Protocol):
    """Anything that acts: noise around the student, a teacher, the student itself."""

    def act(self, obs: torch.Tensor) -> Action:
        """obs: [1, obs_dim], already normalized."""
        ...

    def reset(self) -> None:
        """Called at the start of every episode (temporally correlated noise restarts here)."""
        ...


class Collector:
    """Owns one environment and the episode in progress on it."""

    def __init__(self, runner: EnvRunner, normalize: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.runner = runner
        self.normalize = normalize
        self._obs: np.ndarray | None = None
        self._return = 0.0

    def state_dict(self) -> dict[str, Any]:
        obs = None if self._obs is None else torch.from_numpy(self._obs.copy())
        return {"runner": self.runner.state_dict(), "obs": obs, "return": self._return}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.runner.load_state_dict(state["runner"])
        self._obs = None if state["obs"] is None else state["obs"].numpy().copy()
        self._return = state["return"]

    def steps(self, policy: Policy, n: int) -> Rollout:
        """n steps; episodes continue across calls (the training environment's stream)."""
        return self._run(policy, max_steps=n, max_episodes=None, seed=None)

    def episodes(self, policy: Policy, k: int, seed: int | None = None) -> Rollout:
        """k whole episodes from fresh resets (the first reset uses ``seed`` if given)."""
        self._obs = None
        return self._run(policy, max_steps=None, max_episodes=k, seed=seed)

    @torch.no_grad()
    def _run(self, policy: Policy, max_steps: int | None, max_episodes: int | None, seed: int | None) -> Rollout:
        obs_l, raw_l, act_l, rew_l, next_l, term_l, trunc_l, ctx_l = [], [], [], [], [], [], [], []
        returns: list[float] = []
        steps = 0
        while (max_steps is None or steps < max_steps) and (max_episodes is None or len(returns) < max_episodes):
            if self._obs is None:
                self._obs = self.runner.reset(seed)
                seed = None
                self._return = 0.0
                policy.reset()
            obs = torch.from_numpy(self._obs)
            out = policy.act(self.normalize(obs.unsqueeze(0)))
            executed = out.executed[0]
            if not bool(torch.isfinite(executed).all()):
                raise TrainingDiverged(
                    f"The policy produced a non-finite action {executed.tolist()} on environment "
                    f"'{self.runner.env_id}': training diverged. Lower the learning rates; the last checkpoint "
                    f"written before this point is intact."
                )
            result = self.runner.step(executed.cpu().numpy())
            obs_l.append(obs)
            raw_l.append(out.raw[0])
            act_l.append(executed)
            if out.context is not None:
                ctx_l.append(out.context[0])
            rew_l.append(result.reward)
            next_obs = torch.from_numpy(result.next_obs)
            next_l.append(next_obs)
            term_l.append(result.terminated)
            trunc_l.append(result.truncated)
            self._return += result.reward
            steps += 1
            if result.terminated or result.truncated:
                returns.append(self._return)
                self._obs = None
            else:
                self._obs = result.next_obs
        return Rollout(
            obs=torch.stack(obs_l),
            action=torch.stack(act_l).cpu(),
            raw_action=torch.stack(raw_l).cpu(),
            reward=torch.tensor(rew_l, dtype=torch.float32),
            next_obs=torch.stack(next_l),
            terminated=torch.tensor(term_l, dtype=torch.float32),
            truncated=torch.tensor(trunc_l, dtype=torch.float32),
            context=torch.stack(ctx_l).cpu() if ctx_l else None,
            episode_returns=returns,
        )
