"""Steady-state cost of the one DDPG update (lightning_meta_rl/learner.py) in each of its uses, and of the
two ways a member dimension can be given to the networks.

* ``update``: 50 updates of the live student, and a whole look-ahead (the copy of the student and its Adam
  state, then 50 updates) with one copy (K = 1) or K stacked members (K = 2, 5), eager and compiled; and 50
  updates of a population of 8 students (``--population=8``: one Adam step count per member), also with
  members stepping apart (step counts differing, one member sitting out in turn), eager: ``Learner.steps``, whose
  updates share the members' slices of the parameters and Adam state, against the same updates taken one
  ``ddpg_step`` at a time, each making its slices afresh.
* ``members``: the critic's loss, forward and backward, for K members: our stacked layers (batched matrix
  products inside the networks' own forward) against ``torch.func.vmap`` over ``functional_call`` of the
  plain network, and against K plain networks one after another. This is the measurement the design rests on.
* ``layouts``: 50 eager updates of K = 5 stacked members with their parameters in the members' layout
  (members.py: no view taken per call) against the earlier layout (the ordinary layers', viewed per call).

Rounds alternate the arms (a shared machine drifts); medians over rounds. One torch thread, as the CLI.

    python benchmarks/update_speed.py            # writes benchmarks/results/update_speed/update_speed.md
    python benchmarks/update_speed.py --quick    # a short run (a smoke test uses it)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch
from runlib import commit, write_keeping_earlier
from torch import nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from lightning_meta_rl.adam import AdamState, make_adam, per_member_steps
from lightning_meta_rl.learner import Learner, ddpg_step
from lightning_meta_rl.losses import critic_loss
from lightning_meta_rl.members import MemberLayerNorm, MemberLinear, layers_of, to_plain
from lightning_meta_rl.networks import ActionScale, Student
from lightning_meta_rl.types import Batch

OUT = Path(__file__).resolve().parent / "results" / "update_speed" / "update_speed.md"
OBS, ACT, B = 11, 3, 64  # Hopper-v5's sizes, the default minibatch
LOOKAHEAD_UPDATES = 50  # model.meta.lookahead_updates' default
POPULATION = 8  # the population arm: --population=8, each member its own Adam step count


def batches(n: int, lead: tuple[int, ...] = (), seed: int = 0) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*lead, *shape, generator=g)

    return [Batch(r(B, OBS), r(B, ACT).clamp(-1, 1), r(B), r(B, OBS), r(B).gt(1.5).float()) for _ in range(n)]


def median_ms(fn: Callable[[], object], reps: int) -> float:
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return 1e3 * (time.perf_counter() - t) / reps


def update_arms(quick: bool) -> dict[str, Callable[[], object]]:
    """Each arm: one call = ``LOOKAHEAD_UPDATES`` updates (of every member); a look-ahead call is a whole
    look-ahead as an iteration runs it: the copy of the student and its Adam state, then the updates."""
    torch.manual_seed(0)
    student = Student(OBS, ActionScale([-1.0] * ACT, [1.0] * ACT), (64, 64), True)
    actor_opt, critic_opt = make_adam(student.actor.parameters(), 1e-4), make_adam(student.critic.parameters(), 1e-3)
    arms: dict[str, Callable[[], object]] = {}
    ks = (2, 5) if not quick else (2,)
    n = LOOKAHEAD_UPDATES
    single, pools = batches(n), {k: batches(n, (k,)) for k in ks}
    for compiled in (False, True):
        learner = Learner(0.99, 0.01, 0.01, compile=compiled)
        tag = "compiled" if compiled else "eager"
        arms[f"student, {tag}"] = lambda lr=learner: lr.update(student, actor_opt, critic_opt, single)
        arms[f"look-ahead K=1 (copy), {tag}"] = lambda lr=learner: lr.lookahead(
            student, actor_opt, critic_opt, None, single
        )
        for k in ks:
            arms[f"look-ahead K={k} (stacked), {tag}"] = lambda lr=learner, k=k: lr.lookahead(
                student, actor_opt, critic_opt, k, pools[k]
            )
    population = Student.stack([Student(OBS, student.actor.scale, (64, 64), True) for _ in range(POPULATION)])
    pop_actor = make_adam(population.actor.parameters(), 1e-4)
    pop_critic = make_adam(population.critic.parameters(), 1e-3)
    for opt in (pop_actor, pop_critic):  # as a population keeps them: one step count per member
        per_member_steps(opt, POPULATION)
    pop_batches = batches(n, (POPULATION,))
    for compiled in (False, True):
        learner = Learner(0.99, 0.01, 0.01, compile=compiled)
        arms[f"population N={POPULATION}, {'compiled' if compiled else 'eager'}"] = lambda lr=learner: lr.update(
            population, pop_actor, pop_critic, pop_batches
        )
    # members stepping apart, eager (a Meta population: differing step counts, one member sitting out in turn):
    # Learner.steps, whose updates share the member slices, against the same updates one ddpg_step at a time
    apart = Student.stack([Student(OBS, student.actor.scale, (64, 64), True) for _ in range(POPULATION)])
    apart_opts = make_adam(apart.actor.parameters(), 1e-4), make_adam(apart.critic.parameters(), 1e-3)
    for opt in apart_opts:
        per_member_steps(opt, POPULATION)
        for state in opt.state.values():
            state["step"].copy_(torch.arange(POPULATION, dtype=state["step"].dtype))
    actives = [[k for k in range(POPULATION) if k != j % POPULATION] for j in range(n)]
    apart_adam = AdamState.of(apart_opts[0]), AdamState.of(apart_opts[1])
    arms[f"population N={POPULATION}, eager, counts apart, one member out in turn"] = lambda: Learner(
        0.99, 0.01, 0.01
    ).steps(apart, *apart_opts, pop_batches, None, actives)
    arms[f"population N={POPULATION}, eager, counts apart, one member out in turn, slices made per update"] = lambda: [
        ddpg_step(apart, *apart_adam, b, 0.99, 0.01, 0.01, active=a) for b, a in zip(pop_batches, actives, strict=True)
    ]
    every = Learner(0.99, 0.01, 0.01, compile=True)
    # a frame of its own, so that its cache entry (with every guard) is not shared with ddpg_step's
    every._step = torch.compile(lambda *args: ddpg_step(*args), dynamic=False)
    arms["student, compiled with every guard"] = lambda: every.update(student, actor_opt, critic_opt, single)
    return arms


def member_arms(k: int) -> dict[str, Callable[[], object]]:
    """The critic's loss and its gradient for k members, three ways."""
    torch.manual_seed(0)
    student = Student(OBS, ActionScale([-1.0] * ACT, [1.0] * ACT), (64, 64), True)
    stacked = student.stacked(k)
    (b,) = batches(1, (k,))
    target = torch.randn(k, B)
    plain = [Student(OBS, student.actor.scale, (64, 64), True).critic for _ in range(k)]
    # the same members for vmap, in the plain critic's layout
    pairs = zip(stacked.critic.named_parameters(), layers_of(student.critic), strict=True)
    params = {n: torch.stack([to_plain(*layer, m) for m in p.detach()]).requires_grad_(True) for (n, p), layer in pairs}
    l2 = student.critic_l2_names

    def ours() -> object:
        p = list(stacked.critic.parameters())
        loss = critic_loss(stacked.critic(b.obs, b.action), target, stacked.critic.weight_matrices(), 0.01)
        return torch.autograd.grad(loss.sum(), p)

    def one(p: dict[str, torch.Tensor], obs: torch.Tensor, act: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return critic_loss(functional_call(student.critic, p, (obs, act)), y, [p[n] for n in l2], 0.01)

    batched = vmap(one)

    def with_vmap() -> object:
        return torch.autograd.grad(batched(params, b.obs, b.action, target).sum(), list(params.values()))

    def in_turn() -> object:
        grads = []
        for i, net in enumerate(plain):
            loss = critic_loss(net(b.obs[i], b.action[i]), target[i], net.weight_matrices(), 0.01)
            grads.append(torch.autograd.grad(loss, list(net.parameters())))
        return grads

    return {
        f"K={k}: stacked layers": ours,
        f"K={k}: vmap(functional_call)": with_vmap,
        f"K={k}: K plain in turn": in_turn,
    }


class ViewLinear(MemberLinear):
    """The earlier member layout, for comparison: weight [M, out, in] and bias [M, out] as in the ordinary
    layer, viewed into the batched product's layout on every call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(-2), x, self.weight.transpose(-1, -2))


class ViewLayerNorm(MemberLayerNorm):
    """The earlier member layout of a LayerNorm: weight and bias [M, d], viewed as [M, 1, d] on every call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x, self.normalized_shape, eps=self.eps)
        return torch.addcmul(self.bias.unsqueeze(-2), x, self.weight.unsqueeze(-2))


