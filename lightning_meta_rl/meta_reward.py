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

import torch
from torch import nn


@torch.no_grad()
def critic_improvement(critic: nn.Module, actor: nn.Module, lookahead_actor: nn.Module, obs: torch.Tensor) -> float:
    """mean_s Q(s, mu'(s)) - Q(s, mu(s)) under ``critic`` on normalized states ``obs`` [N, obs_dim]."""
    return float((critic(obs, lookahead_actor(obs)) - critic(obs, actor(obs))).mean())
