"""Actor, critic and teacher networks, built from plain integers and bounds (no gymnasium here).

The student's networks can hold M members at once (``Student.stacked``, ``Student.stack``): their layers
with parameters take their member form (members.py) and every input is ``[M, B, ...]``; the Actor's and
Critic's forward are the same code for one student, a look-ahead ensemble or a population.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple, cast

import numpy as np
import torch
from torch import nn

from lightning_meta_rl.members import (
    PLAIN_FORM,
    MemberLinear,
    copy_members_,
    layers_of,
    stack_modules,
    to_member,
    to_plain,
)


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, layer_norm: bool) -> nn.Sequential:
    """Linear -> [LayerNorm] -> ReLU for each hidden width, then a linear output layer."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if layer_norm:
            layers.append(nn.LayerNorm(h))
        layers.append(nn.ReLU())
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class HostBounds(NamedTuple):
    """An ActionScale's bounds as float32 numpy arrays, for code that computes actions on the host."""

    low: np.ndarray
    high: np.ndarray
    half_range: np.ndarray


class ActionScale(nn.Module):
    """Affine map between [-1, 1]^d and the box [low, high] (bounds may be asymmetric)."""

    low: torch.Tensor
    high: torch.Tensor
    half_range: torch.Tensor

    def __init__(self, low: Sequence[float], high: Sequence[float]) -> None:
        super().__init__()
        lo = torch.as_tensor(low, dtype=torch.float32)
        hi = torch.as_tensor(high, dtype=torch.float32)
        if lo.shape != hi.shape or lo.ndim != 1:
            raise ValueError(f"action bounds must be two flat lists of equal length, got {low} and {high}")
        if not bool(torch.all(hi > lo)):
            raise ValueError(f"every action upper bound must exceed its lower bound, got {low} and {high}")
        self.register_buffer("low", lo)
        self.register_buffer("high", hi)
        # (high - low) / 2, used on every action: kept rather than recomputed (not saved; follows .to())
        self.register_buffer("half_range", (hi - lo) / 2, persistent=False)
        self.host = _host_bounds(lo, hi)
        self.register_load_state_dict_post_hook(_refresh_half_range)

    def forward(self, unit: torch.Tensor) -> torch.Tensor:
        """[..., d] in [-1, 1] -> [..., d] in [low, high]."""
        return self.low + (unit + 1.0) * self.half_range

    def inverse(self, action: torch.Tensor) -> torch.Tensor:
        """[..., d] in [low, high] -> [..., d] in [-1, 1]."""
        return (action - self.low) / self.half_range - 1.0

    def clip(self, action: torch.Tensor) -> torch.Tensor:
        return torch.clamp(action, self.low, self.high)


def _refresh_half_range(scale: ActionScale, incompatible_keys: object) -> None:
    """After load_state_dict: the kept half range and host bounds follow the loaded bounds (a module-level
    function, so that the module still pickles)."""
    scale.half_range = (scale.high - scale.low) / 2
    scale.host = _host_bounds(scale.low, scale.high)


def _host_bounds(low: torch.Tensor, high: torch.Tensor) -> HostBounds:
    lo, hi = low.detach().cpu().float(), high.detach().cpu().float()
    return HostBounds(lo.numpy().copy(), hi.numpy().copy(), ((hi - lo) / 2).numpy())


class Actor(nn.Module):
    """Deterministic policy mu(s): MLP with tanh output scaled to the action bounds. [B, obs] -> [B, act]."""

    def __init__(self, obs_dim: int, scale: ActionScale, hidden: Sequence[int], layer_norm: bool) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, scale.low.numel(), layer_norm)
        self.scale = scale

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.scale(torch.tanh(self.net(obs)))


class Critic(nn.Module):
    """Q(s, a); the action joins at the second layer, as in OpenAI baselines' DDPG. -> [B]."""

    def __init__(self, obs_dim: int, scale: ActionScale, hidden: Sequence[int], layer_norm: bool) -> None:
        super().__init__()
        if len(hidden) < 2:
            raise ValueError(f"the critic needs at least two hidden layers, got {list(hidden)}")
        act_dim = scale.low.numel()
        self.first = mlp(obs_dim, [], hidden[0], layer_norm=False)
        self.first_norm: nn.Module = nn.LayerNorm(hidden[0]) if layer_norm else nn.Identity()
        self.rest = mlp(hidden[0] + act_dim, hidden[1:], 1, layer_norm)
        self.scale = scale

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.first_norm(self.first(obs)))
        a = self.scale.inverse(action)  # critic sees actions in [-1, 1] whatever the env's units
        return self.rest(torch.cat([h, a], dim=-1)).squeeze(-1)

    def weight_matrices(self) -> list[torch.Tensor]:
        """Hidden-layer weight matrices (output layer excluded), the ones the L2 penalty applies to."""
        params = dict(self.named_parameters())
        return [params[name] for name in self.l2_names()]

    def l2_names(self) -> list[str]:
        """The names (as in ``named_parameters``) of the weight matrices the L2 penalty applies to."""
        linears = [name for name, m in self.named_modules() if isinstance(m, nn.Linear)]
        return [f"{name}.weight" for name in linears[:-1]]


class StudentParams(NamedTuple):
    """The parameters of a student's four networks (``Student.params``)."""

    actor: dict[str, nn.Parameter]
    critic: dict[str, nn.Parameter]
    actor_target: list[nn.Parameter]
    critic_target: list[nn.Parameter]


