"""The one DDPG update (learner.py) and its uses: the live student, the look-ahead copy, stacked members and
torch.compile. Held to the numbers the code computed at 3f172b0 (tests/golden), before the update was
written once, and each use held to the plain update."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import fit, read_metrics
from torch._dynamo.utils import counters

from lightning_meta_rl.adam import AdamState, make_adam, per_member_steps
from lightning_meta_rl.learner import Learner, ddpg_step, update_guards
from lightning_meta_rl.members import member_layout
from lightning_meta_rl.networks import ActionScale, Student
from lightning_meta_rl.types import Batch

pytestmark = pytest.mark.usefixtures("one_thread")

GOLDEN = Path(__file__).parent / "golden" / "updates_3f172b0.pt"
TOL = {"atol": 1e-5, "rtol": 1e-5}


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(GOLDEN, weights_only=False)


def golden_student(golden: dict) -> tuple[Student, torch.optim.Adam, torch.optim.Adam]:
    s = Student(11, ActionScale(*golden["bounds"]), (64, 64), True)
    s.load_state_dict(golden["initial"])
    return s, make_adam(s.actor.parameters(), 1e-4), make_adam(s.critic.parameters(), 1e-3)


def as_row(m: dict[str, float]) -> torch.Tensor:
    return torch.tensor([m["critic_loss"], m["actor_loss"], m["q"]])


def test_the_live_update_computes_what_3f172b0_computed_update_by_update(golden: dict) -> None:
    """50 updates on the same batches: every update's metrics and every tenth update's weights agree within
    1e-5. Not bit for bit: the golden numbers were made on one CPU, and another CPU's kernels (AVX2, AVX-512,
    AMX) round differently; bit-identity with 3f172b0 is shown on one machine by benchmarks/bit_identical.py."""
    student, actor_opt, critic_opt = golden_student(golden)
    learner = Learner(**golden["hp"])
    for i, batch in enumerate(golden["batches"]):
        row = as_row(learner.update(student, actor_opt, critic_opt, [batch]))
        torch.testing.assert_close(row, golden["metrics"][i], **TOL, msg=f"update {i + 1}")
        if (i + 1) in golden["snapshots"]:
            for name, value in student.state_dict().items():
                expected = golden["snapshots"][i + 1][name]
                torch.testing.assert_close(value, expected, **TOL, msg=f"{name} after {i + 1} updates")


def test_the_lookahead_copy_and_stacked_members_compute_what_3f172b0_computed(golden: dict) -> None:
    student, actor_opt, critic_opt = golden_student(golden)
    learner = Learner(**golden["hp"])
    learner.update(student, actor_opt, critic_opt, golden["batches"])
    before = {k: v.clone() for k, v in student.state_dict().items()}

    (actor,), metrics = learner.lookahead(student, actor_opt, critic_opt, None, golden["lookahead_batches"])
    torch.testing.assert_close(as_row(metrics), golden["lookahead_metrics"].mean(0), **TOL)
    for name, value in learner._copies[None][0].state_dict().items():
        torch.testing.assert_close(value, golden["lookahead_final"][name], **TOL, msg=name)
    assert all(p is q for p, q in zip(actor.parameters(), learner._copies[None][0].actor.parameters(), strict=True))

    actors, metrics = learner.lookahead(student, actor_opt, critic_opt, 3, golden["stacked_batches"])
    torch.testing.assert_close(as_row(metrics), golden["stacked_metrics"].mean(0), **TOL)
    stacked = learner._copies[3][0]
    for k, actor in enumerate(actors):  # each member (3f172b0 stacked in the ordinary layers' layout)
        member = stacked.member(k)
        for net, expected in golden["stacked_final"].items():
            for p, q in zip(getattr(member, net).parameters(), expected, strict=True):
                torch.testing.assert_close(p, q[k], **TOL, msg=f"{net} of member {k}")
        for p, q in zip(actor.parameters(), member.actor.parameters(), strict=True):  # the plain actor handed
            assert torch.equal(p, q)  # to the rollouts is the member
    for name, value in student.state_dict().items():  # the look-aheads never touch the student
        assert torch.equal(value, before[name]), name


def random_batches(n: int, lead: tuple[int, ...] = (), obs_dim: int = 5, act_dim: int = 2, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*lead, *shape, generator=g)

    return [
        Batch(
            r(32, obs_dim),
            torch.rand(*lead, 32, act_dim, generator=g) * 1.5 - 1,
            r(32),
            r(32, obs_dim),
            r(32).gt(1).float(),
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize(("hidden", "layer_norm"), [((16, 16), True), ((8, 12, 6), False)])
def test_member_k_of_a_stacked_student_learns_what_the_student_alone_learns_on_its_batches(
    hidden: tuple[int, ...], layer_norm: bool
) -> None:
    """The member dimension is a transformation of the one update: stacked member k after n steps equals a
    copy of the student trained alone on member k's minibatches (Adam state included)."""
    torch.manual_seed(0)
    student = Student(5, ActionScale([-1.0, -2.0], [1.0, 0.5]), hidden, layer_norm)
    actor_opt, critic_opt = make_adam(student.actor.parameters(), 1e-3), make_adam(student.critic.parameters(), 1e-3)
    learner = Learner(0.99, 0.05, 1e-2)
    learner.update(student, actor_opt, critic_opt, random_batches(3, seed=1))  # Adam state to start from
    stacked = random_batches(6, lead=(3,), seed=2)
    actors, _ = learner.lookahead(student, actor_opt, critic_opt, 3, stacked)
    stack = learner._copies[3][0]
    for k in range(3):
        (alone,), _ = Learner(0.99, 0.05, 1e-2).lookahead(
            student, actor_opt, critic_opt, None, [Batch(*(f[k] for f in b)) for b in stacked]
        )
        for p, q in zip(alone.parameters(), actors[k].parameters(), strict=True):
            torch.testing.assert_close(p, q, **TOL)
    for net in ("critic", "actor_target", "critic_target"):
        for p in getattr(stack, net).parameters():
            assert p.shape[0] == 3 and not torch.equal(p[0], p[1])  # the members learned different things


