"""Pure loss functions. Each cites the equation it implements; shapes in brackets.

``...`` is an optional leading member dimension (stacked look-ahead students, a population of seeds): the
DDPG losses reduce over the batch only and return one loss per member.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from lightning_meta_rl.members import member_slices


def td_target(reward: torch.Tensor, next_q: torch.Tensor, terminated: torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + gamma * (1 - terminated) * Q'(s', mu'(s')) (Lillicrap et al. 2016, eq. 5). [..., B] -> [..., B].

    Only true termination stops the bootstrap; a time-limit truncation is not a terminal state.
    """
    return reward + gamma * (1.0 - terminated) * next_q


def critic_loss(q: torch.Tensor, target: torch.Tensor, weights: Iterable[torch.Tensor], l2: float) -> torch.Tensor:
    """DDPG critic loss (Lillicrap et al. 2016, eq. 4, with OpenAI baselines' L2 term): mean over the batch of
    (Q(s,a) - y)^2, plus l2/2 * sum ||W||^2 over the given weight matrices ([..., out, in]). [..., B] -> [...]."""
    loss = ((q - target) ** 2).mean(-1)
    if l2 > 0:
        loss = loss + 0.5 * l2 * sum(w.pow(2).sum((-2, -1)) for w in weights)
    return loss


def actor_loss(q_of_policy: torch.Tensor) -> torch.Tensor:
    """DDPG actor loss: -mean over the batch of Q(s, mu(s)) (deterministic policy gradient, Silver et al. 2014,
    eq. 6; Lillicrap et al. 2016, eq. 6). [..., B] -> [...]."""
    return -q_of_policy.mean(-1)


def teacher_loss(log_prob: torch.Tensor, meta_reward: float | torch.Tensor) -> torch.Tensor:
    """Meta-policy gradient (slides, eq. 2) as a loss: -m * mean over D0 of log pi_e(a|s). [T] -> scalar.

    Its gradient is -m * grad mean log pi_e, so a descent step moves theta_e along
    m * grad log P(D0 | pi_e): toward the actions of D0 when the meta-reward m is positive.
    """
    return -(meta_reward * log_prob).mean()


@torch.no_grad()
def polyak_update(
    target: Sequence[torch.Tensor], source: Sequence[torch.Tensor], tau: float, members: list[int] | None = None
) -> None:
    """theta_target <- (1 - tau) * theta_target + tau * theta_source, for the paired parameters of a target
    network and its source (``list(net.parameters())``; buffers are not blended); of the given members only, for
    stacked networks (None: the whole tensors).

    The one place target networks are averaged (tau = 1 copies the source; tau = 0 leaves the target)."""
    if members is not None:
        target, source = member_slices(target, members), member_slices(source, members)
    torch._foreach_lerp_(list(target), list(source), tau)
