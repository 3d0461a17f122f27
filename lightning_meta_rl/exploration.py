"""How data is generated: one interface, two kinds of implementation.

Fixed exploration around the student (the DDPG arm: Gaussian, Ornstein-Uhlenbeck and pink action noise,
parameter-space noise) and learned teachers trained by the meta-policy gradient (``meta``, ``meta_state``,
``meta_variance``). Each maps an observation and the current student to an
:class:`~lightning_meta_rl.rollout.Action`; learned ones also give log pi_e of the actions they took.
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


class PinkNoise(Exploration):
    """a = mu(s) + sigma * half_range * x_t, x pink (1/f) noise of unit variance per environment and action
    dimension (Eberhard et al., "Pink Noise Is All You Need", ICLR 2023; their package ``pink-noise-rl``).

    Each environment has its own ``pink.PinkNoiseProcess``: a sequence of ``horizon`` steps per action
    dimension, drawn anew when its environment starts an episode (and, as the package does, when a sequence
    runs out). Each process draws from its own numpy generator, seeded from the torch generator the first
    time its environment acts, so a run is reproducible; ``extra_state`` keeps every process's sequence,
    position and generator state, so a resumed run continues the very same noise.
    """

    def __init__(self, scale: ActionScale, sigma: float, horizon: int) -> None:
        super().__init__(scale)
        # imported here, not at the top: the package's __init__ also imports stable-baselines3 when present
        from pink import PinkNoiseProcess

        self.process_class = PinkNoiseProcess
        self.sigma, self.horizon = sigma, horizon
        self.processes: list[Any] = []  # one PinkNoiseProcess per environment, made at its first step

    def _process(self, act_dim: int, horizon: int, rng: np.random.Generator) -> Any:
        return self.process_class(size=(act_dim, horizon), rng=rng)

    def sample(self, envs: int, generator: torch.Generator) -> torch.Tensor:
        """The next step of every environment's pink sequence: [envs, act_dim], unit variance."""
        act_dim = self.scale.low.numel()
        while len(self.processes) < envs:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            self.processes.append(self._process(act_dim, self.horizon, np.random.default_rng(seed)))
        return torch.from_numpy(np.stack([p.sample() for p in self.processes[:envs]]))

    def reset(self, index: int) -> None:
        if index < len(self.processes):
            self.processes[index].reset()  # a new sequence for the new episode

    def act(self, obs: torch.Tensor, student: Student, generator: torch.Generator) -> Action:
        mean = student.actor(obs).detach()
        noise = self.sample(mean.shape[0], generator).to(mean)
        raw = mean + self.sigma * noise * self.scale.half_range
        return Action(raw, self.scale.clip(raw))

    def extra_state(self) -> Any:
        return [
            {"buffer": torch.from_numpy(p.buffer.copy()), "idx": int(p.idx), "rng": p.rng.bit_generator.state}
            for p in self.processes
        ]

    def load_extra_state(self, state: Any) -> None:
        self.processes = []
        for s in state or []:
            rng = np.random.default_rng()
            rng.bit_generator.state = s["rng"]
            buffer = s["buffer"].numpy().copy()
            process = self._process(buffer.shape[0], buffer.shape[-1], np.random.default_rng(0))
            process.rng, process.buffer, process.idx = rng, buffer, s["idx"]
            self.processes.append(process)


class ParamNoise(Exploration):
    """Parameter-space noise (Plappert et al., ICLR 2018): the action of a perturbed copy of the student's
    actor, mu(s; theta + std * z), no action noise.

    z ~ N(0, I) over the actor's linear layers (LayerNorm parameters are not perturbed, as in OpenAI
    baselines), one z per environment, drawn from the torch generator at the first step of each of its
    episodes and kept for the episode; the perturbation follows the live actor as it learns. The scale
    ``std`` adapts so that the action distance d = sqrt(mean((mu~(s) - mu(s))^2)), in half action ranges,
    stays near ``target``: every ``interval`` steps, std is multiplied by ``adapt`` if d was below the
    target on the states acted on since the last adaptation, divided by it otherwise. (Plappert et al.
    measure d on a replay batch with a fresh perturbation; the exploration never sees the buffer, so d is
    measured here on the states it acts on, with the perturbation that acted, which has the current std.)
    """

    def __init__(self, scale: ActionScale, target: float, adapt: float, interval: int) -> None:
        super().__init__(scale)
        self.target, self.adapt, self.interval = target, adapt, interval
        self.std = target  # initial std: baselines' adaptive-param_<sigma> starts both at sigma
        self.z: list[dict[str, torch.Tensor] | None] = []  # per environment; None: draw at its next step
        self.sq_sum, self.count, self.steps = 0.0, 0, 0  # the distance since the last adaptation
        self.last_distance = math.nan  # d at the last adaptation

    @staticmethod
    def perturbed_names(actor: nn.Module) -> list[str]:
        """The actor's parameters that are perturbed: those of its linear layers."""
        return [
            f"{name}.{p}" if name else p
            for name, m in actor.named_modules()
            if isinstance(m, nn.Linear)
            for p, _ in m.named_parameters(recurse=False)
        ]

    def reset(self, index: int) -> None:
        if index < len(self.z):
            self.z = [None if i == index else z for i, z in enumerate(self.z)]

    def act(self, obs: torch.Tensor, student: Student, generator: torch.Generator) -> Action:
        actor = student.actor
        params = dict(actor.named_parameters())
        names = self.perturbed_names(actor)
        envs = obs.shape[0]
        self.z += [None] * (envs - len(self.z))
        for i in range(envs):
            if self.z[i] is None:
                # drawn on the host from the run's generator, kept where the actor is
                self.z[i] = {n: torch.randn(params[n].shape, generator=generator).to(params[n]) for n in names}
        with torch.no_grad():
            mean = actor(obs)
            raw = torch.cat(
                [
                    torch.func.functional_call(
                        actor, {n: params[n] + self.std * z[n].to(params[n]) for n in names}, (obs[i : i + 1],)
                    )
                    for i, z in enumerate(self.z[:envs])
                    if z is not None
                ]
            )
        gap = (raw - mean) / self.scale.half_range
        self.sq_sum += float(gap.double().square().sum())
        self.count += gap.numel()
        self.steps += 1
        if self.steps % self.interval == 0:
            self.adapt_std()
        return Action(raw, self.scale.clip(raw))

    def adapt_std(self) -> None:
        """std *= adapt if the measured distance is below the target, else std /= adapt (Plappert et al.)."""
        self.last_distance = math.sqrt(self.sq_sum / self.count) if self.count else math.nan
        if self.count:
            self.std = self.std * self.adapt if self.last_distance < self.target else self.std / self.adapt
        self.sq_sum, self.count = 0.0, 0

    def extra_state(self) -> Any:
        return {
            "std": self.std,
            "z": [None if z is None else {n: t.cpu() for n, t in z.items()} for z in self.z],
            "sq_sum": self.sq_sum,
            "count": self.count,
            "steps": self.steps,
            "last_distance": self.last_distance,
        }

    def load_extra_state(self, state: Any) -> None:
        if state is None:
            return
        self.std, self.z = float(state["std"]), list(state["z"])
        self.sq_sum, self.count, self.steps = float(state["sq_sum"]), int(state["count"]), int(state["steps"])
        self.last_distance = float(state["last_distance"])


