"""How data is generated: one interface, two kinds of implementation.

Fixed exploration around the student (the DDPG arm: Gaussian, Ornstein-Uhlenbeck and pink action noise,
parameter-space noise) and learned teachers trained by the meta-policy gradient (``meta``, ``meta_state``,
``meta_variance``). Each maps an observation and the current student to an
:class:`~lightning_meta_rl.rollout.Action`; learned ones also give log pi_e of the actions they took.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from lightning_meta_rl.config import TeacherConfig
from lightning_meta_rl.networks import ActionScale, Actor, Student
from lightning_meta_rl.rollout import Action
from lightning_meta_rl.types import Rollout

KINDS = ("meta", "meta_state", "meta_variance", "gaussian", "ou", "pink", "param")


class Exploration(nn.Module):
    """Base class: ``act`` samples an exploratory action; learned subclasses implement ``log_prob``."""

    learned = False

    def __init__(self, scale: ActionScale) -> None:
        super().__init__()
        self.scale = scale

    def act(self, obs: torch.Tensor, student: Student, generator: torch.Generator) -> Action:
        raise NotImplementedError

    def log_prob(self, context: torch.Tensor, raw_action: torch.Tensor) -> torch.Tensor:
        """log pi_e(raw_action | context) summed over action dims. [T, C], [T, act] -> [T]."""
        raise TypeError(f"{type(self).__name__} is fixed noise and has no learnable log-probability")

    def reset(self, index: int) -> None:
        """Environment ``index`` starts an episode."""

    def extra_state(self) -> Any:
        """State outside the parameters that a resumed run needs (saved per rank; None: none)."""
        return None

    def load_extra_state(self, state: Any) -> None:
        pass


class GaussianNoise(Exploration):
    """a = clip(mu(s) + sigma * half_range * N(0, I)): the DDPG baseline's default noise."""

    def __init__(self, scale: ActionScale, sigma: float) -> None:
        super().__init__(scale)
        self.sigma = sigma

    # The arithmetic runs in numpy on the host: the collector needs the actions there anyway, and for a handful
    # of numbers numpy's per-call cost is about half of torch's. The operations and their order are torch's
    # (noise * sigma * half_range + mu, then clamp), so for float32 and float64 actors the actions are
    # bit-identical to torch's; half-precision outputs are computed in float32.
    def act(self, obs: torch.Tensor, student: Student, generator: torch.Generator) -> Action:
        mean = _host(student.actor(obs))
        raw, executed = self._perturb(mean, torch.randn(mean.shape, generator=generator).numpy())
        return Action(torch.from_numpy(raw), torch.from_numpy(executed))

    def act_members(self, mu: torch.Tensor, generators: list[torch.Generator]) -> list[Action]:
        """Several members' actions at once (a population's): ``mu`` ``[M, E, act]``, member m's noise drawn
        from ``generators[m]``; the same draws and arithmetic, element by element, as ``act`` member by member."""
        mean = _host(mu)
        raw, executed = self._perturb(
            mean, np.stack([torch.randn(mean.shape[1:], generator=g).numpy() for g in generators])
        )
        return [Action(torch.from_numpy(raw[m]), torch.from_numpy(executed[m])) for m in range(len(generators))]

    def _perturb(self, mean: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw (mu + scaled noise, computed in ``noise``'s memory) and executed (clipped) actions."""
        raw = noise.astype(mean.dtype, copy=False)
        bounds = self.scale.host
        raw *= mean.dtype.type(self.sigma)
        raw *= bounds.half_range
        raw += mean
        return raw, np.minimum(np.maximum(raw, bounds.low), bounds.high)


def _host(mu: torch.Tensor) -> np.ndarray:
    """mu(s) as a numpy array on the host (half precision as float32)."""
    mean = mu.detach()
    return (mean if mean.dtype in (torch.float32, torch.float64) else mean.float()).cpu().numpy()


class OUNoise(Exploration):
    """Ornstein-Uhlenbeck noise around mu(s) (dx = -theta x dt + sigma sqrt(dt) dW), reset every episode."""

    def __init__(self, scale: ActionScale, sigma: float, theta: float = 0.15, dt: float = 1e-2) -> None:
        super().__init__(scale)
        self.sigma, self.theta, self.dt = sigma, theta, dt
        self.state: torch.Tensor | None = None

    def reset(self, index: int) -> None:
        if self.state is not None:
            self.state = self.state.clone()  # not in place: the state may come from the collector's inference mode
            self.state[index] = 0.0

    def extra_state(self) -> Any:
        return self.state

    def load_extra_state(self, state: Any) -> None:
        self.state = state

    def act(self, obs: torch.Tensor, student: Student, generator: torch.Generator) -> Action:
        mean = student.actor(obs)
        if self.state is None or self.state.shape != mean.shape:
            self.state = torch.zeros(mean.shape)
        dw = torch.randn(mean.shape, generator=generator) * math.sqrt(self.dt)
        self.state = self.state - self.theta * self.state * self.dt + self.sigma * dw
        raw = mean + self.state.to(mean) * self.scale.half_range
        return Action(raw, self.scale.clip(raw))


def build_exploration(cfg: TeacherConfig, obs_dim: int, scale: ActionScale, layer_norm: bool) -> Exploration:
    """The exploration ``cfg.kind`` names (one of KINDS), with ``cfg``'s settings."""
    # imported here: those modules build on Exploration, defined above
    from lightning_meta_rl.noise import ParamNoise, PinkNoise
    from lightning_meta_rl.teachers import MetaStateTeacher, MetaTeacher, MetaVarianceTeacher

    kind, sigma, learn_std, hidden = cfg.kind, cfg.sigma, cfg.learn_std, cfg.hidden
    if kind == "meta":
        return MetaTeacher(obs_dim, scale, sigma, learn_std, hidden, layer_norm)
    if kind == "meta_state":
        return MetaStateTeacher(obs_dim, scale, sigma, learn_std, hidden, layer_norm)
    if kind == "meta_variance":
        return MetaVarianceTeacher(scale, sigma)
    if kind == "gaussian":
        return GaussianNoise(scale, sigma)
    if kind == "ou":
        return OUNoise(scale, sigma, theta=cfg.ou_theta)
    if kind == "pink":
        return PinkNoise(scale, sigma, cfg.pink_horizon)
    if kind == "param":
        return ParamNoise(scale, sigma, cfg.param_adapt, cfg.param_interval)
    raise ValueError(f"unknown exploration kind '{kind}'; choose one of {', '.join(KINDS)}")


@torch.no_grad()
def action_gap(d0: Rollout, actor: Actor, normalize: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """Mean distance between the exploratory actions of D0 and the student's mu(s) on the same states, in
    units of half the action range (0 = no exploration)."""
    device = actor.scale.low.device
    mu = actor(normalize(d0.obs).to(device)).cpu()
    return float(((d0.raw_action - mu) / actor.scale.half_range.cpu()).norm(dim=-1).mean())