def test_adam_state_is_torchs_own_and_creating_it_moves_nothing() -> None:
    torch.manual_seed(0)
    student = Student(4, ActionScale([-1.0], [1.0]), (8, 8), True)
    opt = make_adam(student.critic.parameters(), 1e-3)
    before = [p.detach().clone() for p in student.critic.parameters()]
    state = AdamState.of(opt)
    assert all(torch.equal(p, q) for p, q in zip(student.critic.parameters(), before, strict=True))
    assert all(float(s) == 0.0 for s in state.step) and all(not t.any() for t in state.exp_avg)
    reference = make_adam(Student(4, ActionScale([-1.0], [1.0]), (8, 8), True).critic.parameters(), 1e-3)
    for p in reference.param_groups[0]["params"]:
        p.grad = torch.zeros_like(p)
    reference.step()  # the state torch creates by itself
    for p, q in zip(opt.param_groups[0]["params"], reference.param_groups[0]["params"], strict=True):
        assert {k: (v.dtype, v.device, v.shape) for k, v in opt.state[p].items()} == {
            k: (v.dtype, v.device, v.shape) for k, v in reference.state[q].items()
        }
    with pytest.raises(TypeError, match="plain"):
        AdamState.of(torch.optim.Adam(student.actor.parameters(), amsgrad=True))


def test_what_reduce_returns_is_what_adam_applies() -> None:
    """The DDP seam: every gradient goes through ``reduce`` before its Adam step (zeroed here: nothing moves
    but the targets' polyak averaging)."""
    torch.manual_seed(0)
    student = Student(5, ActionScale([-1.0, -2.0], [1.0, 0.5]), (16, 16), True)
    actor_opt, critic_opt = make_adam(student.actor.parameters(), 1e-3), make_adam(student.critic.parameters(), 1e-3)
    seen: list[int] = []

    def zero(grads: list[torch.Tensor]) -> list[torch.Tensor]:
        seen.append(len(grads))
        return [torch.zeros_like(g) for g in grads]

    before = {k: v.clone() for k, v in student.state_dict().items()}
    a, c = AdamState.of(actor_opt), AdamState.of(critic_opt)
    ddpg_step(student, a, c, random_batches(1)[0], 0.99, 0.05, 1e-2, reduce=zero)
    assert seen == [len(c.step), len(a.step)]  # the critic's gradients, then the actor's
    for name, value in student.state_dict().items():
        if name.startswith(("actor.", "critic.")):
            assert torch.equal(value, before[name]), name


