"""Pure loss functions. Each cites the equation it implements; shapes in brackets."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def td_target(reward: torch.Tensor, next_q: torch.Tensor, terminated: torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + gamma * (1 - terminated) * Q'(s', mu'(s')). [B] -> [B].

    Only true termination stops the bootstrap; a time-limit truncation is not a terminal state.
    """
    return reward + gamma * (1.0 - terminated) * next_q


def critic_loss(q: torch.Tensor, target: torch.Tensor, weights: Iterable[torch.Tensor], l2: float) -> torch.Tensor:
    """DDPG critic loss: mean (Q(s,a) - y)^2 + l2/2 * sum ||W||^2 over the given weight matrices."""
    loss = torch.mean((q - target) ** 2)
    if l2 > 0:
        loss = loss + 0.5 * l2 * sum(w.pow(2).sum() for w in weights)
    return loss


def actor_loss(q_of_policy: torch.Tensor) -> torch.Tensor:
    """DDPG actor loss: -mean Q(s, mu(s)) (deterministic policy gradient). [B] -> scalar."""
    return -q_of_policy.mean()


def teacher_loss(log_prob: torch.Tensor, meta_reward: float | torch.Tensor) -> torch.Tensor:
    """Meta-policy gradient (slides, eq. 2) as a loss: -m * mean over D0 of log pi_e(a|s). [T] -> scalar.

    Its gradient is -m * grad mean log pi_e, so a descent step moves theta_e along
    m * grad log P(D0 | pi_e): toward the actions of D0 when the meta-reward m is positive.
    """
    return -(meta_reward * log_prob).mean()


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """theta_target <- (1 - tau) * theta_target + tau * theta_source, for every parameter (buffers are not blended)."""
    t_params: list[torch.Tensor] = list(target.parameters())
    s_params: list[torch.Tensor] = list(source.parameters())
    torch._foreach_lerp_(t_params, s_params, tau)
