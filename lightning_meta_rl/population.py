"""``--population=N``: N seeds of the DDPG arm trained in one process.

Member k is the run of seed ``seed_everything + k``: its own environments and their seeds, initial weights,
noise and minibatch streams, replay buffer and observation statistics (one ``RolloutDataModule`` per member,
seeded as that single run would be). What is shared is the computation: the N students are one stacked
student (``Student.stack``), and each iteration's student updates are one stacked ``ddpg_step`` on the N
members' own minibatches (``Batch.stack``). The members collect the same number of steps in every iteration,
so they earn the same number of updates and step together; each writes its own ``seed_<s>/metrics.csv``.

A member that diverges (a non-finite action or parameter) is retired with a message naming its seed; the
others go on, and the run ends with exit status 3.

Acting is one stacked actor call for all members' mu(s) per step (their environments stepped in turn), then each
member's own noise around its mu(s). Not yet: the Meta arm (members fall out of step there: D1 and R(pi) are
whole episodes), and one W&B run per member. A member is exported as
an ordinary single-seed checkpoint by ``python -m lightning_meta_rl.export`` (export.py).
"""

from __future__ import annotations

import math
import os
from typing import Any, cast

import torch
import yaml

from lightning_meta_rl.config import MetaConfig, StudentConfig, TeacherConfig
from lightning_meta_rl.divergence import diverged
from lightning_meta_rl.errors import ConfigError, TrainingDiverged
from lightning_meta_rl.evaluation import Evaluation
from lightning_meta_rl.exploration import build_exploration
from lightning_meta_rl.learner import make_adam, member_metrics
from lightning_meta_rl.module import MetaRLModule
from lightning_meta_rl.networks import ActionScale, Actor, Student
from lightning_meta_rl.policies import DeterministicPolicy, UniformPolicy
from lightning_meta_rl.population_data import PopulationDataModule, check_population
from lightning_meta_rl.rollout import Action
from lightning_meta_rl.types import IterationRecord


