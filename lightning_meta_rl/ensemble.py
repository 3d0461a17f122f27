"""K look-ahead students trained as one batched update (``--model.meta.samples=K``).

Each member starts as a copy of the student (actor, critic, targets and the student's Adam moments) and is
trained by the same DDPG update as :func:`lightning_meta_rl.student.ddpg_update`, on minibatches of its own
D0 segment. The K copies are held as stacked tensors ``[K, ...]`` and run layer by layer with batched
matrix products (``baddbmm``), so one update costs about as many operations as a single student's, not K
times as many. (``torch.func.vmap`` over ``functional_call`` would do the same generically; in a first,
uncommitted probe it was slower than these batched products, which benchmarks/lookahead_batch.py measures.)

Adam is elementwise: one Adam over the stacked tensors, stepped on the *sum* of the members' losses, is
exactly K independent Adams (member k's loss has no gradient with respect to member j's parameters).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from lightning_meta_rl.losses import td_target
from lightning_meta_rl.networks import Actor, Critic
from lightning_meta_rl.student import Student, make_adam
from lightning_meta_rl.types import Batch

Params = dict[str, torch.Tensor]


class _Stack:
    """K copies of an Actor's or a Critic's parameters as stacked leaf tensors ``[K, ...]``.

    Calling it runs every member on its own inputs ``[K, B, ...]`` with batched matrix products, layer by
    layer as the module's own forward does (tests/test_ensemble.py holds the two to the same numbers).
    """

    def __init__(self, module: Actor | Critic, k: int, trainable: bool) -> None:
        self.template = module
        named = dict(module.named_parameters())
        self.names = list(named)
        self.params = [
            p.detach().unsqueeze(0).repeat(k, *[1] * p.dim()).requires_grad_(trainable) for p in named.values()
        ]

    def __call__(self, *inputs: torch.Tensor, detach: bool = False) -> torch.Tensor:
        p = {n: t.detach() if detach else t for n, t in zip(self.names, self.params, strict=True)}
        m = self.template
        if isinstance(m, Actor):
            (obs,) = inputs
            return m.scale(torch.tanh(_sequential(m.net, "net.", p, obs)))
        obs, action = inputs
        h = _layer(m.first_norm, "first_norm.", p, _sequential(m.first, "first.", p, obs))
        h = torch.cat([torch.relu(h), m.scale.inverse(action)], dim=-1)
        return _sequential(m.rest, "rest.", p, h).squeeze(-1)

    def member(self, k: int) -> nn.Module:
        """A plain copy of the module carrying member k's parameters (rollouts, the critic estimator)."""
        out = copy.deepcopy(self.template)
        with torch.no_grad():
            for name, t in out.named_parameters():
                t.copy_(self.params[self.names.index(name)][k])
        return out


def _sequential(seq: nn.Sequential, prefix: str, p: Params, x: torch.Tensor) -> torch.Tensor:
    for i, layer in enumerate(seq):
        x = _layer(layer, f"{prefix}{i}.", p, x)
    return x


def _layer(layer: nn.Module, name: str, p: Params, x: torch.Tensor) -> torch.Tensor:
    """One layer of our networks (Linear, LayerNorm, ReLU, Identity), member-wise with stacked parameters."""
    if isinstance(layer, nn.Linear):
        return torch.baddbmm(p[name + "bias"].unsqueeze(1), x, p[name + "weight"].transpose(1, 2))
    if isinstance(layer, nn.LayerNorm):
        x = F.layer_norm(x, layer.normalized_shape, eps=layer.eps)
        return torch.addcmul(p[name + "bias"].unsqueeze(1), x, p[name + "weight"].unsqueeze(1))
    if isinstance(layer, nn.ReLU):
        return torch.relu(x)
    if isinstance(layer, nn.Identity):
        return x
    raise TypeError(f"the batched look-ahead does not know the layer {type(layer).__name__}")


