"""How data is generated: one interface, two kinds of implementation.

Fixed noise around the student (the DDPG baseline: Gaussian, Ornstein-Uhlenbeck) and learned teachers
trained by the meta-policy gradient (``meta``, ``meta_state``, ``meta_variance``). Each maps an
observation and the current student to an :class:`~lightning_meta_rl.rollout.Action`; learned ones
also give log pi_e of the actions they took.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from lightning_meta_rl.config import TeacherConfig
from lightning_meta_rl.learner import make_adam
from lightning_meta_rl.losses import teacher_loss
from lightning_meta_rl.networks import ActionScale, Actor, GaussianHead, Student
from lightning_meta_rl.rollout import Action
from lightning_meta_rl.types import Rollout

KINDS = ("meta", "meta_state", "meta_variance", "gaussian", "ou")


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

    def act(self, obs: torch.Tensor, student: Student, generator: torch.Generator) -> Action:
        # The arithmetic runs in numpy on the host: the collector needs the actions there anyway, and for a
        # handful of numbers numpy's per-call cost is about half of torch's. The operations and their order
        # are torch's (noise * sigma * half_range + mu, then clamp), so for float32 and float64 actors the
        # actions are bit-identical to torch's; half-precision outputs are computed in float32.
        mean_t = student.actor(obs).detach()
        if mean_t.dtype not in (torch.float32, torch.float64):
            mean_t = mean_t.float()
        mean = mean_t.cpu().numpy()
        raw = torch.randn(mean.shape, generator=generator).numpy().astype(mean.dtype, copy=False)
        bounds = self.scale.host
        raw *= mean.dtype.type(self.sigma)
        raw *= bounds.half_range
        raw += mean
        return Action(torch.from_numpy(raw), torch.from_numpy(np.minimum(np.maximum(raw, bounds.low), bounds.high)))


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


class LearnedTeacher(Exploration):
    """pi_e(a | s) = N(mean(context), Sigma); what ``context`` is distinguishes the three variants."""

    learned = True
    scaled_features = False  # True where refresh_features measures something (meta_state)

    def __init__(self, scale: ActionScale, head: GaussianHead) -> None:
        super().__init__(scale)
        self.head = head

    def context(self, obs: torch.Tensor, student: Student) -> torch.Tensor:
        raise NotImplementedError

    def act(self, obs: torch.Tensor, student: Student, generator: torch.Generator) -> Action:
        ctx = self.context(obs, student)
        raw = self.head.sample(ctx, generator)
        return Action(raw, self.scale.clip(raw), ctx)

    def log_prob(self, context: torch.Tensor, raw_action: torch.Tensor) -> torch.Tensor:
        return self.head.log_prob(context, raw_action)

    def meta_loss(
        self, segments: list[Rollout], advantages: list[float], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The meta-policy gradient's loss over K D0 segments: segment k's mean log pi_e(a|s) weighted by its
        advantage, averaged over segments (slides eq. 2). Returns it with the log-probabilities and contexts."""
        context = torch.cat([s.context for s in segments if s.context is not None]).to(device)
        log_prob = self.log_prob(context, torch.cat([s.raw_action for s in segments]).to(device))
        per_segment = torch.split(log_prob, [len(s) for s in segments])
        loss = torch.stack([teacher_loss(lp, a) for lp, a in zip(per_segment, advantages, strict=True)]).mean()
        return loss, log_prob, context

    def make_optimizer(self, lr: float, log_std_lr: float) -> torch.optim.Adam:
        """Adam over the teacher's parameters; the log-std gets its own learning rate where it differs."""
        params = list(self.parameters())
        log_std = self.head.log_std
        if not any(p is log_std for p in params) or log_std_lr == lr:
            return make_adam(params, lr)  # one group: the faithful teacher's optimizer
        rest = [p for p in params if p is not log_std]
        groups: list[dict[str, object]] = [{"params": rest}] if rest else []
        groups.append({"params": [log_std], "lr": log_std_lr})
        return make_adam(groups, lr)

    def refresh_features(self, obs: torch.Tensor, student: Student) -> None:
        """Called at the end of every iteration with recent (normalized) states and the student that will
        act in the next D0: ``meta_state`` measures the scale of its Q feature here; the other variants have
        no feature to scale."""

    def diagnostics(self, context: torch.Tensor) -> dict[str, float]:
        """How the teacher acts now, on the given contexts (logged after every teacher step)."""
        return {
            "teacher/log_std": float(self.head.log_std.detach().mean()),
            "teacher/mean_spread": self.mean_spread(context),
            "teacher/sigma": self.sigma(),
        }

    @torch.no_grad()
    def mean_spread(self, context: torch.Tensor) -> float:
        """Std across the given states of the teacher's mean action, in half action ranges, averaged over
        action dimensions (about 0 for a teacher that acts the same whatever the state)."""
        mean = self.head.mean(context) / self.scale.half_range
        return float(mean.std(dim=0, correction=0).mean()) if mean.shape[0] > 1 else math.nan

    @torch.no_grad()
    def sigma(self) -> float:
        """The teacher's std in half action ranges, averaged over action dimensions."""
        return float(self.head.log_std.exp().mean())


