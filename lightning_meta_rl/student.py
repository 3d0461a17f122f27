"""The DDPG student (actor, critic, targets) and the one update function that trains it.

The look-ahead student of the meta arm is a copy of the same container trained by the same
:func:`ddpg_update`; only the backward function and the optimizers differ.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import nn

from lightning_meta_rl.losses import actor_loss, critic_loss, polyak_update, td_target
from lightning_meta_rl.networks import ActionScale, Actor, Critic
from lightning_meta_rl.types import Batch


class Optimizer(Protocol):
    """What the update needs from an optimizer: torch's and Lightning's wrappers both fit."""

    def zero_grad(self, set_to_none: bool = True) -> None: ...
    def step(self, closure: None = None) -> object: ...


class Student(nn.Module):
    """Actor mu, critic Q and their target copies (targets are never trained by an optimizer)."""

    def __init__(self, obs_dim: int, scale: ActionScale, hidden: Sequence[int], layer_norm: bool) -> None:
        super().__init__()
        self.actor = Actor(obs_dim, scale, hidden, layer_norm)
        self.critic = Critic(obs_dim, scale, hidden, layer_norm)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)


def make_adam(params: Sequence[nn.Parameter] | object, lr: float) -> torch.optim.Adam:
    """Adam, fused where torch supports it for these tensors (CPU and CUDA in recent torch)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)  # type: ignore[arg-type]
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr)  # type: ignore[arg-type]


def ddpg_update(
    student: Student,
    batch: Batch,
    actor_opt: Optimizer,
    critic_opt: Optimizer,
    *,
    gamma: float,
    tau: float,
    critic_l2: float,
    backward: Callable[[torch.Tensor], None],
) -> dict[str, torch.Tensor]:
    """One DDPG step: critic on the TD target, actor on -Q(s, mu(s)) with the critic frozen, then polyak.

    ``backward`` is ``loss.backward`` for the throw-away look-ahead copy and Lightning's
    ``manual_backward`` for the live student (so DDP averages its gradients). Returns detached metrics.
    """
    with torch.no_grad():
        next_q = student.critic_target(batch.next_obs, student.actor_target(batch.next_obs))
        target = td_target(batch.reward, next_q, batch.terminated, gamma)
    q = student.critic(batch.obs, batch.action)
    loss_q = critic_loss(q, target, student.critic.weight_matrices(), critic_l2)
    critic_opt.zero_grad()
    backward(loss_q)
    critic_opt.step()

    student.critic.requires_grad_(False)
    try:
        loss_pi = actor_loss(student.critic(batch.obs, student.actor(batch.obs)))
        actor_opt.zero_grad()
        backward(loss_pi)
        actor_opt.step()
    finally:
        student.critic.requires_grad_(True)

    polyak_update(student.actor_target, student.actor, tau)
    polyak_update(student.critic_target, student.critic, tau)
    return {"critic_loss": loss_q.detach(), "actor_loss": loss_pi.detach(), "q": q.detach().mean()}


def lookahead_copy(
    student: Student, actor_opt: torch.optim.Optimizer, critic_opt: torch.optim.Optimizer
) -> tuple[Student, torch.optim.Optimizer, torch.optim.Optimizer]:
    """A throw-away copy of the student with its own optimizers carrying the student's Adam state."""
    clone = copy.deepcopy(student)
    clone_actor_opt = make_adam(list(clone.actor.parameters()), lr=actor_opt.param_groups[0]["lr"])
    clone_critic_opt = make_adam(list(clone.critic.parameters()), lr=critic_opt.param_groups[0]["lr"])
    # state_dict maps state by parameter position, and the clone's parameters are in the same order
    # (deep copies: load_state_dict would otherwise share the moment tensors with the student's optimizers)
    clone_actor_opt.load_state_dict(copy.deepcopy(actor_opt.state_dict()))
    clone_critic_opt.load_state_dict(copy.deepcopy(critic_opt.state_dict()))
    return clone, clone_actor_opt, clone_critic_opt
