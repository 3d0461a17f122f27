"""One iteration of either arm for every member of a population (``--population``).

The Meta arm's steps are those of ``MetaRLModule.meta_iteration``, with K teacher samples per member, each done for
all members at once where it can be: D0 is collected in lockstep with one stacked student call and one call of
the members' stacked teachers per step; the members' look-ahead students are one stacked copy (K per member)
trained by one ``ddpg_step`` per update, each on its own D0 segment; D1 and R(pi) are the members' episodes in
lockstep (members whose episodes end sooner drop out of the batched call), one pass per sample; each member's
teacher takes its own step on its own meta-rewards; the student updates follow each member's own update credit
(``member_updates``, both arms).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from lightning_meta_rl.meta_reward import critic_improvement
from lightning_meta_rl.networks import Student
from lightning_meta_rl.population_data import PopulationDataModule
from lightning_meta_rl.teachers import LearnedTeacher
from lightning_meta_rl.types import Batch, IterationRecord, Rollout

if TYPE_CHECKING:
    from lightning_meta_rl.population import PopulationModule


def meta_iteration(pop: PopulationModule, data: PopulationDataModule) -> dict[str, float]:
    """Algorithm 1, one iteration, for every active member, with K = ``meta.samples`` teacher samples per member
    (above 1 every step runs once per sample, as in ``MetaRLModule.meta_iteration``); returns the metrics averaged
    over members."""
    cfg, start, device, K = pop.meta_cfg, data.env_steps, pop.device, pop.meta_cfg.samples
    # 1. D0 from each member's teacher as it is now: one segment of d0_steps per sample, each from its own
    # environment
    d0s = pop.collected(data.collect_lockstep(pop.active(), K * cfg.d0_steps, pop.explorer()))
    if not d0s:  # every member that collected was retired in it (the others had finished)
        return progress(data, d0s)
    active = list(d0s)
    segments = {k: [d0] if K == 1 else [d0.environment(i, K) for i in range(K)] for k, d0 in d0s.items()}
    # 2. the look-ahead students pi'_ki = DDPG(pi_k, D0_ki), stacked (member k's K copies in rows kK..kK+K-1),
    # each on minibatches of its own D0 segment
    size, n = pop.student_cfg.batch_size, cfg.lookahead_updates

    def batch() -> Batch:
        rows = {
            k * K + i: (k, data.members[k].sample_rollout_raw(seg, size))
            for k in active
            for i, seg in enumerate(segments[k])
        }
        return data.stacked(rows, pop.population * K, device)

    batches = (batch() for _ in range(n))
    actor_opt, critic_opt = pop._student_optimizers()
    if cfg.lookahead == "inplace":  # (K = 1 only)
        masks = None if len(active) == pop.population else [active] * n
        pop.learner.steps(pop.student, actor_opt, critic_opt, batches, None, masks)
        look_actor, look_metrics = pop.student.actor, {}
    else:
        copies = None if K == 1 else K
        rows = [k * K + i for k in active for i in range(K)]  # the metrics of the members that took part
        (look_actor,), metrics = pop.learner.lookahead(pop.student, actor_opt, critic_opt, copies, batches, rows)
        look_metrics = {f"lookahead/{k}": v for k, v in metrics.items()}
    looks = [look_actor] if K == 1 else [_Sample(look_actor, K, i) for i in range(K)]  # pi'_.i of every member
    # 3. the meta-rewards: D1 rollouts against R(pi), or the student's critic
    d1s: dict[int, list[Rollout]] = {}
    r_before = {k: pop.r_pis[k] for k in active}
    if cfg.reward == "critic":
        obs = data.sample_stacked(cfg.critic_states, device, active).obs
        improvements = [critic_improvement(pop.student.critic, pop.student.actor, look, obs) for look in looks]
        rewards = {k: [float(imp[k]) for imp in improvements] for k in active}
        r_before = {k: math.nan for k in active}
    else:
        # K > 1 look-aheads start from one common reset seed per member (as a single run's do)
        paired = cfg.paired_evaluation or K > 1
        seeds = {k: data.members[k].pairing_seed() for k in active} if paired else None
        if cfg.paired_evaluation:  # R(pi) again from the same reset seeds as D1, stored
            for k, rollout in pop.episodes(active, pop.student.actor, seeds).items():
                data.members[k].add(rollout)
                r_before[k] = rollout.mean_return
        for look in looks:
            for k, d1 in pop.episodes([k for k in active if k not in pop.retired], look, seeds).items():
                d1s.setdefault(k, []).append(d1)
        d1s = {k: d for k, d in d1s.items() if k not in pop.retired and len(d) == K}
        rewards = {k: [d1.mean_return - r_before[k] for d1 in d] for k, d in d1s.items()}
    # 4. each member's teacher steps on its own meta-rewards
    teacher_metrics = teacher_steps(pop, {k: segments[k] for k in rewards}, rewards)
    # 5. D0 and D1 into each member's buffer
    for k in active:
        for rollout in (d0s[k], *d1s.get(k, [])):
            data.members[k].add(rollout)
    # 6. the members' student updates, then their new R(pi) (stored too)
    student_metrics = member_updates(pop, data)
    students = pop.episodes(pop.active(), pop.student.actor) if d1s else {}
    for k, rollout in students.items():
        data.members[k].add(rollout)
        pop.r_pis[k] = rollout.mean_return
    for k in pop.active():  # meta_state: the Q statistics of the student that acts in the next D0
        teacher = pop.member_exploration(k)
        if isinstance(teacher, LearnedTeacher) and teacher.scaled_features:
            recent = torch.cat([r.obs for r in (d0s[k], *d1s.get(k, []), students.get(k)) if r is not None])
            member = cast(Student, _Member(pop.student, k, pop.population))
            teacher.refresh_features(data.members[k].normalizer(recent).to(device), member)
    d1_all = {k: Rollout.concat(d) for k, d in d1s.items()}
    first = active[0] if active else next(iter(d0s))
    meta_reward = {k: _mean(m) for k, m in rewards.items()}
    pop.last_iteration = IterationRecord(
        start,
        data.env_steps,
        d0s[first],
        d1_all.get(first),
        students.get(first),
        meta_reward=meta_reward.get(first, math.nan),
    )
    return {
        "meta/reward": _mean(meta_reward.values()),
        "meta/r_pi_before": _mean(r_before[k] for k in rewards),
        "meta/r_pi_prime": _mean(r.mean_return for r in d1_all.values()) if d1_all else math.nan,
        "meta/r_pi": _mean(pop.r_pis[k] for k in pop.active()),
        **look_metrics,
        **teacher_metrics,
        **student_metrics,
        **progress(data, d0s),
    }


def ddpg_iteration(pop: PopulationModule, data: PopulationDataModule) -> dict[str, float]:
    """The DDPG arm: each member's d0_steps of noisy data into its buffer, then the members' updates."""
    start = data.env_steps
    if pop.teacher_cfg.kind == "param":  # it perturbs the plain actors: they take the members' current weights
        pop._sync_actors()
    d0s = pop.collected(data.collect_lockstep(pop.active(), pop.meta_cfg.d0_steps, pop.explorer()))
    if not d0s:  # every member that collected was retired in it (the others had finished)
        return progress(data, d0s)
    for k, d0 in d0s.items():
        data.members[k].add(d0)
    pop.last_iteration = IterationRecord(start, data.env_steps, next(iter(d0s.values())))
    return member_updates(pop, data) | progress(data, d0s)


def member_updates(pop: PopulationModule, data: PopulationDataModule) -> dict[str, float]:
    """Each member's updates earned by its own steps (utd_ratio per step collected) as stacked steps, in
    which a member with fewer updates due sits out the rest unchanged; metrics averaged over the steps
    each member took."""
    due = {}
    for k in pop.active():
        due[k] = pop.credits[k].due(data.members[k].env_steps)
        pop.credits[k].spend(due[k])
    actives = [[k for k, n in due.items() if n > j] for j in range(max(due.values(), default=0))]
    masks = None if all(len(a) == pop.population for a in actives) else actives
    batches = (data.sample_stacked(pop.student_cfg.batch_size, pop.device, a) for a in actives)
    actor_opt, critic_opt = pop._student_optimizers()
    history = pop.learner.steps(pop.student, actor_opt, critic_opt, batches, None, masks)
    for k in pop.non_finite_members():
        pop.retire(k, "its parameters became NaN or inf")
    out = {"student/updates": sum(due.values()) / max(len(due), 1)}
    if history:
        taken = torch.zeros(len(actives), pop.population)
        for j, a in enumerate(actives):
            taken[j, a] = 1.0
        for key in history[0]:
            values = torch.stack([m[key] for m in history]).nan_to_num() * taken
            out[f"student/{key}"] = float(values.sum() / taken.sum())
    return out


def progress(data: PopulationDataModule, d0s: dict[int, Rollout]) -> dict[str, float]:
    out = {"env_steps": float(data.env_steps)}
    returns = [d.mean_return for d in d0s.values() if d.episode_returns]
    if returns:
        out["train/episode_return"] = sum(returns) / len(returns)
    return out


def teacher_steps(
    pop: PopulationModule, segments: dict[int, list[Rollout]], rewards: dict[int, list[float]]
) -> dict[str, float]:
    """Each member's teacher update by the meta-policy gradient on its own D0 segments and meta-rewards (one
    backward pass through the sum of the members' losses: each teacher's gradient is its own loss's). A frozen
    teacher computes the same loss and diagnostics but takes no step."""
    losses, records = [], []
    for k, m in rewards.items():
        teacher = pop.member_exploration(k)
        assert isinstance(teacher, LearnedTeacher)
        advantages = pop.member_stats[k].advantages(m)
        loss, log_prob, context = teacher.meta_loss(segments[k], advantages, pop.device)
        losses.append(loss)
        records.append((k, teacher, loss, log_prob, context, m, advantages))
    if losses and not pop.teacher_cfg.frozen:
        opts = pop.optimizers()[2:]  # type: ignore[index]
        for k in rewards:
            opts[k].zero_grad()
        pop.manual_backward(torch.stack(losses).sum())
        for k in rewards:
            opts[k].step()
        pop.teacher_steps += 1
    per_member = [
        {
            "teacher/loss": float(loss.detach()),
            "teacher/log_prob": float(log_prob.detach().mean()),
            "teacher/steps": float(pop.teacher_steps),
            **teacher.diagnostics(context),  # the teacher as it will act in the next D0, on this D0's states
            **pop.member_stats[k].metrics(m, advantages),
        }
        for k, teacher, loss, log_prob, context, m, advantages in records
    ]
    return {key: _mean(d[key] for d in per_member) for key in per_member[0]} if per_member else {}


class _Sample(nn.Module):
    """Sample i's look-ahead actor of every member, from the look-ahead copies of a population stacked K per
    member (``Student.stacked``): ``[N, ...]`` observations in, member n's pi'_ni actions out."""

    def __init__(self, actor: nn.Module, samples: int, index: int) -> None:
        super().__init__()
        self.actor, self.samples, self.index = actor, samples, index

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.actor(obs.repeat_interleave(self.samples, 0))
        return out.unflatten(0, (obs.shape[0], self.samples))[:, self.index]


class _Member:
    """Member k of a stacked student, as a teacher's features read it (its actor and critic on member k's
    states), by the stacked networks themselves: each member computes on the same states, row k is kept."""

    def __init__(self, student: Student, k: int, members: int) -> None:
        self.student, self.k, self.members = student, k, members

    def actor(self, obs: torch.Tensor) -> torch.Tensor:
        return self.student.actor(obs.expand(self.members, *obs.shape))[self.k]

    def critic(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        n = self.members
        return self.student.critic(obs.expand(n, *obs.shape), action.expand(n, *action.shape))[self.k]


def _mean(values: object) -> float:
    listed = [float(v) for v in values]  # type: ignore[attr-defined]
    return sum(listed) / len(listed) if listed else math.nan
