"""``--population=N`` (lightning_meta_rl/population.py): N seeds of either arm in one process, each member the
run of its seed; per-seed results; checkpoint, interruption and resume of the whole population."""

from __future__ import annotations

import copy
import csv
import itertools
import math
import os
import shlex
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import SMOKE, TINY, fit
from test_cluster import run_main

from lightning_meta_rl.errors import UserError
from lightning_meta_rl.members import layers_of, to_plain
from lightning_meta_rl.population import PopulationModule
from lightning_meta_rl.population_args import requested_population
from lightning_meta_rl.types import Batch

QUIET = ["--trainer.callbacks=[]", "--trainer.enable_progress_bar=false"]
DDPG = ["--model.teacher.kind=gaussian", *QUIET]


def curve(path: Path) -> list[tuple[float, float]]:
    with open(path, newline="") as f:
        return [(float(r["env_steps"]), float(r["eval/return"])) for r in csv.DictReader(f)]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("kind", ["gaussian", "param"])
def test_each_member_is_the_run_of_its_seed(tmp_path: Path, kind: str) -> None:
    """Member k trains as the single run of seed 5 + k: same environments, initial weights, noise, minibatches
    and evaluations, up to the float order of the stacked products (relative 1e-5 on the returns). Parameter
    noise perturbs each member's own actor, as its single run does."""
    arm = [*DDPG, f"--model.teacher.kind={kind}", "--data.total_env_steps=1200"]
    pop = fit(tmp_path / "pop", *arm, "--seed_everything=5", "--population=2")
    assert isinstance(pop.model, PopulationModule) and pop.model.seeds == [5, 6]
    for k, seed in enumerate((5, 6)):
        single = fit(tmp_path / f"single{seed}", *arm, f"--seed_everything={seed}")
        expected = curve(tmp_path / f"single{seed}" / "metrics.csv")
        got = curve(tmp_path / "pop" / f"seed_{seed}" / "metrics.csv")
        assert len(got) == len(expected) >= 3
        for (s1, r1), (s2, r2) in zip(got, expected, strict=True):
            assert s1 == s2 and r1 == pytest.approx(r2, rel=1e-5), (seed, got, expected)
        member = pop.model.student.member(k)
        for (name, x), (_, y) in zip(
            member.state_dict().items(), single.model.student.state_dict().items(), strict=True
        ):
            torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4, msg=f"seed {seed}: {name}")
    assert not (tmp_path / "pop" / "metrics.csv").exists()  # results are per seed


def test_the_end_line_reports_every_seed_and_the_members_differ(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert run_main("fit", "--config", SMOKE, "--run_dir", str(run), *TINY, *DDPG, "--population=3") == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "final eval/return by seed" in ln)
    assert all(f"seed {s}:" in line for s in (0, 1, 2))
    finals = [curve(run / f"seed_{s}" / "metrics.csv")[-1][1] for s in (0, 1, 2)]
    assert len(set(finals)) == 3  # three independent runs, not one run three times
    assert "population: 3" in (run / "config.yaml").read_text()


@pytest.mark.parametrize(
    ("arm", "cut_at"),
    [
        (DDPG, 8),
        ([*DDPG, "--model.teacher.kind=param"], 5),
        (["--model.teacher.kind=meta_state", *QUIET], 3),
        (["--model.meta.samples=2", "--data.num_envs=2", *QUIET], 2),
    ],
    ids=["ddpg", "param", "meta_state", "meta_k2"],
)
def test_an_interrupted_population_resumes_to_what_an_uninterrupted_one_reaches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, arm: list[str], cut_at: int
) -> None:
    args = [*TINY, *arm, "--population=2", "--data.total_env_steps=2000", "--data.eval_every=400"]
    assert run_main("fit", "--config", SMOKE, "--run_dir", str(tmp_path / "whole"), *args) == 0
    original = PopulationModule.training_step

    def step(self: PopulationModule, batch: int, batch_idx: int) -> None:
        if self.iteration + 1 == cut_at:  # mid-run, between two checkpoints
            os.kill(os.getpid(), signal.SIGTERM)
        original(self, batch, batch_idx)

    monkeypatch.setattr(PopulationModule, "training_step", step)
    cut = tmp_path / "cut"
    assert run_main("fit", "--config", SMOKE, "--run_dir", str(cut), *args) == 128 + signal.SIGTERM
    monkeypatch.undo()
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "Resume with: " in ln)
    resume = shlex.split(line.split("Resume with: ", 1)[1])[3:]
    assert "--population=2" in resume  # the command it prints is the run's own, ready to paste
    assert run_main(*resume) == 0
    for seed in (0, 1):
        assert curve(cut / f"seed_{seed}" / "metrics.csv") == curve(tmp_path / "whole" / f"seed_{seed}" / "metrics.csv")


