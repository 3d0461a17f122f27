"""Typed containers for transitions. ``T`` is a number of steps, ``B`` a batch size."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol

import torch

if TYPE_CHECKING:
    from lightning_meta_rl.buffer import RunningNorm
    from lightning_meta_rl.rollout import Policy


class Batch(NamedTuple):
    """A minibatch for a DDPG update; observations already normalized.

    obs, next_obs: [B, obs_dim]; action: [B, act_dim] in environment units;
    reward, terminated: [B] (terminated is 1.0 where the episode truly ended, 0.0 otherwise).
    """

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor

    @staticmethod
    def stack(batches: list[Batch]) -> Batch:
        """M minibatches as one whose fields are ``[M, B, ...]`` (member m's minibatch at index m)."""
        return Batch(*(torch.stack(fields) for fields in zip(*batches, strict=True)))


@dataclass
class Rollout:
    """Steps collected by one policy, in the order they happened (raw, unnormalized observations).

    obs, next_obs: [T, obs_dim]; action: [T, act_dim] executed (clipped) action in environment units;
    raw_action: [T, act_dim] the sampled action before clipping (what log pi_e is evaluated on);
    context: [T, C] the teacher's input at collection time (None for policies that are not learned);
    reward, terminated, truncated: [T]; episode_returns: returns of the episodes that ended in it.
    """

    obs: torch.Tensor
    action: torch.Tensor
    raw_action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    context: torch.Tensor | None = None
    episode_returns: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.reward.shape[0])

    def environment(self, index: int, num_envs: int) -> Rollout:
        """One environment's steps of a rollout collected from ``num_envs`` environments stepped together
        (the collector stores each step's environments in order: step t of environment i is row
        t * num_envs + i). Its ``episode_returns`` stay with the whole rollout."""
        rows = slice(index, None, num_envs)
        return Rollout(
            obs=self.obs[rows],
            action=self.action[rows],
            raw_action=self.raw_action[rows],
            reward=self.reward[rows],
            next_obs=self.next_obs[rows],
            terminated=self.terminated[rows],
            truncated=self.truncated[rows],
            context=None if self.context is None else self.context[rows],
        )

    @staticmethod
    def concat(rollouts: list[Rollout]) -> Rollout:
        """Several rollouts as one, in order (the K D1s of one iteration)."""
        if len(rollouts) == 1:
            return rollouts[0]
        contexts = [r.context for r in rollouts]
        return Rollout(
            obs=torch.cat([r.obs for r in rollouts]),
            action=torch.cat([r.action for r in rollouts]),
            raw_action=torch.cat([r.raw_action for r in rollouts]),
            reward=torch.cat([r.reward for r in rollouts]),
            next_obs=torch.cat([r.next_obs for r in rollouts]),
            terminated=torch.cat([r.terminated for r in rollouts]),
            truncated=torch.cat([r.truncated for r in rollouts]),
            context=None if any(c is None for c in contexts) else torch.cat(contexts),  # type: ignore[arg-type]
            episode_returns=[x for r in rollouts for x in r.episode_returns],
        )

    @property
    def mean_return(self) -> float:
        """Mean return of the episodes that ended inside this rollout (NaN if none did)."""
        if not self.episode_returns:
            return float("nan")
        return float(sum(self.episode_returns) / len(self.episode_returns))


@dataclass
class IterationRecord:
    """What one training iteration produced, kept on the module for callbacks to read.

    start_steps / env_steps: the environment-step count when the iteration started / ended.

    d0: the exploration data (teacher or noise); d1: the look-ahead student's episodes (Meta arm);
    student: the R(pi) rollout of the updated student (Meta arm); evaluation: the reporting evaluation
    episodes if one ran this iteration; meta_reward: R(pi') - R(pi) (Meta arm).
    """

    start_steps: int
    env_steps: int
    d0: Rollout
    d1: Rollout | None = None
    student: Rollout | None = None
    evaluation: Rollout | None = None
    meta_reward: float | None = None


class RolloutEngine(Protocol):
    """What the module needs from the data side (the DataModule): rollouts counted against the budget, the
    replay buffer, the observation statistics and the random streams it owns."""

    env_steps: int
    eval_every: int
    warmup_steps: int
    buffer_size: int
    num_envs: int
    noise_rng: torch.Generator
    normalizer: RunningNorm

    @property
    def budget_spent(self) -> bool: ...
    def collect_steps(self, policy: Policy, n: int) -> Rollout: ...
    def collect_episodes(self, policy: Policy, k: int, seed: int | None = None) -> Rollout: ...
    def pairing_seed(self) -> int: ...
    def evaluate(self, policy: Policy) -> Rollout: ...
    def add(self, rollout: Rollout) -> None: ...
    def sample(self, batch_size: int, device: torch.device | None = None) -> Batch: ...
    def sample_rollout(self, rollout: Rollout, batch_size: int, device: torch.device | None = None) -> Batch: ...
    def restore_pending_state(self) -> None: ...
