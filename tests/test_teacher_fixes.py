"""A fair test of the teacher (issue 12): the frozen-teacher control, Meta (State) with scaled critic and
actor features, a Meta (Variance) whose sigma can move within a run, and the diagnostics that say how
much the teacher learned (steps taken, the spread of its mean, its sigma, the meta-reward's running
signal-to-noise)."""

from __future__ import annotations

import copy
import io
import math
import shutil
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import SMOKE, TINY, clear_run_dir_env, finish_wandb, fit, params_snapshot, same

from lightning_meta_rl.cli import cli
from lightning_meta_rl.config import VARIANCE_STD_LR, TeacherConfig
from lightning_meta_rl.errors import ConfigError
from lightning_meta_rl.meta_reward import MetaRewardStats
from lightning_meta_rl.module import MetaRLModule
from lightning_meta_rl.networks import ActionScale, Student
from lightning_meta_rl.policies import ExplorationPolicy
from lightning_meta_rl.teachers import MetaStateTeacher, MetaTeacher, MetaVarianceTeacher
from lightning_meta_rl.types import Rollout

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = ["--trainer.callbacks=[]", "--trainer.enable_progress_bar=false", "--trainer.logger=false"]


class Recorder:
    """Spies on MetaRLModule while in its ``with`` block: every iteration's metrics and env-step span, the
    teacher before its first step and after its last."""

    def __init__(self) -> None:
        self.metrics: list[dict[str, float]] = []
        self.spans: list[int] = []
        self.first: list[torch.Tensor] | None = None
        self.last: list[torch.Tensor] | None = None
        self.patch = pytest.MonkeyPatch()

    def __enter__(self) -> Recorder:
        iteration, step = MetaRLModule.meta_iteration, MetaRLModule.teacher_step
        recorder = self

        def spy_iteration(module: MetaRLModule, data: Any) -> dict[str, float]:
            out = iteration(module, data)
            recorder.metrics.append(out)
            assert module.last_iteration is not None
            recorder.spans.append(module.last_iteration.env_steps - module.last_iteration.start_steps)
            return out

        def spy_step(module: MetaRLModule, d0: Rollout, meta_reward: float) -> dict[str, float]:
            if recorder.first is None:
                recorder.first = params_snapshot(module.exploration)
            out = step(module, d0, meta_reward)
            recorder.last = params_snapshot(module.exploration)
            return out

        self.patch.setattr(MetaRLModule, "meta_iteration", spy_iteration)
        self.patch.setattr(MetaRLModule, "teacher_step", spy_step)
        return self

    def __exit__(self, *exc: object) -> None:
        self.patch.undo()


# ----------------------------------------------------------------------------- the frozen teacher
def test_teacher_lr_zero_is_a_frozen_teacher_and_a_negative_lr_is_rejected() -> None:
    assert TeacherConfig(lr=0.0).frozen
    assert not TeacherConfig().frozen
    assert not TeacherConfig(kind="gaussian", lr=0.0).frozen  # fixed noise has nothing to freeze
    with pytest.raises(ConfigError, match="lr must be >= 0"):
        TeacherConfig(lr=-1e-3)
    with pytest.raises(ConfigError, match="frozen teacher"):
        TeacherConfig(lr=0.0, std_lr=0.1)  # a log-std that learns would not be frozen
    with pytest.raises(ConfigError, match="std_lr must be positive"):
        TeacherConfig(std_lr=0.0)