META_TINY = [*TINY, *QUIET, "--data.total_env_steps=1500", "--data.eval_every=300"]


def meta_fits(tmp_path: Path, *setting: str) -> tuple[Any, list[Any]]:
    """A Meta population of seeds 5 and 6, and the single runs of those seeds."""
    pop = fit(tmp_path / "pop", *META_TINY, *setting, "--seed_everything=5", "--population=2")
    singles = [fit(tmp_path / f"single{s}", *META_TINY, *setting, f"--seed_everything={s}") for s in (5, 6)]
    return pop, singles


def adam_steps(opt: torch.optim.Optimizer) -> torch.Tensor:
    return next(iter(opt.state.values()))["step"]


@pytest.mark.parametrize(
    "setting",
    [
        ["--model.teacher.kind=meta"],
        ["--model.meta.reward=critic", "--model.meta.lookahead=inplace"],
        ["--model.meta.samples=2", "--data.num_envs=2", "--data.total_env_steps=3200"],
        ["--model.meta.samples=2", "--data.num_envs=2", "--data.eval_every=250", "--model.meta.reward=critic"],
    ],
    ids=["meta", "critic_inplace", "k2", "k2_critic"],
)
def test_each_meta_member_is_the_run_of_its_seed(tmp_path: Path, setting: list[str]) -> None:
    """The Meta arm in a population: member k's evaluations, R(pi), student and teacher equal the single run of
    seed 5 + k, up to the float order of the stacked products."""
    pop, singles = meta_fits(tmp_path, *setting)
    for k, (seed, single) in enumerate(zip((5, 6), singles, strict=True)):
        got, expected = (
            rows(d / "metrics.csv") for d in (tmp_path / "pop" / f"seed_{seed}", tmp_path / f"single{seed}")
        )
        assert len(got) == len(expected) >= 3
        for a, b in zip(got, expected, strict=True):
            assert a["env_steps"] == b["env_steps"]
            for key in ("eval/return", "r_pi"):
                assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5, nan_ok=True), (seed, key)
        pairs = [
            (pop.model.student.member(k).state_dict(), single.model.student.state_dict()),
            (pop.model.explorations[k].state_dict(), single.model.exploration.state_dict()),
        ]
        for ours, theirs in pairs:
            for (name, x), (_, y) in zip(ours.items(), theirs.items(), strict=True):
                torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4, msg=f"seed {seed}: {name}")
        assert pop.model.teacher_steps == single.model.teacher_steps > 0