class PopulationModule(MetaRLModule):
    """N students of the DDPG arm as one stacked student; see the module docstring.

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
        if teacher.learned or teacher.kind == "param":
            raise ConfigError(
                f"--population trains the DDPG arm with fixed noise (gaussian, ou, pink) so far; "
                f"model.teacher.kind={teacher.kind} is not available in a population yet. Run its seeds as "
                f"separate processes."
            )
        seed = torch.initial_seed()  # what seed_everything set: member k is built as the run of seed + k
        super().__init__(obs_dim, act_dim, action_low, action_high, student, teacher, meta, utd_ratio, compile)
        scale = ActionScale(action_low, action_high)
        members = []
        for k in range(population):
            torch.manual_seed(seed + k)
            members.append(Student(obs_dim, scale, student.hidden, student.layer_norm))
        self.student = Student.stack(members)
        self.population = population
        self.seeds = [seed + k for k in range(population)]
        self.explorations = [build_exploration(teacher, obs_dim, scale, student.layer_norm) for _ in members]
        self.actors: list[Actor] = [m.actor for m in members]  # plain copies: warm-up and evaluation
        self.evaluations = [Evaluation() for _ in members]
        self.retired: dict[int, str] = {}  # member index -> why and when it was retired

    @property
    def history(self) -> Any:
        return self.evaluations[0].history

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        cfg = self.student_cfg
        actor, critic = self.student.actor.parameters(), self.student.critic.parameters()
        return [make_adam(actor, cfg.actor_lr), make_adam(critic, cfg.critic_lr)]

    def _sync_actors(self) -> None:
        """Each member's plain actor takes its member's current parameters (before they evaluate)."""
        with torch.no_grad():
            for k, actor in enumerate(self.actors):
                for dst, src in zip(actor.parameters(), self.student.actor.parameters(), strict=True):
                    dst.copy_(src[k])

    def on_train_start(self) -> None:
        data: PopulationDataModule = self.trainer.datamodule  # type: ignore[attr-defined]
        self._reduce = None
        if self.trainer.world_size > 1:
            raise ConfigError("--population runs in one process: its seeds are the parallelism (no DDP)")
        data.restore_pending_state()
        self.train_log.start(self.trainer.default_root_dir if self.trainer.is_global_zero else None, self.iteration)
        root = self.trainer.default_root_dir
        for seed, evaluation, member in zip(self.seeds, self.evaluations, data.members, strict=True):
            path = os.path.join(root, f"seed_{seed}", "metrics.csv") if self.trainer.is_global_zero else None
            evaluation.start(path, member.env_steps, member.eval_every)
        if data.env_steps > 0:
            return
        for member, actor in zip(data.members, self.actors, strict=True):
            if member.warmup_steps > 0:
                member.add(member.collect_steps(UniformPolicy(actor.scale, member.noise_rng), member.warmup_steps))
        self.credit.steps_credited = data.env_steps

    def training_step(self, batch: int, batch_idx: int) -> None:
        data: PopulationDataModule = self.trainer.datamodule  # type: ignore[attr-defined]
        self.iteration += 1
        start = data.env_steps
        active = [k for k in range(self.population) if k not in self.retired]
        d0s = {}
        for k, d0 in data.collect_lockstep(active, self.meta_cfg.d0_steps, self._act).items():
            if isinstance(d0, TrainingDiverged):  # a non-finite action: this member only
                self._retire(k, str(d0).split(":")[0])
                continue
            data.members[k].add(d0)
            d0s[k] = d0
        n = self.credit.due(data.env_steps)
        self.credit.spend(n)
        actor_opt, critic_opt = self._student_optimizers()
        batches = (data.sample_stacked(self.student_cfg.batch_size, self.device) for _ in range(n))
        history = self.learner.steps(self.student, actor_opt, critic_opt, batches)
        for k in self._non_finite_members():
            self._retire(k, "its parameters became NaN or inf")
        self.last_iteration = IterationRecord(start, data.env_steps, next(iter(d0s.values())))
        active = [k for k in range(self.population) if k not in self.retired]
        out = {f"student/{k}": float(v[active].mean()) for k, v in member_metrics(history).items()}
        out |= {"student/updates": float(n), "env_steps": float(data.env_steps)}
        returns = [d.mean_return for d in d0s.values() if d.episode_returns]
        if returns:
            out["train/episode_return"] = sum(returns) / len(returns)
        self.cadence.pending = out
        stop = data.budget_spent
        if stop:
            self.trainer.should_stop = True
        if any(e.due(data.env_steps, last=stop) for e in self.evaluations):
            self._evaluate_members(data)

    @torch.no_grad()
    def _act(self, members: list[int], obs: list[torch.Tensor], started: list[list[int]]) -> list[Action]:
        """One stacked actor call for every member's mu(s), then each member's own noise (its exploration and
        noise stream) around its mu(s). Retired members' rows are zeros, and their actions are not used."""
        full = torch.zeros(self.population, *obs[0].shape, dtype=obs[0].dtype)
        full[members] = torch.stack(obs)
        mu = self.student.actor(full.to(self.device)).cpu()
        actions = []
        data: PopulationDataModule = self.trainer.datamodule  # type: ignore[attr-defined]
        for k, o, envs in zip(members, obs, started, strict=True):
            exploration = self.explorations[k]
            for i in envs:
                exploration.reset(i)
            view = cast(Student, _ActorView(_Fixed(mu[k])))
            actions.append(exploration.act(o, view, data.members[k].noise_rng))
        return actions

    def _non_finite_members(self) -> list[int]:
        """Members (not yet retired) with a non-finite parameter: each stacked layer computes member by member,
        so a diverged member does not spread to the others."""
        with torch.no_grad():
            finite = torch.stack([torch.isfinite(p).flatten(1).all(1) for p in self.student.parameters()]).all(0)
        return [k for k in range(self.population) if not bool(finite[k]) and k not in self.retired]

    def _retire(self, k: int, why: str) -> None:
        """Member k stops: no more data, evaluations or results; its files stay. The others go on. Its weights
        and Adam moments in the stack are zeroed, so that no checkpoint holds NaN or inf (it keeps stepping with
        the others, on its old data, but nothing of it is recorded any more)."""
        self.retired[k] = f"{why} (iteration {self.iteration})"
        with torch.no_grad():
            for p in self.student.parameters():
                p[k].zero_()
            for opt in self._student_optimizers():
                for state in opt.state.values():
                    state["exp_avg"][k].zero_()
                    state["exp_avg_sq"][k].zero_()
        print(
            f"lightning-meta-rl: seed {self.seeds[k]} retired at iteration {self.iteration}: {why}; its results so "
            f"far are kept in seed_{self.seeds[k]}/, the other seeds go on.",
            flush=True,
        )
        if len(self.retired) == self.population:
            raise diverged([f"every seed ({why})"], self.iteration, self.trainer.datamodule.env_steps)  # type: ignore[attr-defined]

    def _evaluate_members(self, data: PopulationDataModule) -> None:
        self._sync_actors()  # the plain actors act only here (training acts through the stacked student)
        scores = []
        for k, (member, actor, evaluation) in enumerate(zip(data.members, self.actors, self.evaluations, strict=True)):
            if k in self.retired:
                continue
            ret = member.evaluate(DeterministicPolicy(actor)).mean_return
            evaluation.record(member.env_steps, member.eval_every, self.iteration, ret, math.nan)
            scores.append(ret)
        mean = sum(scores) / len(scores)
        metrics = {"eval/return": mean, "eval/env_steps": float(data.env_steps)}
        self.log_dict(metrics, batch_size=1, prog_bar=True, logger=False)
        self.evaluation.publish(self.loggers, metrics | {"env_steps": metrics["eval/env_steps"]}, self.iteration - 1)

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
            "explorations": [x.extra_state() for x in self.explorations],
            "retired": dict(self.retired),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("population")
        if state is None:
            raise ConfigError("this checkpoint is not a population's (no 'population' entry)")
        if list(state["seeds"]) != self.seeds:
            raise ConfigError(f"the checkpoint's seeds {state['seeds']} are not this run's {self.seeds}")
        for evaluation, s in zip(self.evaluations, state["evaluations"], strict=True):
            evaluation.load_state_dict(s)
        for exploration, s in zip(self.explorations, state["explorations"], strict=True):
            exploration.load_extra_state(s)
        self.retired = {int(k): str(v) for k, v in state.get("retired", {}).items()}


class _ActorView:
    """What an exploration needs from a student (its ``actor``) for one member."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor


class _Fixed:
    """An actor whose mu(s) was computed already (by the stacked call) for the states it is asked about."""

    def __init__(self, mu: torch.Tensor) -> None:
        self.mu = mu

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mu


def requested_population(args: Any) -> int:
    """The ``--population`` a command line asks for (also read from its ``--config`` files, where a resumed run's
    config.yaml keeps it), so that the CLI can build the population's classes; 1 when not asked for."""
    argv = [str(a) for a in args] if isinstance(args, (list, tuple)) else []
    found = 1
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--population=") else None
        if arg == "--population" and i + 1 < len(argv):
            value = argv[i + 1]
        if arg == "--config" and i + 1 < len(argv):
            value = str(_config_population(argv[i + 1]) or "") or None
        if value is not None:
            try:
                found = int(value)
            except ValueError:
                return 1  # the parser reports the bad value in its own words
    return found


def _config_population(path: str) -> int | None:
    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None
    value = config.get("population") if isinstance(config, dict) else None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None
