"""Typed, validated hyperparameter groups (each declared once; LightningCLI builds ``--model.*`` from them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lightning_meta_rl.errors import ConfigError


def _positive(group: str, **values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ConfigError(f"model.{group}.{name} must be positive, got {value}")


@dataclass(frozen=True)
class StudentConfig:
    """The DDPG student (defaults: OpenAI-baselines DDPG as used by the paper's authors).

    Args:
        hidden: widths of the hidden layers of actor and critic.
        layer_norm: LayerNorm after each hidden linear layer.
        actor_lr: Adam learning rate of the actor.
        critic_lr: Adam learning rate of the critic.
        critic_l2: L2 penalty on the critic's hidden weight matrices.
        gamma: discount factor, in (0, 1].
        tau: polyak rate of the target networks, in (0, 1].
        batch_size: minibatch size of every DDPG update.
    """

    hidden: tuple[int, ...] = (64, 64)
    layer_norm: bool = True
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    critic_l2: float = 1e-2
    gamma: float = 0.99
    tau: float = 0.01
    batch_size: int = 64

    def __post_init__(self) -> None:
        _positive("student", actor_lr=self.actor_lr, critic_lr=self.critic_lr, batch_size=self.batch_size)
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"model.student.gamma must be in (0, 1], got {self.gamma}")
        if not 0 < self.tau <= 1:
            raise ConfigError(f"model.student.tau must be in (0, 1], got {self.tau}")
        if self.critic_l2 < 0:
            raise ConfigError(f"model.student.critic_l2 must be >= 0, got {self.critic_l2}")
        if len(self.hidden) < 2 or any(h <= 0 for h in self.hidden):
            raise ConfigError(f"model.student.hidden needs at least two positive widths, got {list(self.hidden)}")


# Meta (Variance)'s default log-std learning rate. Adam moves log-std by at most about this much per step:
# with a consistent meta-gradient sigma grows about 3x in 100 teacher steps (tests/test_teacher_fixes.py;
# at the teacher's lr, 1e-3, it grows 4%), while a meta-reward of pure noise moves log-std by about
# VARIANCE_STD_LR * sqrt(steps), 0.3 in 100 steps (sigma times or divided by 1.35).
VARIANCE_STD_LR = 0.03


@dataclass(frozen=True)
class TeacherConfig:
    """How D0 is generated: a learned teacher (the Meta arm) or fixed noise (the DDPG arm).

    Args:
        kind: ``meta`` (pi_e = N(f(s), Sigma)), ``meta_state`` (f also sees Q(s, mu(s)) and mu(s)),
            ``meta_variance`` (N(mu(s), Sigma), only Sigma learned), or the DDPG arm's fixed exploration:
            ``gaussian``, ``ou`` or ``pink`` (1/f, Eberhard et al. 2023) noise around mu(s), or ``param``
            (parameter-space noise, Plappert et al. 2018: a perturbed copy of the student's actor acts).
        sigma: standard deviation as a fraction of half the action range (initial value when learned). For
            ``param``: the target distance between the perturbed and the student's actions (root mean
            square, in half action ranges), and the parameter noise's initial std (as OpenAI baselines'
            ``adaptive-param_<sigma>``).
        lr: Adam learning rate of the teacher (learned kinds only). ``0`` gives the frozen-teacher control:
            the same protocol (D0, look-ahead, D1, R(pi), the same env steps) with a teacher that never takes
            a step; the meta-reward and the diagnostics are still computed and logged.
        learn_std: also learn the teacher's log-std (``meta``, ``meta_state``; always on for ``meta_variance``).
        std_lr: Adam learning rate of the teacher's log-std, when it is learned. Adam moves a parameter by
            about its learning rate per step, so at ``lr`` (1e-3) and one step per iteration sigma barely
            moves in a run. Unset: 0.03 (``VARIANCE_STD_LR``) for ``meta_variance`` (sigma is all it learns) and
            ``lr`` for ``meta`` and ``meta_state`` (unchanged).
        hidden: hidden widths of the teacher's mean network f.
        ou_theta: mean reversion of Ornstein-Uhlenbeck noise.
        pink_horizon: length of each ``pink`` noise sequence, the longest period the noise has; a new
            sequence starts at every episode (and after this many steps within one). Eberhard et al. set it to
            the episode length: 1000 for the MuJoCo tasks, 200 for Pendulum.
        param_adapt: ``param``: the factor by which the parameter noise's std grows when the measured action
            distance is below ``sigma`` and shrinks when above (Plappert et al.'s alpha).
        param_interval: ``param``: steps (per environment) between two adaptations of the parameter noise's
            std; the distance is measured on the states acted on since the last one (baselines: 50).
    """

    kind: Literal["meta", "meta_state", "meta_variance", "gaussian", "ou", "pink", "param"] = "meta"
    sigma: float = 0.2
    lr: float = 1e-3
    learn_std: bool = False
    hidden: tuple[int, ...] = (64, 64)
    ou_theta: float = 0.15
    std_lr: float | None = None
    pink_horizon: int = 1000
    param_adapt: float = 1.01
    param_interval: int = 50

    def __post_init__(self) -> None:
        _positive(
            "teacher",
            sigma=self.sigma,
            ou_theta=self.ou_theta,
            pink_horizon=self.pink_horizon,
            param_interval=self.param_interval,
        )
        if not self.param_adapt > 1:
            raise ConfigError(f"model.teacher.param_adapt must be above 1, got {self.param_adapt}")
        if self.lr < 0:
            raise ConfigError(f"model.teacher.lr must be >= 0 (0: a frozen teacher), got {self.lr}")
        if self.std_lr is not None:
            _positive("teacher", std_lr=self.std_lr)
            if self.lr == 0:
                raise ConfigError(
                    "model.teacher.std_lr is set but model.teacher.lr is 0: a frozen teacher learns nothing, "
                    "its log-std included; leave std_lr unset."
                )

    @property
    def learned(self) -> bool:
        return self.kind.startswith("meta")

    @property
    def frozen(self) -> bool:
        """A learned kind that never takes a step (the control for whether the teacher's learning matters)."""
        return self.learned and self.lr == 0

    @property
    def log_std_lr(self) -> float:
        """The learning rate the teacher's log-std parameter gets (``std_lr`` with its default filled in)."""
        if self.std_lr is not None:
            return self.std_lr
        return VARIANCE_STD_LR if self.kind == "meta_variance" and self.lr > 0 else self.lr


@dataclass(frozen=True)
class MetaConfig:
    """Algorithm 1's knobs. Every option that deviates from the paper is off by default.

    Args:
        d0_steps: steps per iteration generated by the teacher (or by the noise in the DDPG arm).
        lookahead_updates: DDPG updates of the look-ahead student pi' on D0 only.
        lookahead: ``copy`` trains a throw-away copy (the student is untouched); ``inplace`` trains the
            live student on D0, as the authors' early code did (pi' is then the student itself).
        eval_episodes: deterministic episodes that estimate R(pi') (D1) and R(pi); counted in the budget.
            Not the same as ``data.eval_episodes`` (reporting).
        baseline: subtract a running mean from the meta-reward (deviation, variance reduction).
        normalize: divide the meta-reward by a running std (deviation).
        paired_evaluation: measure R(pi) again right before D1 from the same reset seeds as D1
            (common random numbers; one more rollout per iteration).
        stat_momentum: momentum of the running mean/std used by ``baseline`` and ``normalize``.
        reward: the meta-reward estimator (meta_reward.py). ``return``: R(pi') - R(pi) from rollouts (the
            paper's); ``critic``: mean Q(s, mu'(s)) - Q(s, mu(s)) under the student's critic on
            ``critic_states`` states drawn from the replay buffer, with no D1 or R(pi) rollouts (deviation).
        critic_states: replay states per iteration for the ``critic`` estimator.
        samples: K, the teacher's samples per step (deviation when above 1): K D0 segments of ``d0_steps``
            each, one from each of K training environments (``data.num_envs`` must be K), K look-ahead students trained as one batched update (ensemble.py), K meta-rewards, and a
            leave-one-out baseline (each meta-reward against the mean of the other K - 1) in the teacher's
            step. With the ``return`` estimator every look-ahead is rolled out (K D1s, all counted) from one
            common reset seed per iteration; with ``critic`` all K are judged on one draw of replay states.
            (benchmarks/results/critic_choice: look-aheads ranked by rollouts from a common start state agreed
            with their true ranking at Spearman 0.72 on Pendulum, from independent starts at 0.18.)
    """

    d0_steps: int = 200
    lookahead_updates: int = 50
    lookahead: Literal["copy", "inplace"] = "copy"
    eval_episodes: int = 1
    baseline: bool = False
    normalize: bool = False
    paired_evaluation: bool = False
    stat_momentum: float = 0.9
    reward: Literal["return", "critic"] = "return"
    critic_states: int = 1000
    samples: int = 1

    def __post_init__(self) -> None:
        _positive(
            "meta",
            d0_steps=self.d0_steps,
            eval_episodes=self.eval_episodes,
            critic_states=self.critic_states,
            samples=self.samples,
        )
        if self.samples > 1 and self.lookahead == "inplace":
            raise ConfigError(
                f"model.meta.samples={self.samples} trains {self.samples} look-ahead copies; "
                "model.meta.lookahead=inplace has only the one live student. Use lookahead=copy."
            )
        if self.samples > 1 and (self.baseline or self.normalize or self.paired_evaluation):
            raise ConfigError(
                f"model.meta.samples={self.samples} weights each segment by its meta-reward less the mean of the "
                "other samples' (a leave-one-out baseline), and rolls all look-aheads out from one common reset "
                "seed; R(pi) cancels from that difference. model.meta.baseline (a second baseline), "
                "model.meta.normalize (Adam's steps barely depend on the scale) and model.meta.paired_evaluation "
                "(an R(pi) rollout that would change nothing) are refused with it: leave them off."
            )
        if self.reward == "critic" and self.paired_evaluation:
            raise ConfigError("model.meta.paired_evaluation pairs rollouts; the critic meta-reward makes none")
        if self.lookahead_updates < 0:
            raise ConfigError(f"model.meta.lookahead_updates must be >= 0, got {self.lookahead_updates}")
        if not 0 <= self.stat_momentum < 1:
            raise ConfigError(f"model.meta.stat_momentum must be in [0, 1), got {self.stat_momentum}")


def check_with_data(student: StudentConfig, meta: MetaConfig | None, buffer_size: int, num_envs: int) -> None:
    """Settings that only conflict across the model and the data (``meta``: the Meta arm's, None for DDPG)."""
    if buffer_size < student.batch_size:
        raise ConfigError(
            f"model.student.batch_size ({student.batch_size}) is larger than data.buffer_size ({buffer_size}); "
            f"a minibatch must fit in the replay buffer."
        )
    k = 1 if meta is None else meta.samples
    if k > 1 and num_envs != k:
        raise ConfigError(
            f"model.meta.samples={k} takes its {k} D0 segments from {k} training environments stepped together, "
            f"one segment each (so that no segment starts where another left off); set data.num_envs={k} "
            f"(got {num_envs})."
        )
