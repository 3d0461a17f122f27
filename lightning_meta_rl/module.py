"""MetaRLModule: owns the DDPG student and the exploration (teacher or noise); one ``training_step``
is one iteration of Algorithm 1 (SPEC.md section 1), or one DDPG iteration for the baseline arm."""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from lightning_meta_rl.compiled import CompiledDDPG
from lightning_meta_rl.config import MetaConfig, StudentConfig, TeacherConfig
from lightning_meta_rl.datamodule import RolloutDataModule
from lightning_meta_rl.ensemble import StackedLookahead, leave_one_out, stack_batches
from lightning_meta_rl.errors import ConfigError, TrainingDiverged
from lightning_meta_rl.exploration import (
    DeterministicPolicy,
    ExplorationPolicy,
    LearnedTeacher,
    UniformPolicy,
    build_exploration,
)
from lightning_meta_rl.fast_path import CountedOptimizer, StudentOptimizer, lightning_is_idle
from lightning_meta_rl.losses import teacher_loss
from lightning_meta_rl.meta_reward import critic_improvement
from lightning_meta_rl.networks import ActionScale, Actor
from lightning_meta_rl.ranks import gather_per_rank, own_rank
from lightning_meta_rl.results import EvalHistory
from lightning_meta_rl.student import Optimizer, Student, ddpg_update, lookahead_copy, make_adam
from lightning_meta_rl.types import IterationRecord, Rollout

__all__ = ["MetaConfig", "MetaRLModule", "StudentConfig", "TeacherConfig"]