@pytest.mark.parametrize("kind", ["meta", "meta_variance"])
def test_frozen_teacher_never_changes_and_keeps_the_protocol(tmp_path: Path, kind: str) -> None:
    runs = {}
    for lr in ("0", "1e-3"):
        with Recorder() as rec:
            fit(
                tmp_path / f"lr{lr}",
                f"--model.teacher.kind={kind}",
                f"--model.teacher.lr={lr}",
                "--data.total_env_steps=1800",
                *QUIET,
            )
        runs[lr] = rec
    frozen, learned = runs["0"], runs["1e-3"]
    assert len(frozen.metrics) >= 3
    assert frozen.first is not None and frozen.last is not None
    assert same(frozen.last, frozen.first)  # bit-identical after every iteration
    assert learned.first is not None and learned.last is not None
    assert not same(learned.last, learned.first)
    # the same protocol: the same env steps in every iteration (D0, D1 and the R(pi) rollouts)
    assert frozen.spans == learned.spans
    assert [m["teacher/steps"] for m in frozen.metrics] == [0.0] * len(frozen.metrics)
    assert [m["teacher/steps"] for m in learned.metrics] == [float(k + 1) for k in range(len(learned.metrics))]
    for m in frozen.metrics:  # still measured and logged
        assert math.isfinite(m["meta/reward"]) and math.isfinite(m["teacher/loss"])
        assert math.isfinite(m["teacher/mean_spread"]) and m["teacher/sigma"] > 0
        assert m["teacher/displacement"] == 0.0 and m["teacher/kl_initial"] == 0.0  # it never moved
    # the learned teacher moved, and its distance from theta_0 is what the parameters say
    assert all(m["teacher/displacement"] > 0 and m["teacher/kl_initial"] > 0 for m in learned.metrics)
    moved = distance(learned.last, learned.first)
    assert learned.metrics[-1]["teacher/displacement"] == pytest.approx(moved, rel=1e-6)


# ----------------------------------------------------------------------------- Meta (State)
def state_teacher_and_student() -> tuple[MetaStateTeacher, Student, torch.Tensor]:
    torch.manual_seed(0)
    scale = ActionScale([-2.0, 0.0], [2.0, 0.5])
    student = Student(3, scale, [16, 16], True)
    teacher = MetaStateTeacher(3, scale, 0.2, False, [16], True)
    return teacher, student, torch.randn(64, 3)