def layout_arms(k: int) -> dict[str, Callable[[], object]]:
    """50 eager updates of k stacked members (no copy): parameters in the members' layout (members.py), and
    in the earlier one, the ordinary layers' layout with views taken per call."""
    torch.manual_seed(0)
    pool = batches(LOOKAHEAD_UPDATES, (k,))
    arms: dict[str, Callable[[], object]] = {}
    for views in (False, True):
        student = Student(OBS, ActionScale([-1.0] * ACT, [1.0] * ACT), (64, 64), True).stacked(k)
        if views:
            for layer in student.modules():
                if isinstance(layer, MemberLinear | MemberLayerNorm):
                    for name, p in list(layer.named_parameters(recurse=False)):
                        own = torch.stack([to_plain(layer, name, m) for m in p.detach()])
                        setattr(layer, name, nn.Parameter(own.contiguous(), requires_grad=p.requires_grad))
                    layer.__class__ = ViewLinear if isinstance(layer, MemberLinear) else ViewLayerNorm
            student._params = None
            student.params()
        actor = AdamState.of(make_adam(student.actor.parameters(), 1e-4))
        critic = AdamState.of(make_adam(student.critic.parameters(), 1e-3))

        def run(s: Student = student, a: AdamState = actor, c: AdamState = critic) -> None:
            for b in pool:
                ddpg_step(s, a, c, b, 0.99, 0.01, 0.01)

        arms[f"K={k}: " + ("ordinary layout, views per call (earlier)" if views else "members' layout")] = run
    return arms


