"""MetaRLModule: owns the DDPG student and the exploration (teacher or noise); one ``training_step`` is one
iteration of Algorithm 1 (the Meta arm), or one DDPG iteration for the baseline arm."""

from __future__ import annotations

import math
import os
from typing import Any

import lightning as L
import torch

from lightning_meta_rl.adam import make_adam
from lightning_meta_rl.checkpoint import upgrade_module_state
from lightning_meta_rl.config import MetaConfig, StudentConfig, TeacherConfig, check_with_data
from lightning_meta_rl.divergence import check_losses, check_parameters
from lightning_meta_rl.evaluation import Evaluation
from lightning_meta_rl.exploration import action_gap, build_exploration
from lightning_meta_rl.learner import Learner, Reduce
from lightning_meta_rl.meta_reward import MetaRewardStats, critic_improvement
from lightning_meta_rl.networks import ActionScale, Actor, Student
from lightning_meta_rl.policies import DeterministicPolicy, ExplorationPolicy, UniformPolicy
from lightning_meta_rl.ranks import attached_trainer, average_across, gather_per_rank, own_rank
from lightning_meta_rl.runtime import global_seed, warn_if_unseeded
from lightning_meta_rl.schedule import LogCadence, UpdateCredit
from lightning_meta_rl.teachers import LearnedTeacher
from lightning_meta_rl.trainlog import TrainLog
from lightning_meta_rl.types import IterationRecord, Rollout, RolloutEngine

__all__ = ["MetaConfig", "MetaRLModule", "StudentConfig", "TeacherConfig"]


