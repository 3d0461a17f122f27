"""The learned teachers of the Meta arm: pi_e(a | s) = N(mean(context), Sigma), trained by the meta-policy
gradient; ``meta``, ``meta_state`` and ``meta_variance`` differ in what the context is."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from lightning_meta_rl.adam import make_adam
from lightning_meta_rl.exploration import Exploration
from lightning_meta_rl.losses import teacher_loss
from lightning_meta_rl.members import stack_modules
from lightning_meta_rl.networks import ActionScale, GaussianHead, Student
from lightning_meta_rl.rollout import Action
from lightning_meta_rl.types import Rollout


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


class TeacherStack:
    """Every member's teacher of a population, as they are now, acting as one: their heads stacked
    (``members.stack_modules``), so that one forward gives every member's mean action. The draws are each
    member's own, so the actions equal each teacher's own ``act`` up to the float order of the stacked products.
    A stack is a snapshot: make it anew after the teachers step."""

    def __init__(self, teachers: Sequence[LearnedTeacher]) -> None:
        self.teachers = list(teachers)
        self.head = stack_modules([t.head for t in teachers])

    @torch.no_grad()
    def act(
        self, members: list[int], obs: torch.Tensor, students: Sequence[Student], generators: Sequence[torch.Generator]
    ) -> list[Action]:
        """The given members act: ``members[i]`` on ``obs[i]`` ``[E, obs]`` around ``students[i]``, its noise drawn
        from ``generators[i]``. The other members' rows are zeros that draw nothing."""
        own = [self.teachers[k].context(o, s) for k, o, s in zip(members, obs, students, strict=True)]
        contexts = own[0].new_zeros(len(self.teachers), *own[0].shape)
        contexts[members] = torch.stack(own)
        streams: list[torch.Generator | None] = [None] * len(self.teachers)
        for k, g in zip(members, generators, strict=True):
            streams[k] = g
        raw = cast(GaussianHead, self.head).sample(contexts, streams)[members]
        executed = self.teachers[0].scale.clip(raw)
        return [Action(raw[i], executed[i], own[i]) for i in range(len(members))]


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