class Student(nn.Module):
    """The DDPG student: actor mu, critic Q and their target copies (targets are never trained by an optimizer)."""

    def __init__(self, obs_dim: int, scale: ActionScale, hidden: Sequence[int], layer_norm: bool) -> None:
        super().__init__()
        self.actor = Actor(obs_dim, scale, hidden, layer_norm)
        self.critic = Critic(obs_dim, scale, hidden, layer_norm)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.critic_l2_names = tuple(self.critic.l2_names())
        self._params: StudentParams | None = None
        self.params()  # filled now: a compiled update that filled it on its first call would compile twice

    def params(self) -> StudentParams:
        """The four networks' parameters, looked up once: walking the modules costs more than a small update.
        Parameters are replaced only by ``stack`` and ``member``, which build new students; in-place changes
        (``load_state_dict``, ``.to``, optimizer steps) keep these tensors."""
        params: StudentParams | None = self.__dict__.get("_params")  # (None too in a student pickled before it)
        if params is None:
            params = self._params = StudentParams(
                dict(self.actor.named_parameters()),
                dict(self.critic.named_parameters()),
                list(self.actor_target.parameters()),
                list(self.critic_target.parameters()),
            )
        return params

    @property
    def members(self) -> int | None:
        """The number of stacked members (None: an ordinary student)."""
        first = self.actor.net[0]
        return first.weight.shape[0] if isinstance(first, MemberLinear) else None

    def stacked(self, members: int) -> Student:
        """A copy holding ``members`` copies of every parameter as one tensor ``[members, ...]``. Of a stacked
        student of N members: ``members`` copies of each member, grouped by member, ``[N * members, ...]``
        (row ``n * members + i`` is a copy of member n)."""
        if self.members is None:
            return Student.stack([self] * members)
        out = copy.deepcopy(self)
        for module in out.modules():
            for name, p in list(module.named_parameters(recurse=False)):
                grouped = p.detach().repeat_interleave(members, 0)
                setattr(module, name, nn.Parameter(grouped, requires_grad=p.requires_grad))
        out._params = None
        out.params()
        return out

    @staticmethod
    def stack(students: Sequence[Student]) -> Student:
        """One student whose members are the given students (alike in shape; a seed population, or copies of
        one student): every parameter becomes ``[M, ...]``, member m's taken from ``students[m]``. Buffers (the
        action bounds) are the first student's."""
        out = cast(Student, stack_modules(students))
        out._params = None
        out.params()
        return out

    def member(self, k: int) -> Student:
        """Member k of a stacked student as an ordinary student (its own tensors)."""
        out = copy.deepcopy(self)
        for module in out.modules():
            if type(module) in PLAIN_FORM:
                module.__class__ = PLAIN_FORM[type(module)]
            for name, p in list(module.named_parameters(recurse=False)):
                own = to_plain(module, name, p.detach()[k]).clone(memory_format=torch.contiguous_format)
                setattr(module, name, nn.Parameter(own, requires_grad=p.requires_grad))
        out._params = None
        out.params()
        return out

    @torch.no_grad()
    def copy_from(self, source: Student) -> None:
        """Every parameter and buffer becomes ``source``'s (each member of a copy made by ``stacked`` takes
        the parameters it is a copy of; a stacked copy of an ordinary student takes them in its members' layout)."""
        into_members = self.members is not None and source.members is None
        for (layer, name), dst, src in zip(layers_of(source), self.parameters(), source.parameters(), strict=True):
            copy_members_(dst, to_member(layer, name, src) if into_members else src)
        for buf, src_buf in zip(self.buffers(), source.buffers(), strict=True):
            buf.copy_(src_buf)


class GaussianHead(nn.Module):
    """Gaussian N(mean, diag(std^2)) in environment units, std = exp(log_std) * half action range.

    With ``mean_net`` the mean is an MLP of the context with tanh output scaled to the bounds (teachers
    `meta` and `meta_state`); without it the context *is* the mean (teacher `meta_variance`, whose
    context is the student's action mu(s)).
    """

    def __init__(
        self,
        context_dim: int,
        scale: ActionScale,
        sigma: float,
        learn_std: bool,
        hidden: Sequence[int] | None,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        act_dim = scale.low.numel()
        self.scale = scale
        self.mean_net = None if hidden is None else mlp(context_dim, hidden, act_dim, layer_norm)
        log_std = torch.full((act_dim,), float(torch.log(torch.tensor(sigma))))
        if learn_std:
            self.log_std = nn.Parameter(log_std)
        else:
            self.register_buffer("log_std", log_std)

    def mean(self, context: torch.Tensor) -> torch.Tensor:
        if self.mean_net is None:
            return context
        return self.scale(torch.tanh(self.mean_net(context)))

    def std(self) -> torch.Tensor:
        return self.log_std.exp() * self.scale.half_range

    def sample(
        self, context: torch.Tensor, generator: torch.Generator | Sequence[torch.Generator | None] | None = None
    ) -> torch.Tensor:
        """[B, C] -> [B, act] sampled, not clipped. A head of stacked members (``members.stack_modules``): [M, B, C]
        -> [M, B, act], one generator per member: member m's noise drawn from ``generator[m]`` as member m's own
        head would draw it; a member whose generator is None draws nothing (its row is the mean)."""
        mean = self.mean(context)
        if isinstance(generator, Sequence):
            if mean.dim() != 3 or len(generator) != mean.shape[0]:
                raise ValueError(f"one generator per member of a stacked head: {len(generator)} for {list(mean.shape)}")
            shape = mean.shape[1:]
            noise = torch.stack(
                [torch.zeros(shape) if g is None else torch.randn(shape, generator=g) for g in generator]
            )
        else:
            noise = torch.randn(mean.shape, generator=generator)
        return mean + noise.to(mean.device, mean.dtype) * self.std()

    def log_prob(self, context: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """log pi_e(a | context), summed over action dimensions. -> [B]."""
        dist = torch.distributions.Normal(self.mean(context), self.std())
        return dist.log_prob(action).sum(-1)