def shift_critic(student: Student, offset: float, factor: float = 1.0) -> None:
    """Q -> factor * Q + offset, through the critic's output layer."""
    out = [m for m in student.critic.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        out.weight.mul_(factor)
        out.bias.mul_(factor).add_(offset)


def test_meta_state_q_feature_is_standardized_whatever_the_scale_of_q() -> None:
    """Raw Q of -150 swamped the first LayerNorm of f: the teacher acted alike in every state."""
    teacher, student, obs = state_teacher_and_student()
    teacher.refresh_features(obs, student)
    ctx = teacher.context(obs, student)
    spread = teacher.mean_spread(ctx)
    assert spread > 0.02
    q = ctx[:, 3]
    assert abs(float(q.mean())) < 1e-4 and float(q.std(correction=0)) == pytest.approx(1.0, abs=1e-3)

    shift_critic(student, offset=-150.0, factor=30.0)  # Pendulum-sized Q, far from 0
    with torch.no_grad():
        assert float(student.critic(obs, student.actor(obs)).mean()) < -100
    teacher.refresh_features(obs, student)
    shifted = teacher.context(obs, student)
    torch.testing.assert_close(shifted, ctx, atol=1e-4, rtol=1e-4)
    assert teacher.mean_spread(shifted) == pytest.approx(spread, rel=1e-3)


def test_meta_state_log_prob_is_of_the_action_taken_also_after_the_q_statistics_change() -> None:
    teacher, student, obs = state_teacher_and_student()
    shift_critic(student, offset=-80.0, factor=10.0)
    teacher.refresh_features(obs[:32], student)
    act = teacher.act(obs, student, torch.Generator().manual_seed(3))
    z = torch.randn(act.raw.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(act.raw, teacher.head.mean(act.context) + z * teacher.head.std())
        expected = torch.distributions.Normal(teacher.head.mean(act.context), teacher.head.std()).log_prob(act.raw)
        before = teacher.log_prob(act.context, act.raw)
        teacher.refresh_features(obs[32:], student)  # new statistics: the stored context keeps the old ones
        assert (teacher.q_mean, teacher.q_std) != pytest.approx((0.0, 1.0))
        after = teacher.log_prob(act.context, act.raw)
    torch.testing.assert_close(before, expected.sum(-1))
    assert torch.equal(after, before)


def test_meta_state_context_in_d0_is_the_one_in_force_at_the_teacher_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Student, observation statistics and Q statistics do not change between D0 and the teacher step, so
    the context the teacher sees again at its step is the one it acted on."""
    checked: list[float] = []
    step = MetaRLModule.teacher_step

    def spy(module: MetaRLModule, segments: list[Rollout], meta_rewards: list[float]) -> dict[str, float]:
        (d0,) = segments
        assert d0.context is not None
        with torch.no_grad():
            now = module.teacher.context(module.data.normalizer(d0.obs), module.student)
        # equal up to the rounding of one-row against batched forward passes (Q's std can be small)
        torch.testing.assert_close(now, d0.context, atol=1e-3, rtol=1e-3)
        checked.append(float(d0.context[:, 3].abs().max()))
        return step(module, segments, meta_rewards)

    monkeypatch.setattr(MetaRLModule, "teacher_step", spy)
    c = fit(tmp_path / "run", "--model.teacher.kind=meta_state", "--data.total_env_steps=2300", *QUIET)
    assert len(checked) >= 4
    assert max(checked) <= MetaStateTeacher.Q_CLIP
    assert c.model.teacher.q_std != 1.0  # the statistics were measured


def mean_spreads(tmp_path: Path, kind: str) -> list[float]:
    with Recorder() as rec:
        fit(tmp_path / kind, f"--model.teacher.kind={kind}", "--data.total_env_steps=8000", *QUIET)
    return [m["teacher/mean_spread"] for m in rec.metrics]


def test_meta_state_mean_spread_after_warm_up_is_within_2x_of_meta(tmp_path: Path) -> None:
    """A short Pendulum run, seed 0: the spread across D0 states of the teacher's mean action, averaged over
    the iterations after the first three (the critic has started to learn by then). With raw Q it was
    11x smaller than Meta's here."""
    meta = statistics.mean(mean_spreads(tmp_path, "meta")[3:])
    state = statistics.mean(mean_spreads(tmp_path, "meta_state")[3:])
    assert meta > 0.05
    assert meta / 2 <= state <= 2 * meta, (meta, state)


# ----------------------------------------------------------------------------- Meta (Variance)
def test_std_lr_defaults_leave_meta_and_meta_state_as_they_were() -> None:
    assert TeacherConfig(kind="meta", learn_std=True).log_std_lr == 1e-3
    assert TeacherConfig(kind="meta_state", learn_std=True, lr=3e-4).log_std_lr == 3e-4
    assert TeacherConfig(kind="meta_variance").log_std_lr == VARIANCE_STD_LR
    assert TeacherConfig(kind="meta_variance", std_lr=0.1).log_std_lr == 0.1
    assert TeacherConfig(kind="meta", learn_std=True, std_lr=0.1).log_std_lr == 0.1


@pytest.mark.parametrize(
    ("kind", "extra", "groups"),
    [
        ("meta", {}, [1e-3]),
        ("meta", {"learn_std": True}, [1e-3]),
        ("meta", {"learn_std": True, "std_lr": 0.05}, [1e-3, 0.05]),
        ("meta_state", {"learn_std": True, "std_lr": 0.05}, [1e-3, 0.05]),
        ("meta_variance", {}, [VARIANCE_STD_LR]),
        ("meta_variance", {"std_lr": 0.1}, [0.1]),
    ],
)
def test_teacher_optimizer_param_groups(kind: str, extra: dict[str, Any], groups: list[float]) -> None:
    model = MetaRLModule(3, 1, [-2.0], [2.0], teacher=TeacherConfig(kind=kind, hidden=(8,), **extra))  # type: ignore[arg-type]
    opt = model.configure_optimizers()[2]
    assert [g["lr"] for g in opt.param_groups] == groups
    in_groups = [p for g in opt.param_groups for p in g["params"]]
    assert sorted(map(id, in_groups)) == sorted(map(id, model.exploration.parameters()))
    if len(groups) == 2:
        assert opt.param_groups[1]["params"] == [model.exploration.head.log_std]


def fitted(tmp_path: Path, *overrides: str) -> Any:
    """A small fit whose module (optimizers and trainer still attached) the test then drives directly."""
    return fit(tmp_path / "run", *overrides, *QUIET)


def test_meta_variance_sigma_at_least_doubles_in_100_teacher_steps(tmp_path: Path) -> None:
    """A synthetic meta-reward that favours a larger sigma: m = mean over D0 of z^2 - 1, z the sampled
    deviation from mu(s) in units of the current std (positive when D0 deviated more than sigma predicts).
    At lr 1e-3 Adam moved log-std by about 1e-3 per step, so sigma grew 4% in 100 steps."""
    c = fitted(tmp_path, "--model.teacher.kind=meta_variance")
    model, data = c.model, c.datamodule
    teacher = model.teacher
    start = teacher.sigma()
    for _ in range(100):
        d0 = data.collect_steps(ExplorationPolicy(teacher, model.student, data.noise_rng), 100)
        z = (d0.raw_action - d0.context) / teacher.head.std().detach()
        out = model.teacher_step([d0], [float(z.pow(2).mean() - 1)])
    assert out["teacher/sigma"] == pytest.approx(teacher.sigma())
    assert teacher.sigma() >= 2 * start, (start, teacher.sigma())


# ----------------------------------------------------------------------------- the faithful default
@pytest.mark.parametrize("learn_std", ["false", "true"])
def test_default_meta_teacher_step_is_still_one_adam_step_on_the_reinforce_loss(tmp_path: Path, learn_std: str) -> None:
    """The new options off: the teacher's step is bit for bit what it was (one Adam group at teacher.lr on
    -m * mean log pi_e; the diagnostics only read)."""
    c = fitted(tmp_path, "--model.teacher.kind=meta", f"--model.teacher.learn_std={learn_std}")
    model, data = c.model, c.datamodule
    d0 = data.collect_steps(ExplorationPolicy(model.teacher, model.student, data.noise_rng), 100)
    opt = model.optimizers()[2].optimizer
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["lr"] == 1e-3
    twin = copy.deepcopy(model.exploration)
    twin_opt = torch.optim.Adam(list(twin.parameters()), lr=1e-3)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert d0.context is not None
    loss = -(2.5 * twin.log_prob(d0.context, d0.raw_action)).mean()
    twin_opt.zero_grad()
    loss.backward()
    twin_opt.step()
    model.teacher_step([d0], [2.5])
    assert same(params_snapshot(model.exploration), params_snapshot(twin))


# ----------------------------------------------------------------------------- diagnostics
def test_mean_spread_and_sigma_are_in_half_action_ranges() -> None:
    torch.manual_seed(0)
    scale = ActionScale([-1.0, 0.0], [3.0, 0.5])  # half ranges 2 and 0.25
    teacher = MetaTeacher(3, scale, 0.3, True, [8], False)
    with torch.no_grad():
        teacher.head.log_std.copy_(torch.log(torch.tensor([0.1, 0.4])))
    ctx = torch.randn(50, 3)
    mean = teacher.head.mean(ctx).detach()
    unit = mean / torch.tensor([2.0, 0.25])
    expected = statistics.mean(statistics.pstdev(unit[:, j].tolist()) for j in range(2))
    assert teacher.mean_spread(ctx) == pytest.approx(expected, rel=1e-5)
    assert teacher.sigma() == pytest.approx(0.25)
    same_state = ctx[:1].repeat(50, 1)
    assert teacher.mean_spread(same_state) == pytest.approx(0.0, abs=1e-6)


def test_teacher_steps_and_snr_of_the_raw_meta_reward(tmp_path: Path) -> None:
    """meta/snr is the running mean / running std over every iteration of the raw m, also when the teacher
    is fed a shaped one (baseline, normalize)."""
    c = fitted(tmp_path, "--model.meta.baseline=true", "--model.meta.normalize=true")
    model, data = c.model, c.datamodule
    steps0 = model.teacher_steps
    seen = [model.meta_stats.raw_mean] * model.meta_stats.count  # the fit's own iteration(s): count 1, so the mean is m
    assert model.meta_stats.count == 1
    d0 = data.collect_steps(ExplorationPolicy(model.teacher, model.student, data.noise_rng), 50)
    for k, m in enumerate([3.0, -1.0, 10.0, 4.5]):
        out = model.teacher_step([d0], [m])
        seen.append(m)
        assert out["teacher/steps"] == steps0 + k + 1
        snr = statistics.mean(seen) / statistics.stdev(seen)
        assert out["meta/snr"] == pytest.approx(snr, rel=1e-9)
        assert out["teacher/shaped_reward"] != m  # the teacher saw a shaped m; the snr is of the raw one


def test_snr_is_nan_until_the_meta_reward_has_a_spread() -> None:
    stats = MetaRewardStats()
    assert math.isnan(stats.snr())
    stats.advantages([2.0])
    assert math.isnan(stats.snr())
    stats.advantages([2.0])
    assert math.isnan(stats.snr())
    stats.advantages([5.0])
    assert stats.snr() == pytest.approx(3.0 / math.sqrt(3.0))


def run_cli(*args: str) -> Any:
    try:
        return cli(list(args))
    finally:
        finish_wandb()
        clear_run_dir_env()


def test_resume_restores_teacher_steps_snr_and_q_statistics(tmp_path: Path) -> None:
    """A run stopped after one iteration and resumed reports the diagnostics of an uninterrupted run."""
    args = ["--model.teacher.kind=meta_state", *QUIET]
    with Recorder() as rec:
        whole = fit(tmp_path / "whole", *args, "--data.total_env_steps=1800")
    expected = rec.metrics[-1]
    assert len(rec.metrics) == 3

    fit(tmp_path / "first", *args, "--data.total_env_steps=800")
    run_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "first", run_dir)
    with Recorder() as rec:
        resumed = run_cli(
            "fit", "--config", SMOKE, "--run_dir", str(run_dir), *TINY, *args, "--data.total_env_steps=1800",
            "--ckpt_path", "last",
        )  # fmt: skip
    got = rec.metrics[-1]
    assert len(rec.metrics) == 2
    for key in (
        "teacher/steps",
        "meta/snr",
        "meta/reward",
        "teacher/mean_spread",
        "teacher/sigma",
        "teacher/displacement",
        "teacher/kl_initial",
    ):
        assert got[key] == expected[key], key
    assert got["teacher/steps"] == 3.0 and math.isfinite(got["meta/snr"])
    assert (resumed.model.teacher.q_mean, resumed.model.teacher.q_std) == (
        whole.model.teacher.q_mean,
        whole.model.teacher.q_std,
    )


# ----------------------------------------------------------------------------- how far the teacher moved
def distance(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """||a - b||_2 over all the tensors, by hand."""
    return math.sqrt(sum(float((x - y).double().square().sum()) for x, y in zip(a, b, strict=True)))


def toy_teacher(seed: int = 0, learn_std: bool = True) -> MetaTeacher:
    torch.manual_seed(seed)
    return MetaTeacher(3, ActionScale([-2.0, 0.0], [2.0, 0.5]), 0.2, learn_std, [16], True)


def test_displacement_and_kl_are_zero_until_the_teacher_steps() -> None:
    teacher, ctx = toy_teacher(), torch.randn(32, 3)
    before = params_snapshot(teacher)
    out = teacher.diagnostics(ctx)
    assert out["teacher/displacement"] == 0.0 and out["teacher/kl_initial"] == 0.0
    opt = teacher.make_optimizer(1e-2, 1e-2)
    opt.zero_grad()
    teacher.log_prob(ctx, torch.randn(32, 2)).mean().backward()
    opt.step()
    out = teacher.diagnostics(ctx)
    moved = distance(params_snapshot(teacher), before)
    assert out["teacher/displacement"] == pytest.approx(moved, rel=1e-6) and moved > 0
    assert out["teacher/kl_initial"] > 0


def test_kl_from_the_initial_teacher_matches_a_hand_computation() -> None:
    teacher, ctx = toy_teacher(), torch.randn(16, 3)
    initial = copy.deepcopy(teacher)
    last = [m for m in teacher.head.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.bias.add_(torch.tensor([0.3, -0.2]))
        teacher.head.log_std.copy_(torch.log(torch.tensor([0.3, 0.15])))
        m1, m0 = teacher.head.mean(ctx).double(), initial.head.mean(ctx).double()
    half = torch.tensor([2.0, 0.25], dtype=torch.float64)
    s1, s0 = torch.tensor([0.3, 0.15], dtype=torch.float64) * half, 0.2 * half
    # KL(N(m1, s1^2) || N(m0, s0^2)) = log(s0 / s1) + (s1^2 + (m1 - m0)^2) / (2 s0^2) - 1/2, per dimension
    by_hand = (torch.log(s0 / s1) + (s1**2 + (m1 - m0) ** 2) / (2 * s0**2) - 0.5).sum(-1).mean()
    assert teacher.kl_initial(ctx) == pytest.approx(float(by_hand), rel=1e-5)
    # Meta (Variance): only sigma moves, so the KL is the same in every state: 1.5x sigma in both dimensions
    variance = MetaVarianceTeacher(ActionScale([-2.0, 0.0], [2.0, 0.5]), 0.2)
    with torch.no_grad():
        variance.head.log_std.add_(math.log(1.5))
    expected = 2 * (math.log(1 / 1.5) + 1.5**2 / 2 - 0.5)  # 0.4391
    assert variance.kl_initial(torch.randn(8, 2)) == pytest.approx(expected, rel=1e-5)


def test_theta_0_survives_a_checkpoint_and_older_checkpoints_still_load() -> None:
    teacher, ctx = toy_teacher(), torch.randn(8, 3)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.05)
    buf = io.BytesIO()
    torch.save({"weights": teacher.state_dict(), "extra": teacher.extra_state()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    resumed = toy_teacher(seed=1)  # built from another seed: its own theta_0 differs
    assert resumed.displacement() == 0.0
    resumed.load_state_dict(saved["weights"])
    resumed.load_extra_state(saved["extra"])
    assert resumed.displacement() == pytest.approx(teacher.displacement()) and teacher.displacement() > 0
    assert resumed.kl_initial(ctx) == pytest.approx(teacher.kl_initial(ctx))
    # written before theta_0 was kept: None (meta), the Q statistics alone (meta_state): loads, theta_0 unknown
    resumed.load_extra_state(None)
    assert math.isnan(resumed.diagnostics(ctx)["teacher/displacement"])
    assert math.isnan(resumed.diagnostics(ctx)["teacher/kl_initial"])
    state_teacher = state_teacher_and_student()[0]
    state_teacher.load_extra_state({"q_mean": -3.0, "q_std": 2.0})
    assert (state_teacher.q_mean, state_teacher.q_std) == (-3.0, 2.0)
    assert math.isnan(state_teacher.displacement())


def test_an_older_checkpoint_without_theta_0_loads_into_the_module(tmp_path: Path) -> None:
    fit(tmp_path / "run", "--model.teacher.kind=meta_state", *QUIET)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    state = ckpt["meta_rl"]["exploration"]
    module = MetaRLModule.load_from_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert isinstance(module.exploration, MetaStateTeacher) and module.exploration.displacement() > 0
    assert set(state["initial"]) == {n for n, _ in module.exploration.head.named_parameters()}
    del state["initial"]  # as written before theta_0 was kept
    torch.save(ckpt, tmp_path / "old.ckpt")
    old = MetaRLModule.load_from_checkpoint(tmp_path / "old.ckpt")
    assert isinstance(old.exploration, MetaStateTeacher)
    assert old.exploration.q_mean == state["q_mean"] and math.isnan(old.exploration.displacement())