def unique_graphs() -> int:
    return int(counters["stats"]["unique_graphs"])


def test_the_compiled_update_matches_eager_and_compiles_each_use_once(golden: dict) -> None:
    """torch.compile(ddpg_step) on the golden student and batches (Hopper's sizes, the default learning rates):
    the live student, look-ahead copies twice and stacked members agree with the eager update, and a second
    look-ahead reuses what the first compiled. (On tiny random networks at a high actor learning rate, Adam
    magnifies the float differences of near-zero actor gradients past 1e-5; at these settings they stay
    below 1e-6.)"""
    torch._dynamo.reset()
    out = []
    for compiled in (False, True):
        student, actor_opt, critic_opt = golden_student(golden)
        learner = Learner(**golden["hp"], compile=compiled)
        before = unique_graphs()
        learner.update(student, actor_opt, critic_opt, golden["batches"][:20])
        if compiled:  # one graph for the live student, from its first update on
            assert unique_graphs() == before + 1, "the live student's update compiled more than once"
        learner.lookahead(student, actor_opt, critic_opt, None, golden["lookahead_batches"][:5])
        graphs = unique_graphs()
        again, _ = learner.lookahead(student, actor_opt, critic_opt, None, golden["lookahead_batches"][5:])
        assert unique_graphs() == graphs, "the second look-ahead copy compiled again"
        stacked, _ = learner.lookahead(student, actor_opt, critic_opt, 3, golden["stacked_batches"][:5])
        learner.update(student, actor_opt, critic_opt, golden["batches"][20:30])
        out.append([*again, *stacked, student])
    for eager, comp in zip(*out, strict=True):
        for (name, x), (_, y) in zip(eager.state_dict().items(), comp.state_dict().items(), strict=True):
            torch.testing.assert_close(y, x, **TOL, msg=name)


QUIET = ["--trainer.callbacks=[]", "--trainer.enable_progress_bar=false", "--trainer.logger=false"]


def test_a_compiled_fit_evaluates_like_eager_and_resumes(tmp_path: Path) -> None:
    """Meta arm (student, look-ahead copy, teacher): the same evaluations within a tolerance, the same
    checkpoint keys, and a resumed compiled run that continues."""
    run = [*QUIET, "--data.total_env_steps=1800", "--data.eval_every=400"]
    eager = fit(tmp_path / "eager", *run)
    comp = fit(tmp_path / "comp", *run, "--model.compile=true")
    assert comp.model.learner.compiled and not eager.model.learner.compiled

    def returns(run_dir: Path) -> list[float]:
        return [float(r["eval/return"]) for r in read_metrics(run_dir)[1]]

    e_ret, c_ret = returns(tmp_path / "eager"), returns(tmp_path / "comp")
    assert len(c_ret) == len(e_ret) >= 3
    assert c_ret == pytest.approx(e_ret, rel=1e-3)
    ckpt = torch.load(tmp_path / "comp" / "checkpoints" / "last.ckpt", weights_only=False)
    eager_ckpt = torch.load(tmp_path / "eager" / "checkpoints" / "last.ckpt", weights_only=False)
    assert list(ckpt["state_dict"]) == list(eager_ckpt["state_dict"])
    steps = comp.datamodule.env_steps
    fit(tmp_path / "comp", *QUIET, "--model.compile=true", "--data.total_env_steps=2800", "--ckpt_path", "last")
    after = returns(tmp_path / "comp")
    assert after[: len(c_ret)] == c_ret and len(after) > len(c_ret) and steps < 2800


def three_members() -> tuple[list[Student], list, list, Student, AdamState, AdamState]:
    """Three differently initialised students, each with its own Adam state after 1, 2 and 3 updates, and the
    population stacked from them (parameters and Adam state in the members' layout)."""
    singles, actor_opts, critic_opts = [], [], []
    for seed in range(3):
        torch.manual_seed(seed)
        s = Student(5, ActionScale([-1.0, -2.0], [1.0, 0.5]), (16, 16), True)
        a, c = make_adam(s.actor.parameters(), 1e-3), make_adam(s.critic.parameters(), 1e-3)
        Learner(0.99, 0.05, 1e-2).update(s, a, c, random_batches(seed + 1, seed=10 + seed))  # own Adam state
        singles.append(s)
        actor_opts.append(a)
        critic_opts.append(c)
    actor_adam = AdamState.stack([AdamState.of(o) for o in actor_opts], member_layout(singles[0].actor))
    critic_adam = AdamState.stack([AdamState.of(o) for o in critic_opts], member_layout(singles[0].critic))
    return singles, actor_opts, critic_opts, Student.stack(singles), actor_adam, critic_adam