def measure(arms: dict[str, Callable[[], object]], rounds: int, reps: int) -> dict[str, float]:
    for fn in arms.values():  # warm-up (and the compiles)
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(rounds):
        order = list(arms) if r % 2 == 0 else list(reversed(arms))
        for name in order:
            times[name].append(median_ms(arms[name], reps))
    return {name: statistics.median(v) for name, v in times.items()}


def report(updates: dict[str, float], members: dict[str, float], layouts: dict[str, float], command: str) -> str:
    eager = updates["student, eager"]
    lines = [
        "# The one update: cost per use, and how members are stacked",
        "",
        f"{date.today().isoformat()}, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"one thread; `{command}`, code at {commit()}. Hopper-v5 sizes (obs {OBS}, act {ACT}), 64-64 networks with LayerNorm, "
        f"minibatch {B}. Medians over alternating rounds.",
        "",
        f"| use of ddpg_step ({LOOKAHEAD_UPDATES} updates; look-aheads with their copy) | ms | ms per update "
        "and member | vs eager student | vs K=1 look-ahead, same mode |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, ms in updates.items():
        k = int(name.split("K=")[1].split(" ")[0]) if "K=" in name else 1
        k = int(name.split("N=")[1].split(",")[0]) if "N=" in name else k
        one = updates.get(f"look-ahead K=1 (copy), {name.split(', ')[-1]}")
        same_mode = f"{ms / one:.2f}" if one else ""
        lines.append(f"| {name} | {ms:.1f} | {ms / LOOKAHEAD_UPDATES / k:.3f} | {ms / eager:.2f} | {same_mode} |")
    lines += ["", "| critic loss + gradient, K members | ms | vs stacked layers |", "| --- | --- | --- |"]
    for name, ms in members.items():
        k = name.split(":")[0]
        base = members[f"{k}: stacked layers"]
        lines.append(f"| {name} | {ms:.3f} | {ms / base:.2f} |")
    lines += [
        "",
        f"| {LOOKAHEAD_UPDATES} eager updates of K stacked members | ms | vs members' layout |",
        "| --- | --- | --- |",
    ]
    for name, ms in layouts.items():
        base = layouts[name.split(":")[0] + ": members' layout"]
        lines.append(f"| {name} | {ms:.1f} | {ms / base:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rounds, K=2 only; prints, writes nothing")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reps", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rounds, reps = (2, 5) if args.quick else (args.rounds, args.reps)
    updates = measure(update_arms(args.quick), rounds, max(1, reps // 20))
    members: dict[str, float] = {}
    for k in (2,) if args.quick else (2, 5):
        members |= measure(member_arms(k), rounds, reps)
    layouts = measure(layout_arms(2 if args.quick else 5), rounds, max(1, reps // 20))
    command = "python benchmarks/update_speed.py" + (" --quick" if args.quick else "")
    text = report(updates, members, layouts, command)
    print(text)
    if not args.quick:
        write_keeping_earlier(OUT, text)


if __name__ == "__main__":
    main()