class MetaTeacher(LearnedTeacher):
    """``meta``: N(f(s; theta_e), Sigma), f an MLP independent of the student."""

    def __init__(
        self,
        obs_dim: int,
        scale: ActionScale,
        sigma: float,
        learn_std: bool,
        hidden: Sequence[int],
        layer_norm: bool,
    ) -> None:
        width = self.context_width(obs_dim, scale.low.numel())
        super().__init__(scale, GaussianHead(width, scale, sigma, learn_std, hidden, layer_norm))

    @staticmethod
    def context_width(obs_dim: int, act_dim: int) -> int:
        return obs_dim

    def context(self, obs: torch.Tensor, student: Student) -> torch.Tensor:
        return obs


class MetaStateTeacher(MetaTeacher):
    """``meta_state``: f sees [s, Q(s, mu(s)), mu(s)] with the student's features detached.

    The features are scaled like the normalized observation: mu(s) lies in [-1, 1] (the action box mapped
    onto it: centred and divided by half the range) and Q is standardized, (Q - mean) / std, clipped to
    +-Q_CLIP. Raw Q (-50 to -220 on Pendulum) would swamp the first LayerNorm of f and leave the teacher's
    mean almost the same in every state.

    The Q statistics are those of the current student on recent states: ``refresh_features`` measures them
    at the end of each iteration, when the student is final for the next D0, so they follow the critic as
    it learns (statistics kept over the whole run lag behind a Q that drifts from 0 to -200 and leave an
    offset that shrinks f's spread much as raw Q does). The context stored in D0 is already scaled, and the
    statistics do not change between D0 and the teacher step, so log pi_e recomputed from the stored
    context is the log-probability of the actions f actually produced.
    """

    Q_CLIP = 5.0
    scaled_features = True
    # plain floats, not buffers: saved per rank with the module's other counters (ranks see other states);
    # these class values are the start, refresh_features sets the instance's own
    q_mean: float = 0.0
    q_std: float = 1.0

    @staticmethod
    def context_width(obs_dim: int, act_dim: int) -> int:
        return obs_dim + 1 + act_dim

    def context(self, obs: torch.Tensor, student: Student) -> torch.Tensor:
        with torch.no_grad():
            mu = student.actor(obs)
            q = ((student.critic(obs, mu) - self.q_mean) / self.q_std).clamp(-self.Q_CLIP, self.Q_CLIP)
        return torch.cat([obs, q.unsqueeze(-1), self.scale.inverse(mu)], dim=-1)

    @torch.no_grad()
    def refresh_features(self, obs: torch.Tensor, student: Student) -> None:
        if obs.shape[0] < 2:
            return
        q = student.critic(obs, student.actor(obs)).double()
        self.q_mean, self.q_std = float(q.mean()), float(q.std(correction=0)) + 1e-6

    def extra_state(self) -> Any:
        return {"q_mean": self.q_mean, "q_std": self.q_std}

    def load_extra_state(self, state: Any) -> None:
        if state is not None:
            self.q_mean, self.q_std = float(state["q_mean"]), float(state["q_std"])


class MetaVarianceTeacher(LearnedTeacher):
    """``meta_variance``: N(mu(s; theta_student), Sigma(theta_e)); only the state-independent log-std learns."""

    def __init__(self, scale: ActionScale, sigma: float) -> None:
        super().__init__(scale, GaussianHead(scale.low.numel(), scale, sigma, learn_std=True, hidden=None))

    def context(self, obs: torch.Tensor, student: Student) -> torch.Tensor:
        with torch.no_grad():
            return student.actor(obs)


def build_exploration(cfg: TeacherConfig, obs_dim: int, scale: ActionScale, layer_norm: bool) -> Exploration:
    """The exploration ``cfg.kind`` names (one of KINDS), with ``cfg``'s settings."""
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
    raise ValueError(f"unknown exploration kind '{kind}'; choose one of {', '.join(KINDS)}")


class ExplorationPolicy:
    """Adapts an Exploration + the live student to the Collector's Policy protocol."""

    def __init__(self, exploration: Exploration, student: Student, generator: torch.Generator) -> None:
        self.exploration, self.student, self.generator = exploration, student, generator
        device = student.actor.scale.low.device  # looked up once per rollout, not once per step
        self.device = None if device.type == "cpu" else device  # observations arrive on the host

    def act(self, obs: torch.Tensor) -> Action:
        return self.exploration.act(obs if self.device is None else obs.to(self.device), self.student, self.generator)

    def reset(self, index: int) -> None:
        self.exploration.reset(index)


class DeterministicPolicy:
    """The student's (or a look-ahead copy's) mu(s), no noise."""

    def __init__(self, actor: nn.Module) -> None:
        self.actor = actor

    def act(self, obs: torch.Tensor) -> Action:
        a = self.actor(obs.to(next(self.actor.parameters()).device))
        return Action(a, a)

    def reset(self, index: int) -> None:
        pass


class UniformPolicy:
    """Uniformly random actions in the bounds: the warm-up of both arms."""

    def __init__(self, scale: ActionScale, generator: torch.Generator) -> None:
        self.scale, self.generator = scale, generator

    def act(self, obs: torch.Tensor) -> Action:
        u = torch.rand((obs.shape[0], self.scale.low.numel()), generator=self.generator) * 2 - 1
        a = self.scale(u.to(self.scale.low.device))
        return Action(a, a)

    def reset(self, index: int) -> None:
        pass


@torch.no_grad()
def action_gap(d0: Rollout, actor: Actor, normalize: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """Mean distance between the exploratory actions of D0 and the student's mu(s) on the same states, in
    units of half the action range (0 = no exploration)."""
    device = actor.scale.low.device
    mu = actor(normalize(d0.obs).to(device)).cpu()
    return float(((d0.raw_action - mu) / actor.scale.half_range.cpu()).norm(dim=-1).mean())