def test_a_population_member_takes_the_step_its_seed_takes_alone() -> None:
    """Three differently initialised students with their own Adam state (and step counts 1, 2, 3), stacked into
    one: a stacked step moves member k as its student's own step moves it (within 1e-5; the batched products
    sum in another order), each by its own Adam step count, and member k comes back out as an ordinary
    student. A masked step (members 0 and 2) leaves member 1 exactly as it was: parameters, targets, Adam
    moments and step count."""
    singles, actor_opts, critic_opts, population, actor_adam, critic_adam = three_members()
    assert actor_adam.step[0].tolist() == [1.0, 2.0, 3.0]
    batches = random_batches(2, lead=(3,), seed=20)
    ddpg_step(population, actor_adam, critic_adam, batches[0], 0.99, 0.05, 1e-2)
    before = {n: t.clone() for n, t in population.state_dict().items()}
    adam_before = [t.clone() for t in (*critic_adam.exp_avg, *critic_adam.exp_avg_sq, *critic_adam.step)]
    ddpg_step(population, actor_adam, critic_adam, batches[1], 0.99, 0.05, 1e-2, active=[0, 2])
    for name, t in population.state_dict().items():
        if t.dim() > 0 and t.shape[0] == 3:
            assert torch.equal(t[1], before[name][1]), name
    after = [*critic_adam.exp_avg, *critic_adam.exp_avg_sq, *critic_adam.step]
    assert all(torch.equal(x[1], y[1]) for x, y in zip(after, adam_before, strict=True))
    assert actor_adam.step[0].tolist() == [3.0, 3.0, 5.0]
    for k, (single, a, c) in enumerate(zip(singles, actor_opts, critic_opts, strict=True)):
        for batch in batches[: 1 if k == 1 else 2]:
            ddpg_step(single, AdamState.of(a), AdamState.of(c), Batch(*(f[k] for f in batch)), 0.99, 0.05, 1e-2)
        member = population.member(k)
        assert type(member.actor.net[0]) is torch.nn.Linear
        for (name, x), (_, y) in zip(single.state_dict().items(), member.state_dict().items(), strict=True):
            torch.testing.assert_close(y, x, **TOL, msg=name)
    with pytest.raises(ValueError, match="one Adam step count per member"):
        ddpg_step(
            singles[0], AdamState.of(actor_opts[0]), AdamState.of(critic_opts[0]), batches[0], 0.99, 0.05, 0, active=[0]
        )