class StackedLookahead:
    """K look-ahead copies of a student, with K independent Adams carrying the student's optimizer state."""

    def __init__(
        self, student: Student, k: int, actor_opt: torch.optim.Optimizer, critic_opt: torch.optim.Optimizer
    ) -> None:
        self.k = k
        self.actor = _Stack(student.actor, k, trainable=True)
        self.critic = _Stack(student.critic, k, trainable=True)
        self.actor_target = _Stack(student.actor_target, k, trainable=False)
        self.critic_target = _Stack(student.critic_target, k, trainable=False)
        # positions of the critic's hidden weight matrices, the ones its L2 penalty applies to
        l2_ids = {id(w) for w in student.critic.weight_matrices()}
        self._l2 = [i for i, p in enumerate(student.critic.parameters()) if id(p) in l2_ids]
        self.actor_opt = _stacked_adam(self.actor.params, list(student.actor.parameters()), actor_opt, k)
        self.critic_opt = _stacked_adam(self.critic.params, list(student.critic.parameters()), critic_opt, k)

    def update(self, batch: Batch, *, gamma: float, tau: float, critic_l2: float) -> dict[str, torch.Tensor]:
        """One DDPG step of every member on its own minibatch (every field of ``batch`` is ``[K, B, ...]``)."""
        with torch.no_grad():
            next_q = self.critic_target(batch.next_obs, self.actor_target(batch.next_obs))
            target = td_target(batch.reward, next_q, batch.terminated, gamma)
        q = self.critic(batch.obs, batch.action)  # [K, B]
        loss_q = ((q - target) ** 2).mean(dim=1)  # [K]
        if critic_l2 > 0:
            weights = [self.critic.params[i] for i in self._l2]
            loss_q = loss_q + 0.5 * critic_l2 * sum(w.pow(2).flatten(1).sum(1) for w in weights)
        self.critic_opt.zero_grad()
        loss_q.sum().backward()
        self.critic_opt.step()

        # the actor's step sees the critic's new weights, detached (the critic is not trained by it)
        loss_pi = -self.critic(batch.obs, self.actor(batch.obs), detach=True).mean(dim=1)  # [K]
        self.actor_opt.zero_grad()
        loss_pi.sum().backward()
        self.actor_opt.step()

        with torch.no_grad():
            torch._foreach_lerp_(self.actor_target.params, self.actor.params, tau)
            torch._foreach_lerp_(self.critic_target.params, self.critic.params, tau)
        return {"critic_loss": loss_q.detach().mean(), "actor_loss": loss_pi.detach().mean(), "q": q.detach().mean()}

    def member_actor(self, k: int) -> Actor:
        """Member k's actor as a plain module (D1 rollouts, the critic meta-reward)."""
        return self.actor.member(k)  # type: ignore[return-value]


def _stacked_adam(
    stacked: list[torch.Tensor], originals: list[nn.Parameter], source: torch.optim.Optimizer, k: int
) -> torch.optim.Optimizer:
    """Adam over the stacked parameters with the student's hyperparameters and moments, repeated K times."""
    opt = make_adam(stacked, source.param_groups[0]["lr"])
    opt.param_groups[0].update({k: v for k, v in source.param_groups[0].items() if k != "params"})
    for p, original in zip(stacked, originals, strict=True):
        state = source.state.get(original)
        if state:
            opt.state[p] = {
                name: value.clone() if name == "step" else value.unsqueeze(0).repeat(k, *[1] * value.dim())
                for name, value in state.items()
            }
    return opt


def stack_batches(batches: list[Batch]) -> Batch:
    """K minibatches -> one Batch whose fields are ``[K, B, ...]``."""
    return Batch(*(torch.stack(fields) for fields in zip(*batches, strict=True)))


def leave_one_out(meta_rewards: list[float]) -> list[float]:
    """m_k - mean_{j != k} m_j: each sample's meta-reward against the mean of the others (K >= 2)."""
    k = len(meta_rewards)
    if k < 2:
        raise ValueError("a leave-one-out baseline needs at least two meta-rewards")
    total = sum(meta_rewards)
    return [m - (total - m) / (k - 1) for m in meta_rewards]