class MetaRLModule(L.LightningModule):
    """DDPG student + meta-policy-gradient teacher, with manual optimization of three optimizers.

    Args:
        obs_dim, act_dim, action_low, action_high: environment facts, linked from the DataModule.
        student: the DDPG student's settings.
        teacher: the exploration: a learned teacher (Meta arm) or fixed noise (DDPG arm).
        meta: Algorithm 1's settings (ignored by the DDPG arm except ``d0_steps``, its steps per iteration).
        utd_ratio: student updates per environment step collected, the same in both arms.
        compile: compile the pieces of every DDPG update (student and look-ahead) with ``torch.compile``
            (lightning_meta_rl/compiled.py): faster steady-state updates after a compile start-up cost.
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
    ) -> None:
        super().__init__()
        if not utd_ratio > 0:
            raise ConfigError(f"model.utd_ratio must be positive, got {utd_ratio}")
        if len(action_low) != act_dim or len(action_high) != act_dim:
            raise ValueError(f"action bounds have {len(action_low)}/{len(action_high)} entries, expected {act_dim}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.cfg, self.teacher_cfg, self.meta_cfg, self.utd_ratio = student, teacher, meta, utd_ratio
        scale = ActionScale(action_low, action_high)
        self.student = Student(obs_dim, scale, student.hidden, student.layer_norm)
        self.exploration = build_exploration(
            teacher.kind,
            obs_dim,
            scale,
            teacher.sigma,
            teacher.learn_std,
            teacher.hidden,
            student.layer_norm,
            teacher.ou_theta,
        )
        self.history = EvalHistory()
        self.r_pi = math.nan  # R(pi): deterministic return of the student after the last iteration
        self._steps_credited = 0  # env steps already turned into student-update credit
        self._update_credit = 0.0
        self._next_eval = 0
        self._m_mean, self._m_var = 0.0, 1.0  # running meta-reward statistics (baseline / normalize options)
        self._teacher_steps = 0  # optimizer steps the teacher has taken (stays 0 for a frozen teacher)
        self._raw_m_count, self._raw_m_mean, self._raw_m_m2 = 0, 0.0, 0.0  # Welford over every raw m, for meta/snr
        self._t0 = time.perf_counter()
        self.last_iteration: IterationRecord | None = None  # for callbacks (media, diagnostics)
        # the student's updates skip Lightning's hook dispatch when nothing listens (fast_path.py); set in on_train_start
        self._fast = False
        self._backward: Callable[[torch.Tensor], None] = self.manual_backward
        self._iteration_metrics: dict[str, float] = {}  # the last iteration's, logged in on_train_batch_end
        self._logged_keys: set[str] = set()
        # compiled DDPG updates (compiled.py); None: the eager ddpg_update and lookahead_copy
        self._compiled = CompiledDDPG() if compile else None

    # ------------------------------------------------------------------ set-up
    @property
    def is_meta(self) -> bool:
        return self.teacher_cfg.learned

    @property
    def teacher(self) -> LearnedTeacher:
        """The exploration as a learned teacher (the Meta arm only)."""
        if not isinstance(self.exploration, LearnedTeacher):
            raise TypeError(f"the {self.teacher_cfg.kind} exploration is fixed noise, not a learned teacher")
        return self.exploration

    @property
    def data(self) -> RolloutDataModule:
        dm = self.trainer.datamodule  # type: ignore[attr-defined]
        if not isinstance(dm, RolloutDataModule):
            raise TypeError("MetaRLModule needs a RolloutDataModule (trainer.fit(model, datamodule=...))")
        return dm

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        opts: list[torch.optim.Optimizer] = [
            make_adam(list(self.student.actor.parameters()), self.cfg.actor_lr),
            make_adam(list(self.student.critic.parameters()), self.cfg.critic_lr),
        ]
        if self.is_meta:
            opts.append(self._teacher_optimizer())
        return opts

    def _teacher_optimizer(self) -> torch.optim.Optimizer:
        """Adam over the teacher's parameters; the log-std gets its own learning rate where it differs."""
        cfg = self.teacher_cfg
        params = list(self.exploration.parameters())
        log_std = getattr(getattr(self.exploration, "head", None), "log_std", None)
        if not any(p is log_std for p in params) or cfg.log_std_lr == cfg.lr:
            return make_adam(params, cfg.lr)  # one group: the faithful teacher's optimizer, as it always was
        rest = [p for p in params if p is not log_std]
        groups: list[dict[str, Any]] = [{"params": rest}] if rest else []
        groups.append({"params": [log_std], "lr": cfg.log_std_lr})
        return make_adam(groups, cfg.lr)

    def setup(self, stage: str) -> None:
        self.check_data(self.data)

    def check_data(self, data: RolloutDataModule) -> None:
        """Reject settings that only conflict across the model and the data (raised before any output)."""
        if data.buffer_size < self.cfg.batch_size:
            raise ConfigError(
                f"model.student.batch_size ({self.cfg.batch_size}) is larger than data.buffer_size ({data.buffer_size}); "
                f"a minibatch must fit in the replay buffer."
            )
        k = self.meta_cfg.samples
        if self.is_meta and k > 1 and data.num_envs != k:
            raise ConfigError(
                f"model.meta.samples={k} takes its {k} D0 segments from {k} training environments stepped together, "
                f"one segment each (so that no segment starts where another left off); set data.num_envs={k} "
                f"(got {data.num_envs})."
            )

    def on_train_start(self) -> None:
        data = self.data
        self._fast = lightning_is_idle(self.trainer, self)
        self._backward = torch.Tensor.backward if self._fast else self.manual_backward
        data._apply_pending()
        self.history.path = (
            os.path.join(self.trainer.default_root_dir, "metrics.csv") if self.trainer.is_global_zero else None
        )
        self._t0 = time.perf_counter() - (self.history.rows[-1]["wall_time_s"] if self.history.rows else 0.0)
        if data.env_steps > 0:  # resumed from a checkpoint: warm-up and first R(pi) are done
            self.history.rewrite()
            return
        if data.warmup_steps > 0:  # both arms: uniformly random actions, stored, counted, no update yet
            data.add(data.collect_steps(UniformPolicy(self.student.actor.scale, data.noise_rng), data.warmup_steps))
        self._steps_credited = data.env_steps
        self._next_eval = data.eval_every
        if self.is_meta and self.meta_cfg.reward == "return":
            self.r_pi = self._rollout_student(data).mean_return

    # ------------------------------------------------------------------ one iteration
    def training_step(self, batch: int, batch_idx: int) -> None:
        data = self.data
        metrics = self.meta_iteration(data) if self.is_meta else self.ddpg_iteration(data)
        self._check_losses(metrics, data)
        self._iteration_metrics = metrics
        # every rank stops together, as soon as one has spent its budget (DDP needs the same step count)
        stop = self.trainer.strategy.reduce_boolean_decision(data.budget_spent, all=False)
        if stop:
            self.trainer.should_stop = True
        self._maybe_evaluate(data, last=stop)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # A log_dict call costs ~5 ms, so it is made only for the iterations whose metrics Lightning writes.
        # This hook runs after every callback's (a Timer may have set should_stop there).
        if self._metrics_written(self.trainer.should_stop) and self._iteration_metrics:
            # Lightning writes a key's last value again on steps that do not log it: a metric not measured
            # this iteration (no episode ended in D0, no update, no action gap) is written as NaN instead
            metrics = dict.fromkeys(self._logged_keys, math.nan) | self._iteration_metrics
            self._logged_keys.update(metrics)
            self.log_dict(metrics, on_step=True, prog_bar=False, batch_size=1)

    def _metrics_written(self, last: bool) -> bool:
        """Whether this iteration's metrics reach the loggers: Lightning writes step metrics every
        log_every_n_steps iterations and on the last one."""
        every = self.trainer.log_every_n_steps  # type: ignore[attr-defined]
        return every > 0 and ((self.global_step_iterations + 1) % every == 0 or last)

    def meta_iteration(self, data: RolloutDataModule) -> dict[str, float]:
        """Algorithm 1, one iteration (SPEC.md section 1, steps 1-7), with K = ``meta.samples`` teacher samples
        (K = 1: the paper's method; above 1 every step below runs once per sample)."""
        cfg, start = self.meta_cfg, data.env_steps
        # 1. D0 from the teacher as it is now: one segment of d0_steps per sample, each from its own environment
        policy = ExplorationPolicy(self.exploration, self.student, data.noise_rng)
        d0 = data.collect_steps(policy, cfg.samples * cfg.d0_steps)
        segments = [d0] if cfg.samples == 1 else [d0.environment(i, cfg.samples) for i in range(cfg.samples)]
        # the diagnostic on every iteration, before the student changes: the rollouts below may end the run,
        # so whether this iteration's metrics are written is not known yet
        gap = self._action_gap(data, d0)
        # 2. look-ahead students pi'_k = DDPG(pi, D0_k), trained by the same update as the student
        lookahead_actors, look_metrics = self.lookahead_actors(data, segments)
        d1s: list[Rollout] = []
        if cfg.reward == "critic":  # option: the student's critic judges pi' against pi on replay states, no rollouts
            r_pi = math.nan
            obs = data.sample(cfg.critic_states, self.device).obs
            meta_rewards = [
                critic_improvement(self.student.critic, self.student.actor, a, obs) for a in lookahead_actors
            ]
        else:
            # 3. D1: each pi'_k rolled out deterministically; R(pi'_k) its mean return. K > 1 look-aheads
            # start from one common reset seed, so that the leave-one-out comparison is not start-state noise
            seed = data.pairing_seed() if cfg.paired_evaluation or cfg.samples > 1 else None
            r_pi = self.r_pi
            if cfg.paired_evaluation:  # option: R(pi) from the same reset seeds as D1 (common random numbers)
                r_pi = self._rollout_student(data, seed).mean_return
            d1s = [data.collect_episodes(DeterministicPolicy(a), cfg.eval_episodes, seed) for a in lookahead_actors]
            # 4. meta-rewards
            meta_rewards = [d1.mean_return - r_pi for d1 in d1s]
        # 5. teacher update by the meta-policy gradient
        teacher_metrics = self.teacher_step(segments, meta_rewards)
        # 6. D0 and D1 into the replay buffer
        for rollout in (d0, *d1s):
            data.add(rollout)
        # 7. student updates on the buffer, then the new R(pi) (its rollout is stored too)
        student_metrics = self.student_updates(data)
        student_rollout = None if not d1s else self._rollout_student(data)
        if student_rollout is not None:
            self.r_pi = student_rollout.mean_return
        if self.teacher.scaled_features:  # the student and observation statistics are now the next D0's
            recent = torch.cat([r.obs for r in (d0, *d1s, student_rollout) if r is not None])
            self.teacher.refresh_features(data.normalizer(recent).to(self.device), self.student)
        d1 = Rollout.concat(d1s) if d1s else None
        meta_reward = sum(meta_rewards) / len(meta_rewards)
        self.last_iteration = IterationRecord(start, data.env_steps, d0, d1, student_rollout, meta_reward=meta_reward)
        return {
            "explore/action_gap": gap,
            "meta/reward": meta_reward,
            "meta/r_pi_before": r_pi,
            "meta/r_pi_prime": math.nan if d1 is None else d1.mean_return,
            "meta/r_pi": self.r_pi,
            **look_metrics,
            **teacher_metrics,
            **student_metrics,
            **self._progress(data, d0),
        }

    def ddpg_iteration(self, data: RolloutDataModule) -> dict[str, float]:
        """The baseline: d0_steps of noisy student data into the buffer, then student updates."""
        start = data.env_steps
        d0 = data.collect_steps(
            ExplorationPolicy(self.exploration, self.student, data.noise_rng), self.meta_cfg.d0_steps
        )
        gap = {}  # a diagnostic for the loggers: D0 is this iteration's only rollout, so we know if it is written
        if self._metrics_written(last=data.budget_spent):
            gap["explore/action_gap"] = self._action_gap(data, d0)  # before the student changes
        data.add(d0)
        self.last_iteration = IterationRecord(start, data.env_steps, d0)
        return {**self.student_updates(data), **self._progress(data, d0), **gap}

    # ------------------------------------------------------------------ the pieces
    def lookahead(self, data: RolloutDataModule, d0: Rollout) -> tuple[Student, dict[str, float]]:
        """pi' = DDPG(pi, D0): ``lookahead_updates`` updates on minibatches of D0 only."""
        actor_opt, critic_opt = self._student_optimizers()
        a_opt: Optimizer
        c_opt: Optimizer
        if self.meta_cfg.lookahead == "inplace":
            student, a_opt, c_opt = self.student, actor_opt, critic_opt
            backward: Callable[[torch.Tensor], None] = self._backward
        else:  # a throw-away copy trained with plain autograd, outside DDP's gradient averaging
            copy_student = lookahead_copy if self._compiled is None else self._compiled.lookahead_copy
            student, a_opt, c_opt = copy_student(self.student, actor_opt.optimizer, critic_opt.optimizer)
            backward = torch.Tensor.backward
        metrics = self._updates(
            student,
            a_opt,
            c_opt,
            self.meta_cfg.lookahead_updates,
            lambda: data.sample_rollout(d0, self.cfg.batch_size, self.device),
            backward,
        )
        return student, {f"lookahead/{k}": v for k, v in metrics.items()}

    def lookahead_actors(
        self, data: RolloutDataModule, segments: list[Rollout]
    ) -> tuple[list[Actor], dict[str, float]]:
        """The actors of the look-ahead students, one per D0 segment: one copy (the paper's) or K as one batch."""
        if len(segments) == 1:
            student, metrics = self.lookahead(data, segments[0])
            return [student.actor], metrics
        return self.batched_lookahead(data, segments)

    def batched_lookahead(
        self, data: RolloutDataModule, segments: list[Rollout]
    ) -> tuple[list[Actor], dict[str, float]]:
        """K look-ahead students, member k trained on minibatches of D0 segment k, as one batched update."""
        actor_opt, critic_opt = self._student_optimizers()
        stack = StackedLookahead(self.student, len(segments), actor_opt.optimizer, critic_opt.optimizer)
        cfg = self.cfg
        history = []
        for _ in range(self.meta_cfg.lookahead_updates):
            batch = stack_batches([data.sample_rollout(s, cfg.batch_size, self.device) for s in segments])
            history.append(stack.update(batch, gamma=cfg.gamma, tau=cfg.tau, critic_l2=cfg.critic_l2))
        actors = [stack.member_actor(k) for k in range(len(segments))]
        return actors, {f"lookahead/{k}": v for k, v in _mean_metrics(history).items()}

    def _student_optimizers(self) -> tuple[StudentOptimizer, StudentOptimizer]:
        """Actor and critic optimizers: Lightning's, or counted raw ones when nothing listens (fast_path.py)."""
        actor_opt, critic_opt = self.optimizers()[:2]  # type: ignore[index]
        if self._fast:
            return CountedOptimizer(actor_opt), CountedOptimizer(critic_opt)
        return actor_opt, critic_opt

    def teacher_step(self, segments: list[Rollout], meta_rewards: list[float]) -> dict[str, float]:
        """theta_e <- theta_e + eta * m * grad sum log pi_e(a|s) over D0 (slides eq. 2), via Adam.

        With K segments, segment k's log-likelihood is weighted by its meta-reward less the mean of the other
        K - 1 (a leave-one-out baseline), and the K terms are averaged. A frozen teacher (``teacher.lr = 0``)
        computes the same loss and diagnostics but takes no step.
        """
        advantages = self._advantages(meta_rewards)
        for m in meta_rewards:
            self._track_meta_reward(m)
        contexts = [s.context for s in segments]
        assert all(c is not None for c in contexts), "a learned teacher records its context in D0"
        context = torch.cat(contexts).to(self.device)  # type: ignore[arg-type]
        raw_action = torch.cat([s.raw_action for s in segments]).to(self.device)
        log_prob = self.exploration.log_prob(context, raw_action)
        per_segment = torch.split(log_prob, [len(s) for s in segments])
        loss = torch.stack([teacher_loss(lp, a) for lp, a in zip(per_segment, advantages, strict=True)]).mean()
        if not self.teacher_cfg.frozen:
            opt = self.optimizers()[2]  # type: ignore[index]
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()
            self._teacher_steps += 1
        teacher = self.teacher
        metrics = {
            "teacher/loss": float(loss.detach()),
            "teacher/log_std": float(teacher.head.log_std.detach().mean()),
            "teacher/log_prob": float(log_prob.detach().mean()),
            # the teacher as it will act in the next D0, on this D0's states
            "teacher/mean_spread": teacher.mean_spread(context),
            "teacher/sigma": teacher.sigma(),
            "teacher/steps": float(self._teacher_steps),
            "meta/snr": self._meta_reward_snr(),
        }
        if len(meta_rewards) == 1:
            metrics["teacher/shaped_reward"] = advantages[0]
        else:  # the spread of the K meta-rewards is what the leave-one-out advantages are made of
            metrics["meta/reward_spread"] = statistics.pstdev(meta_rewards)
        return metrics

    def _advantages(self, meta_rewards: list[float]) -> list[float]:
        """What multiplies each segment's log-likelihood: the shaped meta-reward (K = 1) or the leave-one-out
        advantage (K > 1)."""
        if len(meta_rewards) == 1:
            return [self._shape_meta_reward(meta_rewards[0])]
        return leave_one_out(meta_rewards)

    def _track_meta_reward(self, m: float) -> None:
        """Welford's running mean and variance of the raw meta-reward over every iteration so far."""
        self._raw_m_count += 1
        delta = m - self._raw_m_mean
        self._raw_m_mean += delta / self._raw_m_count
        self._raw_m_m2 += delta * (m - self._raw_m_mean)

    def _meta_reward_snr(self) -> float:
        """Running mean / running std of the raw meta-reward (NaN until two values with a spread exist)."""
        if self._raw_m_count < 2 or self._raw_m_m2 <= 0:
            return math.nan
        return self._raw_m_mean / math.sqrt(self._raw_m_m2 / (self._raw_m_count - 1))

    def student_updates(self, data: RolloutDataModule) -> dict[str, float]:
        """utd_ratio updates per environment step collected since the last call (same rule in both arms)."""
        self._update_credit += self.utd_ratio * (data.env_steps - self._steps_credited)
        self._steps_credited = data.env_steps
        n = int(self._update_credit)
        if self.trainer.world_size > 1:  # every rank must run the same number of gradient-averaging backwards
            n = int(self.trainer.strategy.reduce(torch.tensor(float(n), device=self.device), reduce_op="mean").round())
        self._update_credit -= n
        actor_opt, critic_opt = self._student_optimizers()
        metrics = self._updates(
            self.student,
            actor_opt,
            critic_opt,
            n,
            lambda: data.sample(self.cfg.batch_size, self.device),
            self._backward,
        )
        return {f"student/{k}": v for k, v in metrics.items()} | {"student/updates": float(n)}

    def _updates(
        self,
        student: Student,
        actor_opt: Optimizer,
        critic_opt: Optimizer,
        n: int,
        sample: Callable[[], Any],
        backward: Callable[[torch.Tensor], None],
    ) -> dict[str, float]:
        history: list[dict[str, torch.Tensor]] = []
        update = ddpg_update if self._compiled is None else self._compiled.update
        for _ in range(n):
            m = update(
                student,
                sample(),
                actor_opt,
                critic_opt,
                gamma=self.cfg.gamma,
                tau=self.cfg.tau,
                critic_l2=self.cfg.critic_l2,
                backward=backward,
            )
            history.append(m)
        return _mean_metrics(history)

    def _shape_meta_reward(self, m: float) -> float:
        """Optional baseline / normalization of the meta-reward (both off by default)."""
        cfg = self.meta_cfg
        shaped = m
        if cfg.baseline:
            shaped -= self._m_mean
        if cfg.normalize:
            shaped /= math.sqrt(self._m_var) + 1e-8
        if cfg.baseline or cfg.normalize:
            beta = cfg.stat_momentum
            delta = m - self._m_mean
            self._m_mean += (1 - beta) * delta
            self._m_var = beta * self._m_var + (1 - beta) * delta * delta
        return shaped

    def _rollout_student(self, data: RolloutDataModule, seed: int | None = None) -> Rollout:
        """R(pi) rollout of the live student: counted, and stored in the buffer."""
        rollout = data.collect_episodes(DeterministicPolicy(self.student.actor), self.meta_cfg.eval_episodes, seed)
        data.add(rollout)
        return rollout

    def _progress(self, data: RolloutDataModule, d0: Rollout) -> dict[str, float]:
        out = {"env_steps": float(data.env_steps)}
        if d0.episode_returns:
            out["train/episode_return"] = d0.mean_return
        return out

    @torch.no_grad()
    def _action_gap(self, data: RolloutDataModule, d0: Rollout) -> float:
        """Mean distance between the exploratory actions of D0 and the student's mu(s) on the same states,
        in units of half the action range (0 = no exploration)."""
        mu = self.student.actor(data.normalizer(d0.obs).to(self.device)).cpu()
        scale = self.student.actor.scale.half_range.cpu()
        return float(((d0.raw_action - mu) / scale).norm(dim=-1).mean())

    def _check_losses(self, metrics: dict[str, float], data: RolloutDataModule) -> None:
        """NaN/inf losses stop training. Parameters are checked before every checkpoint (on_save_checkpoint);
        between checkpoints a non-finite parameter shows up as a non-finite loss or action within an iteration."""
        bad = [
            k
            for k, v in metrics.items()
            if k.startswith(("student/", "lookahead/", "teacher/loss")) and not math.isfinite(v)
        ]
        if bad:
            self._diverged(bad, data.env_steps)

    def _check_parameters(self) -> None:
        dm = getattr(self._trainer, "datamodule", None)
        env_steps = dm.env_steps if isinstance(dm, RolloutDataModule) else -1
        with torch.no_grad():  # one test over all parameters at once, then the names only if one failed
            finite = bool(torch.isfinite(torch.nn.utils.parameters_to_vector(self.parameters())).all())
        if not finite:
            self._diverged(
                [f"parameter {name}" for name, p in self.named_parameters() if not bool(torch.isfinite(p).all())],
                env_steps,
            )

    def _diverged(self, what: list[str], env_steps: int) -> None:
        raise TrainingDiverged(
            f"Training diverged (found at iteration {self.global_step_iterations}, env step {env_steps}): "
            f"{', '.join(what)} became NaN or inf. Lower the learning rates or check the environment's rewards; "
            f"no checkpoint was written from this state, and the last one written before it is intact."
        )

    @property
    def global_step_iterations(self) -> int:
        return int(self.trainer.fit_loop.epoch_loop.batch_progress.total.completed) if self._trainer else 0

    # ------------------------------------------------------------------ evaluation
    def _maybe_evaluate(self, data: RolloutDataModule, last: bool) -> None:
        if data.env_steps >= self._next_eval or last:
            self.evaluate_and_record(data)
            self._next_eval = (data.env_steps // data.eval_every + 1) * data.eval_every

    def evaluate_and_record(self, data: RolloutDataModule) -> float:
        rollout = data.evaluate(DeterministicPolicy(self.student.actor))
        ret = rollout.mean_return
        if self.last_iteration is not None:
            self.last_iteration.evaluation = rollout
        row = {
            "env_steps": float(data.env_steps),
            "iteration": float(self.global_step_iterations + 1),
            "eval/return": ret,
            "r_pi": self.r_pi,
            "wall_time_s": time.perf_counter() - self._t0,
        }
        self.history.record(row)
        metrics = {"eval/return": ret, "eval/env_steps": float(data.env_steps)}
        # callback_metrics (progress bar, checkpoint monitors) get it through self.log; the loggers get it
        # directly, because Lightning writes only every log_every_n_steps iterations and would drop it
        self.log_dict(metrics, batch_size=1, prog_bar=True, logger=False)
        for logger in self.loggers:
            logger.log_metrics({**metrics, "env_steps": float(data.env_steps)}, step=self.global_step_iterations)
            logger.save()
        return ret

    def validation_step(self, batch: int, batch_idx: int) -> None:
        self.log("eval/return", self.data.evaluate(DeterministicPolicy(self.student.actor)).mean_return, batch_size=1)

    def test_step(self, batch: int, batch_idx: int) -> None:
        self.log("test/return", self.data.evaluate(DeterministicPolicy(self.student.actor)).mean_return, batch_size=1)

    # ------------------------------------------------------------------ checkpoints
    def on_train_end(self) -> None:
        self._check_parameters()  # the final weights, also when no checkpoint is written

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._check_parameters()  # a checkpoint never holds NaN or inf weights
        state = {
            "r_pi": self.r_pi,
            "steps_credited": self._steps_credited,
            "update_credit": self._update_credit,
            "next_eval": self._next_eval,
            "m_stats": (self._m_mean, self._m_var),
            "history": self.history.state_dict(),
            "exploration_state": getattr(self.exploration, "state", None),  # OU noise
            "teacher_steps": self._teacher_steps,
            "meta_reward_welford": (self._raw_m_count, self._raw_m_mean, self._raw_m_m2),
            "teacher_features": self._teacher_feature_state(),
        }
        checkpoint["meta_rl"] = gather_per_rank(self._trainer, state)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("meta_rl")
        if state is None:
            return
        state = own_rank(self._trainer, state)
        self.r_pi, self._steps_credited = state["r_pi"], state["steps_credited"]
        self._update_credit, self._next_eval = state["update_credit"], state["next_eval"]
        self._m_mean, self._m_var = state["m_stats"]
        self.history.load_state_dict(state["history"])
        if hasattr(self.exploration, "state"):
            self.exploration.state = state["exploration_state"]
        self._teacher_steps = int(state.get("teacher_steps", 0))
        self._raw_m_count, self._raw_m_mean, self._raw_m_m2 = state.get("meta_reward_welford", (0, 0.0, 0.0))
        if isinstance(self.exploration, LearnedTeacher):
            self.exploration.load_feature_state(state.get("teacher_features"))

    def _teacher_feature_state(self) -> dict[str, float] | None:
        return self.exploration.feature_state() if isinstance(self.exploration, LearnedTeacher) else None


def _mean_metrics(history: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Each metric's mean over an iteration's updates: one reduction per metric, not one addition per update."""
    return {k: float(torch.stack([m[k] for m in history]).mean()) for k in history[0]} if history else {}
