"""Meta-reward estimators: how much better the look-ahead student pi' is than the student pi.

``return`` (the paper's, the default): R(pi') - R(pi) from deterministic rollouts (module.meta_iteration).
``critic`` (an option, after Online Meta-Critic, Zhou et al., NeurIPS 2020, which uses -Q on held-out
states as its meta-objective): the student's critic judges both policies on the same replay states,

    m = mean_{s in S} [ Q(s, mu'(s)) - Q(s, mu(s)) ],

with S drawn from the replay buffer. It needs no rollout at all, so every environment step after warm-up
is teacher data, and it has no episode-return noise: the two terms share the states and the critic, so
what varies between iterations is the policies' difference, not the start states.
"""

from __future__ import annotations

import math
import statistics

import torch
from torch import nn


@torch.no_grad()
def critic_improvement(
    critic: nn.Module, actor: nn.Module, lookahead_actor: nn.Module, obs: torch.Tensor
) -> torch.Tensor:
    """mean_s Q(s, mu'(s)) - Q(s, mu(s)) under ``critic`` on normalized states ``obs`` [..., S, obs_dim]: one
    value per member of stacked networks (``[M]`` for states ``[M, S, obs_dim]``), else a scalar."""
    return (critic(obs, lookahead_actor(obs)) - critic(obs, actor(obs))).mean(-1)


class MetaRewardStats:
    """Every running statistic of the meta-reward m, in one place (checkpointed with the module).

    - the teacher's weights: the shaped m (optional baseline and normalization by running moments with
      momentum ``stat_momentum``) with one sample, or leave-one-out advantages with K samples;
    - ``snr``: Welford's running mean over running std of the raw m over every iteration so far.
    """

    def __init__(self, baseline: bool = False, normalize: bool = False, momentum: float = 0.9) -> None:
        self.baseline, self.normalize, self.momentum = baseline, normalize, momentum
        self.mean, self.var = 0.0, 1.0  # running moments for baseline / normalize
        self.count, self.raw_mean, self.raw_m2 = 0, 0.0, 0.0  # Welford over every raw m

    def advantages(self, meta_rewards: list[float]) -> list[float]:
        """What multiplies each D0 segment's log-likelihood in the teacher's step; records each m."""
        for m in meta_rewards:
            self.count += 1
            delta = m - self.raw_mean
            self.raw_mean += delta / self.count
            self.raw_m2 += delta * (m - self.raw_mean)
        if len(meta_rewards) > 1:
            return leave_one_out(meta_rewards)
        return [self._shape(meta_rewards[0])]

    def _shape(self, m: float) -> float:
        shaped = m
        if self.baseline:
            shaped -= self.mean
        if self.normalize:
            shaped /= math.sqrt(self.var) + 1e-8
        if self.baseline or self.normalize:
            delta = m - self.mean
            self.mean += (1 - self.momentum) * delta
            self.var = self.momentum * self.var + (1 - self.momentum) * delta * delta
        return shaped

    def metrics(self, meta_rewards: list[float], advantages: list[float]) -> dict[str, float]:
        """The iteration's statistics of m: the running snr, and the shaped m (one sample) or the spread of the
        K meta-rewards, which is what the leave-one-out advantages are made of."""
        out = {"meta/snr": self.snr()}
        if len(meta_rewards) == 1:
            out["teacher/shaped_reward"] = advantages[0]
        else:
            out["meta/reward_spread"] = statistics.pstdev(meta_rewards)
        return out

    def snr(self) -> float:
        """Running mean / running std of the raw meta-reward (NaN until two values with a spread exist)."""
        if self.count < 2 or self.raw_m2 <= 0:
            return math.nan
        return self.raw_mean / math.sqrt(self.raw_m2 / (self.count - 1))

    def state_dict(self) -> dict[str, float]:
        return {
            "mean": self.mean,
            "var": self.var,
            "count": self.count,
            "raw_mean": self.raw_mean,
            "raw_m2": self.raw_m2,
        }

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.var = float(state["mean"]), float(state["var"])
        self.count, self.raw_mean, self.raw_m2 = int(state["count"]), float(state["raw_mean"]), float(state["raw_m2"])


def leave_one_out(meta_rewards: list[float]) -> list[float]:
    """m_k - mean_{j != k} m_j: each sample's meta-reward against the mean of the others (K >= 2)."""
    k = len(meta_rewards)
    if k < 2:
        raise ValueError("a leave-one-out baseline needs at least two meta-rewards")
    total = sum(meta_rewards)
    return [m - (total - m) / (k - 1) for m in meta_rewards]
