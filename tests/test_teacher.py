"""The learned teachers: REINFORCE sign and scale, what each variant learns, the look-ahead copy,
and that D0 always comes from the teacher as it is after the previous update."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import fit, params_snapshot, same

from lightning_meta_rl.adam import AdamState, make_adam
from lightning_meta_rl.config import TeacherConfig
from lightning_meta_rl.exploration import KINDS, GaussianNoise, OUNoise, build_exploration
from lightning_meta_rl.learner import Learner
from lightning_meta_rl.losses import teacher_loss
from lightning_meta_rl.module import MetaRLModule
from lightning_meta_rl.networks import ActionScale, Student
from lightning_meta_rl.policies import ExplorationPolicy
from lightning_meta_rl.teachers import MetaStateTeacher, MetaTeacher, MetaVarianceTeacher
from lightning_meta_rl.types import Batch

LOW, HIGH = [-1.0, 0.0], [3.0, 0.5]


def toy_teacher() -> tuple[MetaTeacher, Student]:
    torch.manual_seed(0)
    scale = ActionScale([-2.0], [2.0])
    return MetaTeacher(1, scale, sigma=0.3, learn_std=False, hidden=[8], layer_norm=False), Student(
        1, scale, [8, 8], False
    )


def d0_above_mean(teacher: MetaTeacher, student: Student, n: int = 32):
    """n teacher samples at a fixed state, reflected so that every action lies above the current mean."""
    obs = torch.full((n, 1), 0.3)
    with torch.no_grad():  # as in the Collector: samples carry no graph
        act = teacher.act(obs, student, torch.Generator().manual_seed(1))
        mean = teacher.head.mean(act.context)
    raw = mean + (act.raw - mean).abs() + 1e-3
    return act.context, raw, obs


def mean_after_sgd_step(m: float) -> tuple[float, float]:
    teacher, student = toy_teacher()
    ctx, raw, obs = d0_above_mean(teacher, student)
    before = float(teacher.head.mean(obs[:1]).detach())
    opt = torch.optim.SGD(teacher.parameters(), lr=0.05)
    opt.zero_grad()
    teacher_loss(teacher.log_prob(ctx, raw), m).backward()
    opt.step()
    return before, float(teacher.head.mean(obs[:1]).detach())


def test_reinforce_positive_meta_reward_moves_mean_toward_d0() -> None:
    before, after = mean_after_sgd_step(1.0)
    assert after > before


def test_reinforce_negative_meta_reward_moves_mean_away_from_d0() -> None:
    before, after = mean_after_sgd_step(-1.0)
    assert after < before


def test_reinforce_zero_meta_reward_is_no_update() -> None:
    before, after = mean_after_sgd_step(0.0)
    assert after == before


def test_reinforce_gradient_is_linear_in_meta_reward() -> None:
    teacher, student = toy_teacher()
    ctx, raw, _ = d0_above_mean(teacher, student)
    params = list(teacher.parameters())
    g1 = torch.autograd.grad(teacher_loss(teacher.log_prob(ctx, raw), 0.75), params)
    g2 = torch.autograd.grad(teacher_loss(teacher.log_prob(ctx, raw), 1.5), params)
    assert any(float(g.abs().max()) > 0 for g in g1)
    for a, b in zip(g1, g2, strict=True):
        assert torch.equal(b, 2 * a)  # doubling is exact in floating point


def test_sgd_step_size_scales_with_meta_reward() -> None:
    b1, a1 = mean_after_sgd_step(0.5)
    b2, a2 = mean_after_sgd_step(1.0)
    assert b1 == b2
    assert (a2 - b2) == pytest.approx(2 * (a1 - b1), rel=0.05)


# ----------------------------------------------------------------------------- variants
@pytest.fixture
def student() -> Student:
    torch.manual_seed(0)
    return Student(3, ActionScale(LOW, HIGH), [16, 16], True)


def test_meta_variance_learns_only_log_std(student: Student) -> None:
    teacher = MetaVarianceTeacher(student.actor.scale, sigma=0.2)
    params = list(teacher.parameters())
    assert len(params) == 1 and params[0] is teacher.head.log_std
    student_ids = {id(p) for p in student.parameters()}
    assert not any(id(p) in student_ids for p in params)
    obs = torch.randn(6, 3)
    act = teacher.act(obs, student, torch.Generator().manual_seed(0))
    torch.testing.assert_close(teacher.head.mean(act.context), student.actor(obs))  # N(mu(s), Sigma)
    teacher_loss(teacher.log_prob(act.context, act.raw), 1.0).backward()
    assert teacher.head.log_std.grad is not None
    assert all(p.grad is None for p in student.parameters())  # the actor is never trained by the teacher


def test_meta_state_context_is_detached_obs_q_mu(student: Student) -> None:
    teacher = MetaStateTeacher(3, student.actor.scale, 0.2, False, [16], False)
    obs = torch.randn(5, 3)
    ctx = teacher.context(obs, student)
    assert ctx.shape == (5, 3 + 1 + 2)
    assert not ctx.requires_grad
    mu = student.actor(obs)
    torch.testing.assert_close(ctx[:, :3], obs)
    torch.testing.assert_close(ctx[:, 3], student.critic(obs, mu))
    torch.testing.assert_close(student.actor.scale(ctx[:, 4:]), mu)  # mu(s), in unit coordinates
    act = teacher.act(obs, student, torch.Generator().manual_seed(0))
    teacher_loss(teacher.log_prob(act.context, act.raw), 1.0).backward()
    assert all(p.grad is None for p in student.parameters())
    assert all(p.grad is not None for p in teacher.parameters())


def test_meta_teacher_is_independent_of_student(student: Student) -> None:
    teacher = MetaTeacher(3, student.actor.scale, 0.2, True, [16], False)
    student_ids = {id(p) for p in student.parameters()}
    assert not any(id(p) in student_ids for p in teacher.parameters())
    assert any(p is teacher.head.log_std for p in teacher.parameters())  # learn_std=True


@pytest.mark.parametrize("kind", KINDS)
def test_exploration_actions_are_clipped_raw_actions(student: Student, kind: str) -> None:
    exp = build_exploration(TeacherConfig(kind=kind, sigma=2.0, hidden=(16,)), 3, student.actor.scale, False)
    policy = ExplorationPolicy(exp, student, torch.Generator().manual_seed(0))
    acts = [policy.act(torch.randn(1, 3)) for _ in range(200)]
    raw = torch.cat([a.raw for a in acts])
    executed = torch.cat([a.executed for a in acts])
    low, high = torch.tensor(LOW), torch.tensor(HIGH)
    assert bool((executed >= low).all()) and bool((executed <= high).all())
    torch.testing.assert_close(executed, torch.maximum(torch.minimum(raw, high), low))
    if kind == "param":  # the perturbed actor's tanh output lies in the box whatever the noise
        assert bool(((raw >= low) & (raw <= high)).all())
    else:
        assert bool(((raw < low) | (raw > high)).any())  # sigma 2 really left the box
    assert exp.learned == (kind in ("meta", "meta_state", "meta_variance"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gaussian_noise_is_exactly_the_torch_formula(dtype: torch.dtype) -> None:
    """GaussianNoise computes on the host in numpy; its actions must equal torch's arithmetic bit for bit
    (the committed benchmark results were produced by the torch version)."""
    torch.manual_seed(0)
    # half ranges that are not powers of two, so that a different order of the products rounds differently
    student = Student(3, ActionScale([-0.3, -1.7], [0.9, 2.2]), [16, 16], False).to(dtype)
    actor = student.actor
    obs = torch.randn(64, 3, dtype=dtype)
    with torch.no_grad():
        mu = actor(obs)
    z = torch.randn(mu.shape, generator=torch.Generator().manual_seed(5)).to(dtype)
    scale = actor.scale
    expected_raw = z * 0.7 * scale.half_range + mu
    act = GaussianNoise(scale, 0.7).act(obs, student, torch.Generator().manual_seed(5))
    assert act.raw.dtype == dtype
    assert torch.equal(act.raw, expected_raw)
    assert torch.equal(act.executed, torch.clamp(expected_raw, scale.low, scale.high))


def test_gaussian_noise_of_a_half_precision_actor_is_computed_in_float32() -> None:
    torch.manual_seed(0)
    student = Student(3, ActionScale([-0.3, -1.7], [0.9, 2.2]), [16, 16], False).to(torch.bfloat16)
    obs = torch.randn(8, 3, dtype=torch.bfloat16)
    with torch.no_grad():
        mu = student.actor(obs).float()
    z = torch.randn(mu.shape, generator=torch.Generator().manual_seed(5))
    scale = ActionScale([-0.3, -1.7], [0.9, 2.2])
    act = GaussianNoise(student.actor.scale, 0.7).act(obs, student, torch.Generator().manual_seed(5))
    assert act.raw.dtype == act.executed.dtype == torch.float32
    assert torch.equal(act.raw, z * 0.7 * scale.half_range + mu)
    assert torch.equal(act.executed, torch.clamp(act.raw, scale.low, scale.high))


def test_fixed_noise_has_no_log_prob(student: Student) -> None:
    with pytest.raises(TypeError):
        GaussianNoise(student.actor.scale, 0.2).log_prob(torch.zeros(1, 2), torch.zeros(1, 2))


def test_ou_noise_restarts_each_episode(student: Student) -> None:
    ou = OUNoise(student.actor.scale, sigma=0.5)
    obs = torch.randn(1, 3)
    g = torch.Generator().manual_seed(0)
    first = ou.act(obs, student, g).raw
    for _ in range(20):
        ou.act(obs, student, g)
    ou.reset(0)
    assert ou.state is not None and torch.equal(ou.state, torch.zeros_like(ou.state))
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(ou.act(obs, student, g2).raw, first)


def test_ou_noise_state_from_the_collector_can_be_reset_outside_it(student: Student) -> None:
    ou = OUNoise(student.actor.scale, sigma=0.5)
    with torch.inference_mode():  # as in Collector._loop
        ou.act(torch.randn(1, 3), student, torch.Generator().manual_seed(0))
    ou.reset(0)
    assert ou.state is not None and torch.equal(ou.state, torch.zeros_like(ou.state))


def test_ou_noise_restarts_only_the_environment_that_reset(student: Student) -> None:
    ou = OUNoise(student.actor.scale, sigma=0.5)
    obs = torch.randn(3, 3)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        ou.act(obs, student, g)
    assert ou.state is not None
    before = ou.state.clone()
    ou.reset(1)
    assert torch.equal(ou.state[1], torch.zeros_like(ou.state[1]))
    assert torch.equal(ou.state[0], before[0]) and torch.equal(ou.state[2], before[2])


# ----------------------------------------------------------------------------- look-ahead copy
def random_batch(g: torch.Generator, n: int = 16) -> Batch:
    low, high = torch.tensor(LOW), torch.tensor(HIGH)
    return Batch(
        torch.randn(n, 3, generator=g),
        low + torch.rand(n, 2, generator=g) * (high - low),
        torch.randn(n, generator=g),
        torch.randn(n, 3, generator=g),
        (torch.rand(n, generator=g) < 0.2).float(),
    )


def trained_student(student: Student):
    a_opt = make_adam(list(student.actor.parameters()), 1e-3)
    c_opt = make_adam(list(student.critic.parameters()), 1e-3)
    g = torch.Generator().manual_seed(0)
    # three updates, so that Adam state exists
    Learner(gamma=0.99, tau=0.01, critic_l2=0.01).update(student, a_opt, c_opt, [random_batch(g) for _ in range(3)])
    return a_opt, c_opt


def optimizer_state(opt: torch.optim.Optimizer) -> dict:
    return copy.deepcopy(opt.state_dict()["state"])


def run_lookahead(student: Student, a_opt, c_opt, learner: Learner | None = None) -> Student:
    learner = learner or Learner(gamma=0.99, tau=0.05, critic_l2=0.01)
    g = torch.Generator().manual_seed(1)
    learner.lookahead(student, a_opt, c_opt, None, [random_batch(g) for _ in range(20)])
    return learner._copies[None][0]


def test_lookahead_leaves_student_params_and_targets_untouched(student: Student) -> None:
    a_opt, c_opt = trained_student(student)
    snap = {
        name: params_snapshot(getattr(student, name)) for name in ("actor", "critic", "actor_target", "critic_target")
    }
    clone = run_lookahead(student, a_opt, c_opt)
    for name, before in snap.items():
        assert same(params_snapshot(getattr(student, name)), before), name
    assert not same(params_snapshot(clone.actor), snap["actor"])
    assert not same(params_snapshot(clone.critic), snap["critic"])
    assert not same(params_snapshot(clone.critic_target), snap["critic_target"])
    assert not any(p is q for p, q in zip(clone.parameters(), student.parameters(), strict=True))


def test_lookahead_copy_starts_from_student_adam_state(student: Student) -> None:
    a_opt, c_opt = trained_student(student)
    learner = Learner(gamma=0.99, tau=0.05, critic_l2=0.01)
    learner.lookahead(student, a_opt, c_opt, None, [])  # copies made, no update taken
    _, copy_actor, copy_critic, *_ = learner._copies[None]
    for opt, kept in ((a_opt, copy_actor), (c_opt, copy_critic)):
        live = AdamState.of(opt)
        for field in ("exp_avg", "exp_avg_sq", "step"):
            pairs = zip(getattr(live, field), getattr(kept, field), strict=True)
            assert all(torch.equal(a, b) and a is not b for a, b in pairs), field


def test_lookahead_leaves_student_optimizer_state_untouched(student: Student) -> None:
    a_opt, c_opt = trained_student(student)
    before = {"actor": optimizer_state(a_opt), "critic": optimizer_state(c_opt)}
    run_lookahead(student, a_opt, c_opt)
    after = {"actor": optimizer_state(a_opt), "critic": optimizer_state(c_opt)}
    for opt_name in before:
        for idx, st in before[opt_name].items():
            for key, value in st.items():
                assert torch.equal(after[opt_name][idx][key], value), f"{opt_name} optimizer state {idx}.{key} changed"


# ----------------------------------------------------------------------------- D0 from the current teacher
def test_d0_is_collected_by_the_teacher_as_updated_in_the_previous_iteration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before: list[list[torch.Tensor]] = []  # teacher params just before update k
    after: list[list[torch.Tensor]] = []  # ... and just after it
    used: dict[int, list[torch.Tensor]] = {}  # params acting when D0 is collected, keyed by updates done so far

    original_step = MetaRLModule.teacher_step

    def spy_step(self, d0, meta_reward):
        before.append(params_snapshot(self.exploration))
        out = original_step(self, d0, meta_reward)
        after.append(params_snapshot(self.exploration))
        return out

    original_act = ExplorationPolicy.act

    def spy_act(self, obs):
        used.setdefault(len(after), params_snapshot(self.exploration))
        return original_act(self, obs)

    monkeypatch.setattr(MetaRLModule, "teacher_step", spy_step)
    monkeypatch.setattr(ExplorationPolicy, "act", spy_act)
    fit(tmp_path / "run", "--data.total_env_steps=1500")  # warm-up + R(pi) 400, then 500 per iteration

    assert len(after) >= 3, "need several iterations"
    assert sorted(used) == list(range(len(after)))  # exactly one D0 per iteration, before its update
    assert same(used[0], before[0])
    for k in range(1, len(after)):
        assert not same(after[k - 1], before[k - 1]), f"teacher update {k - 1} changed nothing"
        assert same(used[k], after[k - 1]), f"D0 of iteration {k + 1} did not use the freshly updated teacher"
        assert not same(used[k], before[k - 1]), f"D0 of iteration {k + 1} used a stale teacher"