class MetaRLModule(L.LightningModule):
    """DDPG student + meta-policy-gradient teacher.

    The student is trained by the learner (learner.py) with its two Adam optimizers, outside Lightning's
    optimizer loop; the teacher takes one step per iteration through Lightning (manual optimization).

    Args:
        obs_dim, act_dim, action_low, action_high: environment facts, linked from the DataModule.
        student: the DDPG student's settings.
        teacher: the exploration: a learned teacher (Meta arm) or fixed noise (DDPG arm).
        meta: Algorithm 1's settings (ignored by the DDPG arm except ``d0_steps``, its steps per iteration).
        utd_ratio: student updates per environment step collected, the same in both arms.
        compile: run the student's update (live and look-ahead) through ``torch.compile``: faster steady-state
            updates after a start-up cost of compiling it.
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
        if len(action_low) != act_dim or len(action_high) != act_dim:
            raise ValueError(f"action bounds have {len(action_low)}/{len(action_high)} entries, expected {act_dim}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.student_cfg, self.teacher_cfg, self.meta_cfg, self.utd_ratio = student, teacher, meta, utd_ratio
        scale = ActionScale(action_low, action_high)
        self.student = Student(obs_dim, scale, student.hidden, student.layer_norm)
        self.exploration = build_exploration(teacher, obs_dim, scale, student.layer_norm)
        self.learner = Learner(student.gamma, student.tau, student.critic_l2, compile)
        self.credit = UpdateCredit(utd_ratio)
        self.meta_stats = MetaRewardStats(meta.baseline, meta.normalize, meta.stat_momentum)
        self.evaluation = Evaluation()
        self.r_pi = math.nan  # R(pi): deterministic return of the student after the last iteration
        self.iteration = 0  # iterations run (the one under way included)
        self.teacher_steps = 0  # optimizer steps the teacher has taken (stays 0 for a frozen teacher)
        self.last_iteration: IterationRecord | None = None  # for callbacks (media, diagnostics)
        self.cadence = LogCadence()  # which iterations' metrics reach the loggers
        self.train_log = TrainLog()  # and <run_dir>/train_metrics.csv
        self._reduce: Reduce | None = None  # set when training starts: gradient averaging across processes
        self._seed_at_build = global_seed()  # the initial weights' seed, if any (checked when a fresh fit starts)

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
    def data(self) -> RolloutEngine:
        return self.trainer.datamodule  # type: ignore[attr-defined]

    @property
    def history(self) -> Any:
        return self.evaluation.history

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        cfg = self.student_cfg
        opts: list[torch.optim.Optimizer] = [
            make_adam(self.student.actor.parameters(), cfg.actor_lr),
            make_adam(self.student.critic.parameters(), cfg.critic_lr),
        ]
        if self.is_meta:
            opts.append(self.teacher.make_optimizer(self.teacher_cfg.lr, self.teacher_cfg.log_std_lr))
        return opts

    def setup(self, stage: str) -> None:
        self.check_data(self.data)

    def on_fit_start(self) -> None:
        if self.trainer.ckpt_path is None:  # a fresh fit: its initial weights are the ones built here
            warn_if_unseeded(self._seed_at_build)

    def check_data(self, data: RolloutEngine) -> None:
        """Reject settings that only conflict across the model and the data (the CLI asks before any output)."""
        check_with_data(self.student_cfg, self.meta_cfg if self.is_meta else None, data.buffer_size, data.num_envs)

    def on_train_start(self) -> None:
        data = self.data
        self._reduce = average_across(self.trainer.strategy, self.trainer.world_size)  # DDP: averaged gradients
        data.restore_pending_state()
        self.train_log.start(self.trainer.default_root_dir if self.trainer.is_global_zero else None, self.iteration)
        path = os.path.join(self.trainer.default_root_dir, "metrics.csv") if self.trainer.is_global_zero else None
        self.evaluation.start(path, data.env_steps, data.eval_every)
        if data.env_steps > 0:  # resumed from a checkpoint: warm-up and first R(pi) are done
            return
        if data.warmup_steps > 0:  # both arms: uniformly random actions, stored, counted, no update yet
            data.add(data.collect_steps(UniformPolicy(self.student.actor.scale, data.noise_rng), data.warmup_steps))
        self.credit.steps_credited = data.env_steps
        if self.is_meta and self.meta_cfg.reward == "return":
            self.r_pi = self._rollout_student().mean_return

    # ------------------------------------------------------------------ one iteration
    def training_step(self, batch: int, batch_idx: int) -> None:
        data = self.data
        self.iteration += 1
        metrics = self.meta_iteration(data) if self.is_meta else self.ddpg_iteration(data)
        check_losses(metrics, self.iteration, data.env_steps)
        self.cadence.pending = metrics
        # every rank stops together, as soon as one has spent its budget (DDP needs the same step count)
        stop = self.trainer.strategy.reduce_boolean_decision(data.budget_spent, all=False)
        if stop:
            self.trainer.should_stop = True
        if self.evaluation.due(data.env_steps, last=stop):
            self.evaluate_and_record(data)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # after every callback's hook (a Timer may have set should_stop there); log_dict costs milliseconds,
        # so it is called only for the iterations whose metrics Lightning writes
        if self._metrics_written(self.trainer.should_stop) and self.cadence.pending:
            metrics = self.cadence.take()
            self.log_dict(metrics, on_step=True, prog_bar=False, batch_size=1)
            self.train_log.append(self.iteration, metrics)

    def _metrics_written(self, last: bool) -> bool:
        return self.cadence.written(self.iteration, self.trainer.log_every_n_steps, last)  # type: ignore[attr-defined]

    def meta_iteration(self, data: RolloutEngine) -> dict[str, float]:
        """Algorithm 1, one iteration, with K = ``meta.samples`` teacher samples (K = 1: the paper's method;
        above 1 every step below runs once per sample)."""
        cfg, start = self.meta_cfg, data.env_steps
        # 1. D0 from the teacher as it is now: one segment of d0_steps per sample, each from its own environment
        d0 = data.collect_steps(
            ExplorationPolicy(self.exploration, self.student, data.noise_rng), cfg.samples * cfg.d0_steps
        )
        segments = [d0] if cfg.samples == 1 else [d0.environment(i, cfg.samples) for i in range(cfg.samples)]
        # measured before the student changes: the rollouts below may end the run, so whether this
        # iteration's metrics are written is not known yet
        gap = self._action_gap(data, d0)
        # 2. look-ahead students pi'_k = DDPG(pi, D0_k), trained by the same update as the student
        actors, look_metrics = self.lookahead(data, segments)
        d1s: list[Rollout] = []
        r_pi = self.r_pi
        if cfg.reward == "critic":  # option: the student's critic judges pi' against pi on replay states
            r_pi = math.nan
            obs = data.sample(cfg.critic_states, self.device).obs
            meta_rewards = [float(critic_improvement(self.student.critic, self.student.actor, a, obs)) for a in actors]
        else:
            # 3. D1: each pi'_k rolled out deterministically. K > 1 look-aheads start from one common reset
            # seed, so that the leave-one-out comparison is not start-state noise
            seed = data.pairing_seed() if cfg.paired_evaluation or cfg.samples > 1 else None
            if cfg.paired_evaluation:  # option: R(pi) from the same reset seeds as D1 (common random numbers)
                r_pi = self._rollout_student(seed).mean_return
            d1s = [data.collect_episodes(DeterministicPolicy(a), cfg.eval_episodes, seed) for a in actors]
            # 4. meta-rewards
            meta_rewards = [d1.mean_return - r_pi for d1 in d1s]
        # 5. teacher update by the meta-policy gradient
        teacher_metrics = self.teacher_step(segments, meta_rewards)
        # 6. D0 and D1 into the replay buffer
        for rollout in (d0, *d1s):
            data.add(rollout)
        # 7. student updates on the buffer, then the new R(pi) (its rollout is stored too)
        student_metrics = self.student_updates(data)
        student_rollout = self._rollout_student() if d1s else None
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

    def ddpg_iteration(self, data: RolloutEngine) -> dict[str, float]:
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

    # ------------------------------------------------------------------ the steps
    def lookahead(self, data: RolloutEngine, segments: list[Rollout]) -> tuple[list[Actor], dict[str, float]]:
        """pi'_k = DDPG(pi, D0_k): ``lookahead_updates`` updates on minibatches of D0 segment k only (learner.py)."""
        cfg, size = self.meta_cfg, self.student_cfg.batch_size
        actors, metrics = self.learner.lookahead_on(
            self.student,
            *self._student_optimizers(),
            segments,
            lambda segment: data.sample_rollout(segment, size, self.device),
            cfg.lookahead_updates,
            cfg.lookahead == "inplace",
            self._reduce,
        )
        return actors, {f"lookahead/{k}": v for k, v in metrics.items()}

    def teacher_step(self, segments: list[Rollout], meta_rewards: list[float]) -> dict[str, float]:
        """theta_e <- theta_e + eta * m * grad sum log pi_e(a|s) over D0 (slides eq. 2), via Adam.

        With K segments, segment k's log-likelihood is weighted by its meta-reward less the mean of the other
        K - 1 (a leave-one-out baseline), and the K terms are averaged. A frozen teacher (``teacher.lr = 0``)
        computes the same loss and diagnostics but takes no step.
        """
        advantages = self.meta_stats.advantages(meta_rewards)
        loss, log_prob, context = self.teacher.meta_loss(segments, advantages, self.device)
        if not self.teacher_cfg.frozen:
            opt = self.optimizers()[2]  # type: ignore[index]
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()
            self.teacher_steps += 1
        return {
            "teacher/loss": float(loss.detach()),
            "teacher/log_prob": float(log_prob.detach().mean()),
            "teacher/steps": float(self.teacher_steps),
            **self.teacher.diagnostics(context),  # the teacher as it will act in the next D0, on this D0's states
            **self.meta_stats.metrics(meta_rewards, advantages),
        }

    def student_updates(self, data: RolloutEngine) -> dict[str, float]:
        """utd_ratio updates per environment step collected since the last call (same rule in both arms)."""
        n = self.credit.due(data.env_steps)
        if self.trainer.world_size > 1:  # every rank must take the same number of gradient-averaged steps
            n = int(self.trainer.strategy.reduce(torch.tensor(float(n), device=self.device), reduce_op="mean").round())
        self.credit.spend(n)
        actor_opt, critic_opt = self._student_optimizers()
        batches = (data.sample(self.student_cfg.batch_size, self.device) for _ in range(n))
        metrics = self.learner.update(self.student, actor_opt, critic_opt, batches, self._reduce)
        return {f"student/{k}": v for k, v in metrics.items()} | {"student/updates": float(n)}

    def _student_optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """The student's torch optimizers (held by Lightning for checkpoints; stepped by the learner)."""
        actor_opt, critic_opt = self.optimizers()[:2]  # type: ignore[index]
        return actor_opt.optimizer, critic_opt.optimizer

    def _rollout_student(self, seed: int | None = None) -> Rollout:
        """R(pi) rollout of the live student: counted, and stored in the buffer."""
        rollout = self.data.collect_episodes(DeterministicPolicy(self.student.actor), self.meta_cfg.eval_episodes, seed)
        self.data.add(rollout)
        return rollout

    def _action_gap(self, data: RolloutEngine, d0: Rollout) -> float:
        return action_gap(d0, self.student.actor, data.normalizer)  # before the student changes

    def _progress(self, data: RolloutEngine, d0: Rollout) -> dict[str, float]:
        out = {"env_steps": float(data.env_steps)}
        if d0.episode_returns:
            out["train/episode_return"] = d0.mean_return
        return out

    # ------------------------------------------------------------------ evaluation
    def evaluate_and_record(self, data: RolloutEngine) -> float:
        rollout = data.evaluate(DeterministicPolicy(self.student.actor))
        ret = rollout.mean_return
        if self.last_iteration is not None:
            self.last_iteration.evaluation = rollout
        self.evaluation.record(data.env_steps, data.eval_every, self.iteration, ret, self.r_pi)
        metrics = {"eval/return": ret, "eval/env_steps": float(data.env_steps)}
        # callback_metrics (progress bar, checkpoint monitors) get it through self.log; the loggers get it
        # directly, because Lightning writes only every log_every_n_steps iterations and would drop it
        self.log_dict(metrics, batch_size=1, prog_bar=True, logger=False)
        self.evaluation.publish(self.loggers, metrics | {"env_steps": float(data.env_steps)}, step=self.iteration - 1)
        return ret

    def validation_step(self, batch: int, batch_idx: int) -> None:
        self.log("eval/return", self.data.evaluate(DeterministicPolicy(self.student.actor)).mean_return, batch_size=1)

    def test_step(self, batch: int, batch_idx: int) -> None:
        self.log("test/return", self.data.evaluate(DeterministicPolicy(self.student.actor)).mean_return, batch_size=1)

    # ------------------------------------------------------------------ checkpoints
    def on_train_end(self) -> None:  # the final weights, also when no checkpoint is written
        check_parameters(self, self.iteration, self.data.env_steps)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_parameters(self, self.iteration, self.data.env_steps)  # a checkpoint never holds NaN or inf weights
        state = {name: part.state_dict() for name, part in self._parts().items()}
        state |= {"r_pi": self.r_pi, "iteration": self.iteration, "teacher_steps": self.teacher_steps}
        state["exploration"] = self.exploration.extra_state()
        checkpoint["meta_rl"] = gather_per_rank(self.trainer, state)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get("meta_rl") is None:
            return
        state = upgrade_module_state(own_rank(attached_trainer(self), checkpoint["meta_rl"]), checkpoint)
        for name, part in self._parts().items():
            part.load_state_dict(state[name])
        self.r_pi, self.iteration, self.teacher_steps = state["r_pi"], state["iteration"], state["teacher_steps"]
        self.exploration.load_extra_state(state["exploration"])

    def _parts(self) -> dict[str, Any]:
        """The parts whose state a checkpoint holds, each saving and loading its own."""
        return {"credit": self.credit, "meta_reward": self.meta_stats, "evaluation": self.evaluation}