def test_meta_members_whose_episodes_differ_take_the_updates_their_own_steps_earn(tmp_path: Path) -> None:
    """On InvertedPendulum, D1 and R(pi) episodes end at different steps for different members, so members earn
    different numbers of updates, evaluate at different iterations and reach their budgets in different
    iterations. Each member behaves as a single run of its own: its Adam step count is exactly the updates its
    own steps earned (utd_ratio per step after warm-up, less the credit carried), it is evaluated when its own
    steps pass a multiple of eval_every and at its own budget, never otherwise, and it trains to its own
    budget. (Comparing with the single runs themselves is left to the Pendulum tests: here a member and its
    single run part by float rounding within a few thousand steps, chaotically, and then end episodes apart.)"""
    budget, every = 1000, 205  # members end in different iterations at this budget (seed 5: 8, seed 6: 7)
    args = ["--data.env_id=InvertedPendulum-v5", "--model.teacher.kind=meta_state", "--seed_everything=5"]
    pop = fit(
        tmp_path / "pop",
        *META_TINY,
        *args,
        f"--data.total_env_steps={budget}",
        f"--data.eval_every={every}",
        "--population=2",
    )
    members = adam_steps(pop.model.optimizers()[0].optimizer)
    assert pop.datamodule.members[0].env_steps != pop.datamodule.members[1].env_steps  # they collected apart
    ends = []
    for k, seed in enumerate((5, 6)):
        credit = pop.model.credits[k]
        assert float(members[k]) == 0.25 * (credit.steps_credited - 200) - credit.credit  # utd 0.25, warm-up 200
        evaluations = rows(tmp_path / "pop" / f"seed_{seed}" / "metrics.csv")
        steps = [int(float(r["env_steps"])) for r in evaluations]
        assert steps[-1] == pop.datamodule.members[k].env_steps >= budget  # its own budget, reached
        assert all(b // every > a // every for a, b in itertools.pairwise(steps[:-1]))  # only when due
        ends.append(int(evaluations[-1]["iteration"]))
    assert ends[0] != ends[1]  # the members reached their budgets in different iterations


def test_a_meta_member_exports_with_its_own_teacher(tmp_path: Path) -> None:
    from lightning_meta_rl.export import export_member

    pop = fit(tmp_path / "pop", *META_TINY, "--model.teacher.kind=meta_state", "--population=3")
    checkpoint = torch.load(tmp_path / "pop" / "checkpoints" / "last.ckpt", weights_only=False)
    exported = export_member(checkpoint, 1)
    teacher = {n.removeprefix("exploration."): t for n, t in exported["state_dict"].items() if "exploration." in n}
    own = pop.model.explorations[1].state_dict()
    assert teacher.keys() == own.keys() and all(torch.equal(teacher[n], own[n]) for n in own)
    assert len(exported["optimizer_states"]) == 3  # actor, critic and this member's teacher
    assert exported["meta_rl"]["r_pi"] == checkpoint["population"]["r_pis"][1]
    path = tmp_path / "member1.ckpt"
    torch.save(exported, path)
    single = fit(
        tmp_path / "resumed",
        *META_TINY,
        "--model.teacher.kind=meta_state",
        "--seed_everything=1",
        "--data.total_env_steps=2600",
        "--ckpt_path",
        str(path),
    )
    assert single.model.teacher_steps > pop.model.teacher_steps  # an ordinary run that trains on from it


def test_a_population_checkpoint_is_refused_by_a_run_of_another_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert run_main("fit", "--config", SMOKE, "--run_dir", str(run), *TINY, *DDPG, "--population=2") == 0
    capsys.readouterr()
    more = ["--data.total_env_steps=1600", "--ckpt_path", "last"]
    assert run_main("fit", "--config", SMOKE, "--run_dir", str(run), *TINY, *DDPG, *more) == 2
    assert "--population: checkpoint 2, this run 1" in capsys.readouterr().err


def test_the_population_is_read_from_the_command_line_and_from_a_config(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("population: 4\nseed_everything: 0\n")
    assert requested_population(["fit", "--population", "3"]) == 3
    assert requested_population(["fit", "--population=5"]) == 5
    assert requested_population(["fit", "--config", str(config)]) == 4
    assert requested_population(["fit", "--config", str(config), "--population=2"]) == 2  # the later one wins
    assert requested_population(["fit"]) == 1


def test_a_diverged_member_is_retired_and_the_others_finish(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Member 1's weights become NaN at iteration 4: it is retired with a message naming its seed, its results
    so far kept; members 0 and 2 train to the end unharmed (the stacked layers compute member by member), and
    the exit status (3) says that a seed was retired."""
    original = PopulationModule.training_step

    def step(self: PopulationModule, batch: int, batch_idx: int) -> None:
        if self.iteration + 1 == 4:
            with torch.no_grad():
                next(self.student.actor.parameters())[1].fill_(float("nan"))
        original(self, batch, batch_idx)

    monkeypatch.setattr(PopulationModule, "training_step", step)
    run = tmp_path / "run"
    code = run_main("fit", "--config", SMOKE, "--run_dir", str(run), *TINY, *DDPG, "--population=3")
    out = capsys.readouterr().out
    assert code == 3, out[-2000:]
    assert any(ln.startswith("lightning-meta-rl: seed 1 retired at iteration 4") for ln in out.splitlines())
    assert "seed 1: " in out and "(retired)" in out
    whole = curve(run / "seed_0" / "metrics.csv")
    assert whole[-1][0] >= 800 and curve(run / "seed_2" / "metrics.csv")[-1][0] >= 800
    assert all(math.isfinite(r) for _, r in whole)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["population"]["retired"].keys() == {1}
    for p in ckpt["state_dict"].values():  # the others' weights are finite
        if p.dim() and p.shape[0] == 3 and p.is_floating_point():
            assert torch.isfinite(p[0]).all() and torch.isfinite(p[2]).all()


def test_a_member_exports_as_a_single_seed_checkpoint_that_validate_and_python_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lightning_meta_rl.export import main as export
    from lightning_meta_rl.module import MetaRLModule

    run = tmp_path / "run"
    assert run_main("fit", "--config", SMOKE, "--run_dir", str(run), *TINY, *DDPG, "--population=3") == 0
    export([str(run / "checkpoints" / "last.ckpt"), "--seed", "2"])
    single = run / "seed_2" / "last.ckpt"
    model = MetaRLModule.load_from_checkpoint(single)
    stacked = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    layers = dict(zip([n for n, _ in model.student.named_parameters()], layers_of(model.student), strict=True))
    for name, value in model.student.state_dict().items():
        full = stacked[f"student.{name}"]  # member 2's parameters, in the members' layout
        assert torch.equal(value, to_plain(*layers[name], full[2]) if name in layers else full), name
    ckpt = torch.load(single, weights_only=False)
    rows = ckpt["meta_rl"]["evaluation"]["history"]["rows"]
    assert [r["eval/return"] for r in rows] == [r for _, r in curve(run / "seed_2" / "metrics.csv")]
    capsys.readouterr()
    code = run_main("validate", "--config", SMOKE, *TINY, *DDPG, "--ckpt_path", str(single))
    assert code == 0 and "eval/return" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        export([str(run / "checkpoints" / "last.ckpt"), "--seed", "7"])
    assert exc.value.code == 2 and "not a member" in capsys.readouterr().err


def in_layout_1(checkpoint: dict[str, Any], student: torch.nn.Module) -> dict[str, Any]:
    """A population checkpoint as versions before the members' layout wrote it (members in the ordinary layers'
    layout); ``student``: an ordinary student of the same shape."""
    old = copy.deepcopy(checkpoint)
    del old["population"]["member_layout"]

    def back(layer: tuple[torch.nn.Module, str], t: torch.Tensor) -> torch.Tensor:
        return torch.stack([to_plain(*layer, row) for row in t.unbind(0)])

    for (name, _), layer in zip(student.named_parameters(), layers_of(student), strict=True):
        old["state_dict"][f"student.{name}"] = back(layer, old["state_dict"][f"student.{name}"])
    for net, opt in zip((student.actor, student.critic), old["optimizer_states"], strict=False):
        for i, layer in enumerate(layers_of(net)):
            for key in ("exp_avg", "exp_avg_sq"):
                opt["state"][i][key] = back(layer, opt["state"][i][key])
    return old


def test_a_population_checkpoint_of_the_earlier_layout_exports_and_resumes_as_one_of_this_layout(
    tmp_path: Path,
) -> None:
    """Checkpoints written before members' weights were kept transposed: export gives the same member, and a
    run resumed from one goes on exactly as from the same checkpoint in this layout."""
    from lightning_meta_rl.export import export_member

    args = [*TINY, *DDPG, "--population=2", "--data.eval_every=400"]
    pop = fit(tmp_path / "pop", *args)
    new = torch.load(tmp_path / "pop" / "checkpoints" / "last.ckpt", weights_only=False)
    old = in_layout_1(new, pop.model.student.member(0))
    assert any(not torch.equal(old["state_dict"][n], t) for n, t in new["state_dict"].items() if n.endswith("weight"))
    exported = [export_member(c, 1)["state_dict"] for c in (old, new)]
    for a, b in zip(exported[0].values(), exported[1].values(), strict=True):
        assert torch.equal(a, b)
    moments = [export_member(c, 1)["optimizer_states"][1]["state"][0]["exp_avg"] for c in (old, new)]
    assert torch.equal(*moments)
    curves = []
    for name, ckpt in (("old", old), ("new", new)):
        torch.save(ckpt, tmp_path / f"{name}.ckpt")
        more = ["--data.total_env_steps=1600", "--ckpt_path", str(tmp_path / f"{name}.ckpt")]
        fit(tmp_path / name, *args, *more)
        curves.append([curve(tmp_path / name / f"seed_{s}" / "metrics.csv") for s in (0, 1)])
    assert curves[0] == curves[1] and len(curves[0][0]) > len(curve(tmp_path / "pop" / "seed_0" / "metrics.csv"))


def test_a_meta_member_whose_teacher_diverges_is_retired_and_the_others_keep_their_checkpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Member 1's teacher becomes NaN at iteration 2: its next action is non-finite, so it is retired, its
    teacher cleared with its student; the others finish, and checkpoints (which refuse NaN weights) are
    written to the end."""
    original = PopulationModule.training_step

    def step(self: PopulationModule, batch: int, batch_idx: int) -> None:
        if self.iteration + 1 == 2:
            with torch.no_grad():
                next(self.explorations[1].parameters()).fill_(float("nan"))
        original(self, batch, batch_idx)

    monkeypatch.setattr(PopulationModule, "training_step", step)
    run = tmp_path / "run"
    args = [*TINY, *QUIET, "--model.teacher.kind=meta", "--population=3", "--data.total_env_steps=2000"]
    assert run_main("fit", "--config", SMOKE, "--run_dir", str(run), *args) == 3
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["population"]["retired"].keys() == {1}
    assert all(torch.isfinite(p).all() for p in ckpt["state_dict"].values() if p.is_floating_point())
    assert curve(run / "seed_2" / "metrics.csv")[-1][0] >= 2000
    from lightning_meta_rl.export import export_member

    with pytest.raises(UserError, match="seed 1 was retired"):
        export_member(ckpt, 1)


def test_gaussian_noise_for_all_members_at_once_is_each_members_own() -> None:
    # a population draws every member's Gaussian noise in one call: each member's stream and actions must be
    # the ones that member's own act() would give, bit for bit
    from lightning_meta_rl.exploration import GaussianNoise
    from lightning_meta_rl.networks import ActionScale

    noise = GaussianNoise(ActionScale([-1.0, 0.0], [2.0, 0.5]), 0.3)
    mu = torch.randn(3, 1, 2) * 2
    together = noise.act_members(mu, [torch.Generator().manual_seed(s) for s in (5, 6, 7)])
    for m, seed in enumerate((5, 6, 7)):
        alone = noise.act(torch.zeros(1, 4), _FixedActor(mu[m]), torch.Generator().manual_seed(seed))
        assert torch.equal(together[m].raw, alone.raw) and torch.equal(together[m].executed, alone.executed)
    assert not torch.equal(together[0].raw, together[1].raw)


class _FixedActor:
    def __init__(self, mu: torch.Tensor) -> None:
        self.actor = lambda obs: mu


def test_the_members_plain_actors_follow_the_population_to_its_device() -> None:
    # the plain actors (evaluation, parameter noise) are a plain list, which Lightning's .to() does not move;
    # "meta" stands in for a GPU here
    pop = PopulationModule(3, 1, [-2.0], [2.0], population=2)
    pop.to("meta")
    pop._sync_actors()
    assert all(p.device.type == "meta" for actor in pop.actors for p in actor.parameters())


def test_a_stacked_minibatch_is_each_members_own_minibatch_bit_for_bit() -> None:
    """Three members with their own replay data and statistics: the stacked minibatch of members 0 and 2 holds,
    in rows 0 and 2, exactly the normalized minibatch each draws alone from the same sampling stream state,
    and zeros in row 1 (a member sitting out); with every member, each row is that member's own."""
    from conftest import make_rollout

    from lightning_meta_rl.population_data import PopulationDataModule

    data = PopulationDataModule(env_id="Pendulum-v1", total_env_steps=300, warmup_steps=10, population=3)
    data.setup("fit")
    for k, member in enumerate(data.members):
        rollout = make_rollout(40 + 10 * k, obs_dim=3, start=7 * k)
        rollout.obs.mul_(k + 1)
        member.add(rollout)
    for members in ([0, 2], [0, 1, 2]):
        states = [m.sample_rng.get_state() for m in data.members]
        stacked = data.sample_stacked(16, None, members)
        for m, state in zip(data.members, states, strict=True):
            m.sample_rng.set_state(state)
        for k, member in enumerate(data.members):
            own = member.sample(16) if k in members else None
            for field, got in zip(Batch._fields, stacked, strict=True):
                want = torch.zeros_like(got[k]) if own is None else getattr(own, field)
                assert torch.equal(got[k], want), (members, k, field)


def test_stacked_look_ahead_minibatches_are_each_members_own_bit_for_bit() -> None:
    """K = 2 rows per member, drawn from D0 segments (the look-ahead's minibatches): row kK + i holds exactly what
    member k's ``sample_rollout`` draws from its segment i, normalized by member k's statistics; the rows of a
    member that does not take part are zeros."""
    from conftest import make_rollout

    from lightning_meta_rl.population_data import PopulationDataModule

    data = PopulationDataModule(env_id="Pendulum-v1", total_env_steps=300, warmup_steps=10, population=3)
    data.setup("fit")
    segments = {}
    for k, member in enumerate(data.members):
        stored = make_rollout(30, obs_dim=3, start=5 * k)
        stored.obs.mul_(k + 1)
        member.add(stored)  # statistics of its own
        segments[k] = [make_rollout(12 + i, obs_dim=3, start=3 * k + i) for i in range(2)]
    states = [m.sample_rng.get_state() for m in data.members]
    rows = {
        2 * k + i: (k, data.members[k].sample_rollout_raw(seg, 8)) for k in (0, 2) for i, seg in enumerate(segments[k])
    }
    stacked = data.stacked(rows, 6, None)
    for m, state in zip(data.members, states, strict=True):
        m.sample_rng.set_state(state)
    for k in (0, 2):
        for i, seg in enumerate(segments[k]):
            own = data.members[k].sample_rollout(seg, 8)
            assert all(torch.equal(got[2 * k + i], want) for got, want in zip(stacked, own, strict=True)), (k, i)
    assert all(float(f[2:4].abs().sum()) == 0.0 for f in stacked)


@pytest.mark.parametrize(
    "arm", [DDPG, ["--model.meta.samples=2", "--data.num_envs=2", *QUIET]], ids=["ddpg", "meta_k2"]
)
def test_members_stepped_on_threads_train_exactly_as_stepped_in_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arm: list[str]
) -> None:
    """``--data.env_threads=2`` steps three members' environments on two threads (one takes two members):
    every collection, look-ahead episode and evaluation, and so every weight, is what stepping them in turn
    gives, bit for bit."""
    import threading

    from lightning_meta_rl.envs import EnvRunner

    stepped_on: set[str] = set()
    original = EnvRunner.step

    def step(self: EnvRunner, action: Any) -> Any:
        stepped_on.add(threading.current_thread().name.split("_")[0])
        return original(self, action)

    monkeypatch.setattr(EnvRunner, "step", step)
    runs = {}
    for threads in (1, 2):
        stepped_on.clear()
        run = tmp_path / f"threads{threads}"
        args = [*arm, "--population=3", "--data.total_env_steps=1200", f"--data.env_threads={threads}"]
        runs[threads] = fit(run, *args)
        assert stepped_on == ({"MainThread", "env-step"} if threads > 1 else {"MainThread"}), threads
    for seed in (0, 1, 2):
        assert curve(tmp_path / "threads2" / f"seed_{seed}" / "metrics.csv") == curve(
            tmp_path / "threads1" / f"seed_{seed}" / "metrics.csv"
        )
    for (name, x), (_, y) in zip(
        runs[2].model.student.state_dict().items(), runs[1].model.student.state_dict().items(), strict=True
    ):
        assert torch.equal(x, y), name
    assert runs[2].datamodule._threads is None  # closed when the run ended


def test_an_evaluation_in_lockstep_is_each_members_own_evaluation() -> None:
    """Three members evaluated together on two threads (their episodes end at different steps) return exactly
    the episodes each member's own ``evaluate`` gives from the same state."""
    from lightning_meta_rl.networks import ActionScale, Actor
    from lightning_meta_rl.policies import DeterministicPolicy
    from lightning_meta_rl.population_data import PopulationDataModule

    def data(threads: int) -> PopulationDataModule:
        d = PopulationDataModule(
            env_id="InvertedPendulum-v5", total_env_steps=300, warmup_steps=10, eval_episodes=3, population=3,
            env_threads=threads,
        )  # fmt: skip
        d.setup("fit")
        return d

    together, alone = data(2), data(1)
    for k in range(3):  # statistics of its own: a member normalized by another's would act otherwise
        for d in (together, alone):
            d.members[k].normalizer.update(
                torch.randn(50, d.obs_dim, generator=torch.Generator().manual_seed(k)) * (k + 1)
            )
    torch.manual_seed(0)
    scale = ActionScale(together.action_low, together.action_high)
    actors = {k: Actor(together.obs_dim, scale, [16], layer_norm=True) for k in range(3)}
    got = together.evaluate_lockstep({k: DeterministicPolicy(a) for k, a in actors.items()})
    lengths = set()
    for k, member in enumerate(alone.members):
        want = member.evaluate(DeterministicPolicy(actors[k]))
        assert got[k].episode_returns == want.episode_returns, k
        assert torch.equal(got[k].obs, want.obs) and torch.equal(got[k].action, want.action), k
        lengths.add(len(want))
    assert len(lengths) > 1  # the members' episodes really did end apart
    assert all(m.env_steps == 0 for m in together.members)  # evaluation is not counted
    together.teardown("fit")
    alone.teardown("fit")


def test_step_threads_flush_denormals_when_the_thread_that_makes_them_does() -> None:
    """The flag is per thread: MuJoCo on a stepping thread must round as it would on the thread that made the
    threads (the training thread), whatever the flag of the thread that starts them (they start lazily)."""
    import numpy as np

    from lightning_meta_rl.rollout import StepThreads

    def flushed() -> bool:
        return bool((np.array([1e-40], np.float32) * np.float32(2.0))[0] == 0)

    before = flushed()
    try:
        for flush in (True, False):
            torch.set_flush_denormal(flush)
            made_flushed = flushed()
            threads = StepThreads(2)
            torch.set_flush_denormal(not flush)
            try:
                seen = {threads.pool.submit(flushed).result() for _ in range(4)}
            finally:
                threads.close()
            assert seen == {made_flushed}, flush
    finally:
        torch.set_flush_denormal(before)


def test_a_member_whose_evaluation_diverges_is_reported_and_the_others_are_evaluated() -> None:
    """A policy acting non-finitely in its evaluation gives that member a TrainingDiverged (the module retires
    it); the members evaluated with it get their episodes."""
    from lightning_meta_rl.errors import TrainingDiverged
    from lightning_meta_rl.policies import DeterministicPolicy
    from lightning_meta_rl.population_data import PopulationDataModule
    from lightning_meta_rl.rollout import Action

    class NaNPolicy:
        def act(self, obs: torch.Tensor) -> Action:
            a = torch.full((obs.shape[0], 1), math.nan)
            return Action(a, a)

        def reset(self, index: int) -> None:
            pass

    data = PopulationDataModule(env_id="Pendulum-v1", total_env_steps=300, warmup_steps=10, eval_episodes=1, population=3, env_threads=2)  # fmt: skip
    data.setup("fit")
    actor = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Tanh())
    got = data.evaluate_lockstep({0: DeterministicPolicy(actor), 1: NaNPolicy(), 2: DeterministicPolicy(actor)})
    assert isinstance(got[1], TrainingDiverged)
    assert len(got[0]) == len(got[2]) == 200 and len(got[0].episode_returns) == 1
    data.teardown("fit")


