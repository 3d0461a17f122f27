"""``--population=N``: N seeds of one arm trained in one process.

Member k is the run of seed ``seed_everything + k``: its own environments and their seeds, initial weights,
teacher or noise, noise and minibatch streams, replay buffer, observation statistics and update credit (one
``RolloutDataModule`` per member, seeded as that single run would be). What is shared is the computation: the
N students are one stacked student (``Student.stack``), each iteration's student updates are stacked
``ddpg_step`` calls on the members' own minibatches, and acting is one stacked actor call for all members per
step (their environments stepped in turn), then each member's own noise or teacher (Gaussian noise and the
teachers also as one call for all members: ``explorer``).

Members earn updates by the steps they collect. Where that differs (the Meta arm's D1 and R(pi) are whole
episodes of different lengths), a member with fewer updates due sits out the remaining steps unchanged:
its parameters, targets, Adam moments and Adam step count stay as they were (masked steps). The Meta arm's
iteration is population_steps.py. Each member writes its own ``seed_<s>/metrics.csv``.

A member that diverges (a non-finite action or parameter) is retired with a message naming its seed; the
others go on, and the run ends with exit status 3. A member is exported as an ordinary single-seed
checkpoint by ``python -m lightning_meta_rl.export`` (export.py). With W&B, each member also has a W&B run of its own (seed_runs.py).
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, cast

import torch
from torch import nn

from lightning_meta_rl.adam import make_adam, per_member_steps
from lightning_meta_rl.config import MetaConfig, StudentConfig, TeacherConfig
from lightning_meta_rl.divergence import diverged
from lightning_meta_rl.errors import ConfigError, TrainingDiverged
from lightning_meta_rl.evaluation import Evaluation
from lightning_meta_rl.exploration import Exploration, GaussianNoise, build_exploration
from lightning_meta_rl.members import LAYOUT, load_member_, upgrade_layout
from lightning_meta_rl.meta_reward import MetaRewardStats
from lightning_meta_rl.module import MetaRLModule
from lightning_meta_rl.networks import ActionScale, Actor, Student
from lightning_meta_rl.noise import ParamNoise
from lightning_meta_rl.policies import DeterministicPolicy, UniformPolicy
from lightning_meta_rl.population_args import check_population
from lightning_meta_rl.population_data import Act, PopulationDataModule
from lightning_meta_rl.population_steps import ddpg_iteration, meta_iteration
from lightning_meta_rl.rollout import Action
from lightning_meta_rl.schedule import UpdateCredit
from lightning_meta_rl.seed_runs import SeedRuns
from lightning_meta_rl.teachers import LearnedTeacher, TeacherStack
from lightning_meta_rl.types import Rollout


class PopulationModule(MetaRLModule):
    """N students (and their teachers or noise) trained as one stacked student; see the module docstring.

    Args: those of MetaRLModule, and ``population``, the number of members (set by ``--population``).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        action_low: list[float],
        action_high: list[float],
        student: StudentConfig = StudentConfig(),  # noqa: B008 (frozen dataclass: an immutable default)
        teacher: TeacherConfig = TeacherConfig(),  # noqa: B008
        meta: MetaConfig = MetaConfig(),  # noqa: B008
        utd_ratio: float = 0.25,
        compile: bool = False,
        population: int = 2,
    ) -> None:
        check_population(population)
        seed = torch.initial_seed()  # what seed_everything set: member k is built as the run of seed + k
        super().__init__(obs_dim, act_dim, action_low, action_high, student, teacher, meta, utd_ratio, compile)
        scale = ActionScale(action_low, action_high)
        members, explorations = [], []
        for k in range(population):  # in the order a single run builds them, from its seed
            torch.manual_seed(seed + k)
            members.append(Student(obs_dim, scale, student.hidden, student.layer_norm))
            explorations.append(build_exploration(teacher, obs_dim, scale, student.layer_norm))
        self.student = Student.stack(members)
        self.exploration = explorations[0]  # what the module's `teacher` is (callbacks): the first seed's
        self.population = population
        self.seeds = [seed + k for k in range(population)]
        self.explorations = nn.ModuleList(explorations)  # teachers' weights are in the checkpoint's state_dict
        self._explorers: list[Exploration] = explorations  # the same modules, plainly indexed (once per step)
        self.actors: list[Actor] = [m.actor for m in members]  # plain copies: warm-up and evaluation
        self.evaluations = [Evaluation() for _ in members]
        self.credits = [UpdateCredit(utd_ratio) for _ in members]
        self.member_stats = [MetaRewardStats(meta.baseline, meta.normalize, meta.stat_momentum) for _ in members]
        self.r_pis = [math.nan] * population  # each member's R(pi) (Meta arm)
        self.retired: dict[int, str] = {}  # member index -> why and when it was retired
        self.finished: set[int] = set()  # members whose budget is spent (they wait for the others)
        self.seed_runs = SeedRuns()  # each member's own W&B run

    @property
    def history(self) -> Any:
        return self.evaluations[0].history

    def member_exploration(self, k: int) -> Exploration:
        return self._explorers[k]

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        cfg, teacher = self.student_cfg, self.teacher_cfg
        actor, critic = self.student.actor.parameters(), self.student.critic.parameters()
        opts: list[torch.optim.Optimizer] = [make_adam(actor, cfg.actor_lr), make_adam(critic, cfg.critic_lr)]
        if self.is_meta:  # one optimizer per member's teacher, after the student's two
            teachers = [cast(LearnedTeacher, x) for x in self.explorations]
            opts += [t.make_optimizer(teacher.lr, teacher.log_std_lr) for t in teachers]
        return opts

    def active(self) -> list[int]:
        """The members still training: neither retired nor finished."""
        return [k for k in range(self.population) if k not in self.retired and k not in self.finished]

    def _sync_actors(self) -> None:
        """Each member's plain actor takes its member's current parameters (before they evaluate, or act with
        parameter-space noise)."""
        for k, actor in enumerate(self.actors):
            actor.to(self.student.actor.scale.low.device)  # a plain list: Lightning moves only the student
            load_member_(actor, self.student.actor, k)

    def on_train_start(self) -> None:
        data: PopulationDataModule = self.trainer.datamodule  # type: ignore[attr-defined]
        self._reduce = None
        if self.trainer.world_size > 1:
            raise ConfigError("--population runs in one process: its seeds are the parallelism (no DDP)")
        data.restore_pending_state()
        data.retired = set(self.retired)
        # finished: by each member's budget, which a resumed run may have raised
        self.finished = {k for k, m in enumerate(data.members) if m.budget_spent and k not in self.retired}
        for opt in self._student_optimizers():  # members may take different numbers of steps
            per_member_steps(opt, self.population)
        self.train_log.start(self.trainer.default_root_dir if self.trainer.is_global_zero else None, self.iteration)
        root = self.trainer.default_root_dir
        for seed, evaluation, member in zip(self.seeds, self.evaluations, data.members, strict=True):
            path = os.path.join(root, f"seed_{seed}", "metrics.csv") if self.trainer.is_global_zero else None
            evaluation.start(path, member.env_steps, member.eval_every)
        if self.trainer.is_global_zero:
            self.seed_runs.start(self.loggers, [s for k, s in enumerate(self.seeds) if k not in self.retired], root)
        if data.env_steps > 0:
            return
        for member, actor in zip(data.members, self.actors, strict=True):
            if member.warmup_steps > 0:
                member.add(member.collect_steps(UniformPolicy(actor.scale, member.noise_rng), member.warmup_steps))
        for credit, member in zip(self.credits, data.members, strict=True):
            credit.steps_credited = member.env_steps
        if self.is_meta and self.meta_cfg.reward == "return":  # each member's first R(pi), stored
            for k, rollout in self.episodes(self.active(), self.student.actor).items():
                data.members[k].add(rollout)
                self.r_pis[k] = rollout.mean_return

    def training_step(self, batch: int, batch_idx: int) -> None:
        data: PopulationDataModule = self.trainer.datamodule  # type: ignore[attr-defined]
        self.iteration += 1
        if self.active():
            self.cadence.pending = meta_iteration(self, data) if self.is_meta else ddpg_iteration(self, data)
        # each member is evaluated, and stops, as its own run would: by its own steps and budget
        going = [(k, data.members[k]) for k in self.active()]
        due = [k for k, m in going if self.evaluations[k].due(m.env_steps, last=m.budget_spent)]
        self.finished |= {k for k, m in going if m.budget_spent}
        if due:
            self._evaluate_members(data, due)
        if not self.active():
            self.trainer.should_stop = True

    def collected(self, results: dict[int, Any]) -> dict[int, Rollout]:
        """The members' rollouts of a lockstep collection; a member stopped by a non-finite action is retired."""
        for k, result in results.items():
            if isinstance(result, TrainingDiverged):  # this member only
                self.retire(k, str(result).split(":")[0])
        return {k: r for k, r in results.items() if not isinstance(r, TrainingDiverged)}

    # ------------------------------------------------------------------ acting
    def episodes(self, members: list[int], actor: nn.Module, seeds: dict[int, int] | None = None) -> dict[int, Rollout]:
        """``meta.eval_episodes`` deterministic episodes of each given member of a stacked ``actor`` (the
        student: R(pi); the look-ahead: D1) on its student-rollout environment, in lockstep; not yet stored."""
        data: PopulationDataModule = self.trainer.datamodule  # type: ignore[attr-defined]
        act = self.deterministic(actor)
        return self.collected(data.collect_episodes_lockstep(members, self.meta_cfg.eval_episodes, seeds, act))

    def _full(self, members: list[int], obs: torch.Tensor) -> torch.Tensor:
        """The given members' observations (``[len(members), ...]``) as one ``[N, ...]`` tensor for a stacked call
        (other rows: zeros)."""
        if members == list(range(self.population)):  # every member, in order (the common case)
            return obs.to(self.device)
        full = torch.zeros(self.population, *obs.shape[1:], dtype=obs.dtype)
        full[members] = obs
        return full.to(self.device)

    def deterministic(self, actor: nn.Module) -> Act:
        """Acts with each member's mu(s) of a stacked actor, no noise (one call for all members)."""

        @torch.no_grad()
        def act(members: list[int], obs: torch.Tensor, started: list[list[int]]) -> list[Action]:
            mu = actor(self._full(members, obs)).cpu()
            return [Action(mu[k], mu[k]) for k in members]

        return act

    def explorer(self) -> Act:
        """What acts in a collection of training data: ``explore``, with the members' teachers (Meta arm) stacked
        as they are now, for one call of all of them per step (teachers change only between collections)."""
        if not self.is_meta:
            return self.explore
        return functools.partial(self.explore, teachers=TeacherStack(cast(list[LearnedTeacher], self._explorers)))

    @torch.no_grad()
    def explore(
        self, members: list[int], obs: torch.Tensor, started: list[list[int]], teachers: TeacherStack | None = None
    ) -> list[Action]:
        """One stacked actor call for every member's mu(s) (and Q(s, mu(s)) where a teacher reads it), then
        each member's own exploration (its noise or teacher, and its noise stream): for Gaussian noise and for
        ``teachers``, one call for all members."""
        full = self._full(members, obs)
        mu = self.student.actor(full)
        q = self.student.critic(full, mu) if self.teacher_cfg.kind == "meta_state" else None
        data: PopulationDataModule = self.trainer.datamodule  # type: ignore[attr-defined]
        noise = self._explorers[members[0]]
        if isinstance(noise, GaussianNoise):  # stateless, every member's the same kind: all members at once
            return noise.act_members(mu[members], [data.members[k].noise_rng for k in members])
        if teachers is not None:  # (a learned teacher has no episode state to reset)
            views = [cast(Student, _MemberView(mu[k], None if q is None else q[k])) for k in members]
            return teachers.act(members, obs.to(full.device), views, [data.members[k].noise_rng for k in members])
        actions = []
        for k, o, envs in zip(members, obs, started, strict=True):
            exploration = self._explorers[k]
            for i in envs:
                exploration.reset(i)
            if isinstance(exploration, ParamNoise):  # it perturbs the actor's weights: the member's plain actor
                view = cast(Student, _PlainView(self.actors[k]))  # (synced before the collection)
            else:
                view = cast(Student, _MemberView(mu[k], None if q is None else q[k]))
            actions.append(exploration.act(o.to(full.device), view, data.members[k].noise_rng))
        return actions

    def non_finite_members(self) -> list[int]:
        """Members (not yet retired) with a non-finite parameter: each stacked layer computes member by member,
        so a diverged member does not spread to the others."""
        with torch.no_grad():
            finite = torch.stack([torch.isfinite(p).flatten(1).all(1) for p in self.student.parameters()]).all(0)
        return [k for k in range(self.population) if not bool(finite[k]) and k not in self.retired]

    def retire(self, k: int, why: str) -> None:
        """Member k stops: no more data, evaluations or results; its files stay. The others go on. Its weights
        and Adam moments in the stack are zeroed, so that no checkpoint holds NaN or inf; it takes no more
        steps."""
        self.retired[k] = f"{why} (iteration {self.iteration})"
        self.trainer.datamodule.retired.add(k)  # type: ignore[attr-defined]
        with torch.no_grad():
            for p in self.student.parameters():
                p[k].zero_()
            for opt in self._student_optimizers():
                for state in opt.state.values():
                    state["exp_avg"][k].zero_()
                    state["exp_avg_sq"][k].zero_()
            if self.is_meta:  # its teacher too (a non-finite action mostly comes from it)
                for p in self._explorers[k].parameters():
                    p.zero_()
                for state in self.optimizers()[2 + k].optimizer.state.values():  # type: ignore[index]
                    for t in state.values():
                        t.zero_()
        print(
            f"lightning-meta-rl: seed {self.seeds[k]} retired at iteration {self.iteration}: {why}; its results so "
            f"far are kept in seed_{self.seeds[k]}/, the other seeds go on.",
            flush=True,
        )
        if len(self.retired) == self.population:
            raise diverged([f"every seed ({why})"], self.iteration, self.trainer.datamodule.env_steps)  # type: ignore[attr-defined]

    def _evaluate_members(self, data: PopulationDataModule, due: list[int]) -> None:
        """The given members' evaluations, each recorded in its own history; the loggers get their mean."""
        self._sync_actors()  # the plain actors act only here (training acts through the stacked student)
        scores = []
        # each by its own plain actor (what its export acts with), the members' episodes stepped together
        rollouts = self.collected(data.evaluate_lockstep({k: DeterministicPolicy(self.actors[k]) for k in due}))
        for k, rollout in rollouts.items():
            member, evaluation = data.members[k], self.evaluations[k]
            ret = rollout.mean_return
            evaluation.record(member.env_steps, member.eval_every, self.iteration, ret, self.r_pis[k])
            self.seed_runs.log(self.seeds[k], member.env_steps, ret, self.r_pis[k])
            scores.append(ret)
        if not scores:  # every member due was retired by its evaluation
            return
        mean = sum(scores) / len(scores)
        metrics = {"eval/return": mean, "eval/env_steps": float(data.env_steps)}
        self.log_dict(metrics, batch_size=1, prog_bar=True, logger=False)
        self.evaluation.publish(self.loggers, metrics | {"env_steps": metrics["eval/env_steps"]}, self.iteration - 1)

    def on_train_end(self) -> None:
        try:
            super().on_train_end()
        finally:
            self.seed_runs.finish(self.final_scores(), {self.seeds[k] for k in self.retired})

    def final_scores(self) -> dict[int, float]:
        """Each member's final score (the mean of its last 10% of evaluations), by seed (a retired member's is
        that of the evaluations it had)."""
        return {seed: e.history.final_score() for seed, e in zip(self.seeds, self.evaluations, strict=True)}

    def validation_step(self, batch: int, batch_idx: int) -> None:
        raise ConfigError("validate/test evaluate one student: export a member of the population first")

    test_step = validation_step

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["population"] = {
            "seeds": self.seeds,
            "evaluations": [e.state_dict() for e in self.evaluations],
            "explorations": [self.member_exploration(k).extra_state() for k in range(self.population)],
            "retired": dict(self.retired),
            "credits": [c.state_dict() for c in self.credits],
            "meta_stats": [m.state_dict() for m in self.member_stats],
            "r_pis": list(self.r_pis),
            "member_layout": LAYOUT,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("population")
        if state is None:
            raise ConfigError("this checkpoint is not a population's (no 'population' entry)")
        if list(state["seeds"]) != self.seeds:
            raise ConfigError(f"the checkpoint's seeds {state['seeds']} are not this run's {self.seeds}")
        if state.get("member_layout", 1) != LAYOUT:  # written before members' weights were kept transposed
            upgrade_layout(self.student, [self.student.actor, self.student.critic], checkpoint, "student.")
            state["member_layout"] = LAYOUT
        for evaluation, s in zip(self.evaluations, state["evaluations"], strict=True):
            evaluation.load_state_dict(s)
        for k, s in enumerate(state["explorations"]):
            self.member_exploration(k).load_extra_state(s)
        self.retired = {int(k): str(v) for k, v in state.get("retired", {}).items()}
        if "credits" not in state:  # written before members kept their own: they had stepped together
            state = state | {"credits": [checkpoint["meta_rl"]["credit"]] * self.population}
        for credit, s in zip(self.credits, state["credits"], strict=True):
            credit.load_state_dict(s)
        for stats, s in zip(self.member_stats, state.get("meta_stats", []), strict=True):
            stats.load_state_dict(s)
        self.r_pis = [float(r) for r in state.get("r_pis", self.r_pis)]


class _PlainView:
    """A member's plain actor as the student an exploration acts around (parameter-space noise)."""

    def __init__(self, actor: Actor) -> None:
        self.actor = actor


class _MemberView:
    """What an exploration needs from a student for one member: its actor and critic, whose outputs on the
    states it asks about were computed already (by the stacked calls)."""

    def __init__(self, mu: torch.Tensor, q: torch.Tensor | None) -> None:
        self.actor = lambda obs: mu
        self.critic = lambda obs, action: q