class LearnedTeacher(Exploration):
    """pi_e(a | s) = N(mean(context), Sigma); what ``context`` is distinguishes the three variants."""

    learned = True
    scaled_features = False  # True where refresh_features measures something (meta_state)

    def __init__(self, scale: ActionScale, head: GaussianHead) -> None:
        super().__init__(scale)
        self.head = head
        # theta_0, the parameters as built, for the displacement diagnostics: kept outside the module tree (no
        # optimizer and no state_dict sees it; the checkpoint holds it through extra_state). None: unknown,
        # after loading a checkpoint written before it was kept.
        self.initial: dict[str, torch.Tensor] | None = {n: p.detach().clone() for n, p in head.named_parameters()}

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

    def extra_state(self) -> Any:
        return {"initial": self.initial}

    def load_extra_state(self, state: Any) -> None:
        initial = state.get("initial") if isinstance(state, dict) else None
        self.initial = None if initial is None else {n: t.detach().clone() for n, t in initial.items()}

    def diagnostics(self, context: torch.Tensor) -> dict[str, float]:
        """How the teacher acts now, on the given contexts (logged after every teacher step), and how far it
        has moved from its initial parameters theta_0 (both 0 for a frozen teacher)."""
        return {
            "teacher/log_std": float(self.head.log_std.detach().mean()),
            "teacher/mean_spread": self.mean_spread(context),
            "teacher/sigma": self.sigma(),
            "teacher/displacement": self.displacement(),
            "teacher/kl_initial": self.kl_initial(context),
        }

    @torch.no_grad()
    def displacement(self) -> float:
        """||theta - theta_0||_2 over all the teacher's parameters (NaN when theta_0 is unknown)."""
        if self.initial is None:
            return math.nan
        total = sum(float((p - self.initial[n].to(p)).double().square().sum()) for n, p in self.head.named_parameters())
        return math.sqrt(total)

    @torch.no_grad()
    def kl_initial(self, context: torch.Tensor) -> float:
        """Mean over the given contexts of KL(pi_e(.|c) || pi_e0(.|c)), the teacher's action distribution
        against its initial copy's, summed over action dimensions (NaN when theta_0 is unknown)."""
        if self.initial is None or context.shape[0] == 0:
            return math.nan
        params = dict(self.head.named_parameters())
        initial = {f"head.{n}": t.to(params[n]) for n, t in self.initial.items()}
        mean, std = _Distribution(self.head)(context)
        mean0, std0 = torch.func.functional_call(_Distribution(self.head), initial, (context,))
        kl = torch.distributions.kl_divergence(
            torch.distributions.Normal(mean, std), torch.distributions.Normal(mean0, std0)
        )
        return float(kl.sum(-1).mean())

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


class _Distribution(nn.Module):
    """A Gaussian head's (mean, std) as one forward pass, so that ``torch.func.functional_call`` can evaluate
    the head with other parameters (theta_0)."""

    def __init__(self, head: GaussianHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head.mean(context), self.head.std().expand(context.shape[0], -1)


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
        return {**super().extra_state(), "q_mean": self.q_mean, "q_std": self.q_std}

    def load_extra_state(self, state: Any) -> None:
        super().load_extra_state(state)
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
    if kind == "pink":
        return PinkNoise(scale, sigma, cfg.pink_horizon)
    if kind == "param":
        return ParamNoise(scale, sigma, cfg.param_adapt, cfg.param_interval)
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