def test_step_threads_wait_for_every_share_before_passing_on_an_error() -> None:
    """A share that raises (an environment failing) is passed on only once every other share has taken its
    step: nothing may still step an environment that the caller then closes."""
    import time

    from lightning_meta_rl.rollout import Action, StepThreads

    finished: list[int] = []

    def stepper(k: int) -> Any:
        yield None
        if k == 0:
            raise RuntimeError("environment 0 failed")
        time.sleep(0.05)
        finished.append(k)
        yield None

    steppers = [stepper(k) for k in range(4)]
    for s in steppers:
        next(s)
    a = torch.zeros(1, 1)
    threads = StepThreads(4)
    try:
        with pytest.raises(RuntimeError, match="environment 0 failed"):
            threads.advance([(s, Action(a, a)) for s in steppers])
        assert sorted(finished) == [1, 2, 3]
    finally:
        threads.close()


@pytest.mark.parametrize(
    ("kind", "learn_std"), [("meta", False), ("meta", True), ("meta_state", True), ("meta_variance", True)]
)
def test_the_members_teachers_acting_as_one_act_as_each_teacher_alone(kind: str, learn_std: bool) -> None:
    # a population's D0 asks every member's teacher at once (their heads stacked): each member's context,
    # noise draws and actions must be those of its own teacher's act, up to the float order of the stacked
    # products, and each member's noise stream must advance as its own act advances it; members that do not
    # act (retired, finished) draw nothing
    from lightning_meta_rl.config import TeacherConfig
    from lightning_meta_rl.exploration import build_exploration
    from lightning_meta_rl.networks import ActionScale, Student
    from lightning_meta_rl.teachers import TeacherStack

    scale = ActionScale([-1.0, 0.0], [2.0, 0.5])
    cfg = TeacherConfig(kind=kind, sigma=0.3, learn_std=learn_std)
    teachers, students = [], []
    for seed in range(3):
        torch.manual_seed(seed)
        students.append(Student(4, scale, [8, 8], True))
        teacher = build_exploration(cfg, 4, scale, True)
        with torch.no_grad():  # teachers unlike their initial selves and each other (a learned log-std too)
            for p in teacher.parameters():
                p.add_(torch.randn_like(p) * 0.3)
        if kind == "meta_state":  # each member's own Q statistics
            teacher.q_mean, teacher.q_std = float(seed), 1.0 + seed
        teachers.append(teacher)
    obs = torch.randn(3, 2, 4)
    for members in ([0, 1, 2], [0, 2]):
        streams = [torch.Generator().manual_seed(5 + k) for k in members]
        together = TeacherStack(teachers).act(members, obs[members], [students[k] for k in members], streams)
        assert len(together) == len(members)
        for i, k in enumerate(members):
            own = torch.Generator().manual_seed(5 + k)
            alone = teachers[k].act(obs[k], students[k], own)
            for got, expected in zip(together[i], alone, strict=True):  # raw, executed, context
                torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
            assert torch.equal(torch.randn(3, generator=streams[i]), torch.randn(3, generator=own))
        assert not torch.allclose(together[0].raw, together[1].raw)