def test_eager_updates_of_members_stepping_apart_move_every_tensor_as_one_update_at_a_time() -> None:
    """Step counts 1, 2, 3 and members sitting out in turn, eager: ``Learner.steps``, whose updates share the
    member slices of the parameters, targets and Adam state (made once per call), leaves every parameter, target,
    moment and step count bit for bit where the same updates taken one ``ddpg_step`` at a time leave them (each
    making its slices afresh). Slices kept for one update's set of members and reused for the next would not."""

    def population() -> tuple[Student, torch.optim.Adam, torch.optim.Adam]:
        *_, stacked, actor_adam, critic_adam = three_members()
        a, c = make_adam(stacked.actor.parameters(), 1e-3), make_adam(stacked.critic.parameters(), 1e-3)
        for opt, state in ((a, actor_adam), (c, critic_adam)):
            per_member_steps(opt, 3)
            AdamState.of(opt).copy_from(state)
        return stacked, a, c

    batches = random_batches(4, lead=(3,), seed=20)
    actives = [[0, 2], [1], None, [0, 1]]
    shared, a1, c1 = population()
    Learner(0.99, 0.05, 1e-2).steps(shared, a1, c1, batches, None, actives)
    apart, a2, c2 = population()
    for batch, active in zip(batches, actives, strict=True):
        ddpg_step(apart, AdamState.of(a2), AdamState.of(c2), batch, 0.99, 0.05, 1e-2, active=active)
    assert AdamState.of(a1).step[0].tolist() == [4.0, 5.0, 5.0]
    for (name, x), (_, y) in zip(shared.state_dict().items(), apart.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    for one, other in ((a1, a2), (c1, c2)):
        for x, y in zip(one.state.values(), other.state.values(), strict=True):
            assert all(torch.equal(x[key], y[key]) for key in ("exp_avg", "exp_avg_sq", "step"))


def test_members_with_large_step_counts_step_together_as_their_single_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Step counts 20000, 20005, 20010: each member's bias corrections are 1 to float32, so the stacked Adam runs on
    the whole tensors (no member slices), moves each member as its own Adam would, and adds one to every count."""
    import lightning_meta_rl.adam as adam_module

    singles, actor_opts, critic_opts = [], [], []
    for seed in range(3):
        torch.manual_seed(seed)
        s = Student(5, ActionScale([-1.0, -2.0], [1.0, 0.5]), (16, 16), True)
        a, c = make_adam(s.actor.parameters(), 1e-3), make_adam(s.critic.parameters(), 1e-3)
        Learner(0.99, 0.05, 1e-2).update(s, a, c, random_batches(1, seed=10 + seed))
        for opt in (a, c):
            for state in opt.state.values():
                state["step"].fill_(20000 + 5 * seed)
        singles.append(s)
        actor_opts.append(a)
        critic_opts.append(c)
    population = Student.stack(singles)
    actor_adam = AdamState.stack([AdamState.of(o) for o in actor_opts], member_layout(singles[0].actor))
    critic_adam = AdamState.stack([AdamState.of(o) for o in critic_opts], member_layout(singles[0].critic))
    (batch,) = random_batches(1, lead=(3,), seed=20)
    with monkeypatch.context() as m:
        m.setattr(adam_module, "member_slices", lambda *a, **k: pytest.fail("sliced"))
        ddpg_step(population, actor_adam, critic_adam, batch, 0.99, 0.05, 1e-2)
    assert critic_adam.step[0].tolist() == [20001.0, 20006.0, 20011.0]
    for k, (single, a, c) in enumerate(zip(singles, actor_opts, critic_opts, strict=True)):
        ddpg_step(single, AdamState.of(a), AdamState.of(c), Batch(*(f[k] for f in batch)), 0.99, 0.05, 1e-2)
        for (name, x), (_, y) in zip(
            single.state_dict().items(), population.member(k).state_dict().items(), strict=True
        ):
            torch.testing.assert_close(y, x, **TOL, msg=name)


def test_a_compiled_population_step_corrects_each_member_by_its_own_step_count() -> None:
    """Step counts 1, 2, 3: the compiled stacked step (torch's capturable Adam on the whole tensors) moves each
    member as its own eager step moves its student; with member 0's count for all, members 1 and 2 would
    step by another bias correction and differ far beyond the tolerance."""
    singles, actor_opts, critic_opts, population, actor_adam, critic_adam = three_members()
    (batch,) = random_batches(1, lead=(3,), seed=20)
    Learner(0.99, 0.05, 1e-2, compile=True).step(population, actor_adam, critic_adam, batch, None)
    assert critic_adam.step[0].tolist() == [2.0, 3.0, 4.0]
    for k, (single, a, c) in enumerate(zip(singles, actor_opts, critic_opts, strict=True)):
        ddpg_step(single, AdamState.of(a), AdamState.of(c), Batch(*(f[k] for f in batch)), 0.99, 0.05, 1e-2)
        for (name, x), (_, y) in zip(
            single.state_dict().items(), population.member(k).state_dict().items(), strict=True
        ):
            torch.testing.assert_close(y, x, **TOL, msg=f"{name} of member {k}")


def test_a_compiled_masked_step_moves_the_active_members_and_leaves_the_others_exactly() -> None:
    """Members 0 and 2 step, member 1 sits out, in the compiled update (a mask tensor, whole tensors): member 1's
    parameters, targets, Adam moments and step count are unchanged bit for bit, the others move as their own
    eager steps move them; another set of members reuses the same graph."""
    singles, actor_opts, critic_opts, population, actor_adam, critic_adam = three_members()
    batches = random_batches(2, lead=(3,), seed=20)
    learner = Learner(0.99, 0.05, 1e-2, compile=True)
    before = {n: t.clone() for n, t in population.state_dict().items()}
    adam_before = [t.clone() for a in (actor_adam, critic_adam) for t in (*a.exp_avg, *a.exp_avg_sq, *a.step)]
    counters.clear()
    learner.step(population, actor_adam, critic_adam, batches[0], None, [0, 2])
    for name, t in population.state_dict().items():
        if t.dim() > 0 and t.shape[0] == 3:
            assert torch.equal(t[1], before[name][1]), name
            assert not torch.equal(t[0], before[name][0]) or "scale" in name, name
    adam_after = [t for a in (actor_adam, critic_adam) for t in (*a.exp_avg, *a.exp_avg_sq, *a.step)]
    assert all(torch.equal(x[1], y[1]) for x, y in zip(adam_after, adam_before, strict=True))
    assert actor_adam.step[0].tolist() == [2.0, 2.0, 4.0]
    for k in (0, 2):
        single, a, c = singles[k], actor_opts[k], critic_opts[k]
        ddpg_step(single, AdamState.of(a), AdamState.of(c), Batch(*(f[k] for f in batches[0])), 0.99, 0.05, 1e-2)
        for (name, x), (_, y) in zip(
            single.state_dict().items(), population.member(k).state_dict().items(), strict=True
        ):
            torch.testing.assert_close(y, x, **TOL, msg=f"{name} of member {k}")
    frames = counters["stats"]["unique_graphs"]
    learner.step(population, actor_adam, critic_adam, batches[1], None, [1])
    assert counters["stats"]["unique_graphs"] == frames  # the same graph for another set of members
    assert actor_adam.step[0].tolist() == [2.0, 3.0, 4.0]


def test_the_compiled_update_recompiles_for_what_its_kept_guards_guard() -> None:
    """The compiled update skips the guards on module internals (learner.update_guards), so it must still
    tell apart what its graph bakes in: the update's arguments (gamma here), Adam's settings (its learning rate)
    and the reduce function (besides every tensor's shape). Each variant, compiled in turn in one process, matches its own eager update; if the
    filter dropped the guard on any of these, a variant would reuse an earlier graph and miss."""
    torch._dynamo.reset()
    kept: list[tuple[str, bool]] = []

    def recording(entries: list) -> list[bool]:
        flags = update_guards(entries)
        kept.extend((e.guard_type, f) for e, f in zip(entries, flags, strict=True))
        return flags

    def halve(grads: list[torch.Tensor]) -> list[torch.Tensor]:
        return [g / 2 for g in grads]

    variants = [
        {"hp": (0.99, 0.05, 1e-2), "lr": 1e-3, "reduce": None, "hidden": (16, 16)},
        {"hp": (0.5, 0.05, 1e-2), "lr": 1e-3, "reduce": None, "hidden": (16, 16)},
        {"hp": (0.99, 0.05, 1e-2), "lr": 3e-2, "reduce": None, "hidden": (16, 16)},
        {"hp": (0.99, 0.05, 1e-2), "lr": 1e-3, "reduce": halve, "hidden": (16, 16)},
    ]
    batches = random_batches(3)
    for v in variants:
        results = []
        for compiled in (False, True):
            torch.manual_seed(0)
            student = Student(5, ActionScale([-1.0, -2.0], [1.0, 0.5]), v["hidden"], True)
            a_opt, c_opt = (
                make_adam(student.actor.parameters(), v["lr"]),
                make_adam(student.critic.parameters(), v["lr"]),
            )
            learner = Learner(*v["hp"], compile=compiled)
            learner._step = torch.compile(ddpg_step, dynamic=False, options={"guard_filter_fn": recording})
            if not compiled:
                learner._step = ddpg_step
            learner.update(student, a_opt, c_opt, batches, v["reduce"])
            results.append(student.state_dict())
        for name, x in results[0].items():
            torch.testing.assert_close(results[1][name], x, **TOL, msg=f"{v}: {name}")
    assert kept and all(f for t, f in kept if t == "TENSOR_MATCH"), "a tensor guard was dropped"
    assert any(t == "EMPTY_NN_MODULE_HOOKS_DICT" and not f for t, f in kept), "module-internal guards were kept"
