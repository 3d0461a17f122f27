"""``--model.compile=true`` (lightning_meta_rl/compiled.py): the compiled DDPG update computes what the eager
one computes (losses, parameters and Adam state within atol 1e-5 / rtol 1e-5 after a few updates on the
same batches), the look-ahead copy is reused without recompiling, a short fit evaluates like the eager fit,
and checkpoints (plain state_dict keys) save and resume. With DDP (slow: two ranks compile), the ranks end
with identical parameters.

Each compile costs seconds on CPU, so these tests are few and share their compiled code where they can.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import fit, read_metrics, run_ddp_fit
from torch._dynamo.utils import counters

from lightning_meta_rl.compiled import CompiledDDPG
from lightning_meta_rl.networks import ActionScale
from lightning_meta_rl.student import Student, ddpg_update, lookahead_copy, make_adam
from lightning_meta_rl.types import Batch

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = {"atol": 1e-5, "rtol": 1e-5}
QUIET = ["--trainer.callbacks=[]", "--trainer.enable_progress_bar=false", "--trainer.logger=false"]
# Meta arm on Pendulum: about 500 env steps per iteration (D0 100, D1 and R(pi) one episode each)
FIT = [*QUIET, "--data.total_env_steps=1800", "--data.eval_every=400"]
HP = {"gamma": 0.99, "tau": 0.01, "critic_l2": 1e-2}


def batches(n: int, obs_dim: int = 5, act_dim: int = 2, size: int = 32, seed: int = 0) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    return [
        Batch(
            torch.randn(size, obs_dim, generator=g),
            torch.rand(size, act_dim, generator=g) * 2 - 1,
            torch.randn(size, generator=g),
            torch.randn(size, obs_dim, generator=g),
            (torch.rand(size, generator=g) < 0.1).float(),
        )
        for _ in range(n)
    ]


def make_student() -> tuple[Student, torch.optim.Optimizer, torch.optim.Optimizer]:
    torch.manual_seed(0)
    s = Student(5, ActionScale([-1.0, -2.0], [1.0, 0.5]), (32, 32), layer_norm=True)
    return s, make_adam(list(s.actor.parameters()), 1e-3), make_adam(list(s.critic.parameters()), 1e-3)


def train(update, student, actor_opt, critic_opt, data: list[Batch]) -> list[dict[str, torch.Tensor]]:
    return [update(student, b, actor_opt, critic_opt, **HP, backward=torch.Tensor.backward) for b in data]


def assert_same_state(a: Student, b: Student, opts_a, opts_b) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, **TOL, msg=name)
    for oa, ob in zip(opts_a, opts_b, strict=True):
        for pa, pb in zip(oa.param_groups[0]["params"], ob.param_groups[0]["params"], strict=True):
            sa, sb = oa.state[pa], ob.state[pb]
            assert sa.keys() == sb.keys()
            for k in sa:
                torch.testing.assert_close(sa[k], sb[k], **TOL, msg=k)


def unique_graphs() -> int:
    return int(counters["stats"]["unique_graphs"])


def test_compiled_update_and_lookahead_match_eager_and_do_not_recompile() -> None:
    eager, e_actor, e_critic = make_student()
    comp, c_actor, c_critic = copy.deepcopy((eager, e_actor, e_critic))
    compiled = CompiledDDPG()
    data = batches(6)

    # the live student: same losses at every update, same parameters and Adam state after them
    for e, c in zip(
        train(ddpg_update, eager, e_actor, e_critic, data),
        train(compiled.update, comp, c_actor, c_critic, data),
        strict=True,
    ):
        for k in e:
            torch.testing.assert_close(c[k], e[k], **TOL, msg=k)
    assert_same_state(eager, comp, (e_actor, e_critic), (c_actor, c_critic))

    # look-ahead copies, twice: the compiled one is one reused copy and reuses the compiled code
    graphs = None
    for round_ in range(2):
        e_clone, e_ca, e_cc = lookahead_copy(eager, e_actor, e_critic)
        c_clone, c_ca, c_cc = compiled.lookahead_copy(comp, c_actor, c_critic)
        look = batches(4, seed=round_ + 1)
        train(ddpg_update, e_clone, e_ca, e_cc, look)
        train(compiled.update, c_clone, c_ca, c_cc, look)
        assert_same_state(e_clone, c_clone, (e_ca, e_cc), (c_ca, c_cc))
        # the students themselves are untouched by their look-ahead copies
        assert_same_state(eager, comp, (e_actor, e_critic), (c_actor, c_critic))
        if round_ == 0:
            first_clone = c_clone
            graphs = unique_graphs()
        else:
            assert c_clone is first_clone
            assert unique_graphs() == graphs, "the second look-ahead copy recompiled"
        # one more student update between look-aheads, as in Algorithm 1
        train(ddpg_update, eager, e_actor, e_critic, data[:1])
        train(compiled.update, comp, c_actor, c_critic, data[:1])
    assert unique_graphs() == graphs, "student updates after the look-ahead recompiled"


def test_both_compiled_forms_match_eager_and_the_plain_backward_takes_the_one_graph() -> None:
    """The one graph (plain autograd) writes no .grad; the pieces (a backward that must stay visible, as
    DDP's manual_backward) run real backwards. Both compute what the eager update computes."""
    eager, e_actor, e_critic = make_student()
    data = batches(5, seed=7)
    expected = train(ddpg_update, eager, e_actor, e_critic, data)
    for backward, grads_written in ((torch.Tensor.backward, False), (lambda loss: loss.backward(), True)):
        student, actor_opt, critic_opt = make_student()
        compiled = CompiledDDPG()
        got = [compiled.update(student, b, actor_opt, critic_opt, **HP, backward=backward) for b in data]
        for e, c in zip(expected, got, strict=True):
            for k in e:
                torch.testing.assert_close(c[k], e[k], **TOL, msg=k)
        assert_same_state(eager, student, (e_actor, e_critic), (actor_opt, critic_opt))
        assert all((p.grad is not None) == grads_written for p in student.parameters() if p.requires_grad)


def replace_first_weight(student: Student, critic_opt: torch.optim.Optimizer | None) -> torch.Tensor:
    """The critic's first weight becomes a new Parameter (same values) in the module, and in ``critic_opt``
    when given."""
    name, old = next(iter(student.critic.named_parameters()))
    module_name, _, attr = name.rpartition(".")
    new = torch.nn.Parameter(old.detach().clone())
    setattr(student.critic.get_submodule(module_name), attr, new)
    if critic_opt is not None:
        group = critic_opt.param_groups[0]
        group["params"][group["params"].index(old)] = new
        if old in critic_opt.state:
            critic_opt.state[new] = critic_opt.state.pop(old)
    return new


def test_the_one_graph_reads_each_parameter_from_its_module_at_every_update() -> None:
    """The layout of a network's parameters is kept between updates, the tensors are not: a parameter
    replaced in its module and its optimizer is the one the next updates train, as in eager; one replaced in
    the module only is not trained by the one graph (the update takes the pieces, which step the optimizer)."""
    eager, e_actor, e_critic = make_student()
    comp, c_actor, c_critic = copy.deepcopy((eager, e_actor, e_critic))
    compiled = CompiledDDPG()
    data = batches(4, seed=3)
    train(ddpg_update, eager, e_actor, e_critic, data[:2])
    train(compiled.update, comp, c_actor, c_critic, data[:2])
    replace_first_weight(eager, e_critic)
    new = replace_first_weight(comp, c_critic)
    before = new.detach().clone()
    train(ddpg_update, eager, e_actor, e_critic, data[2:])
    train(compiled.update, comp, c_actor, c_critic, data[2:])
    assert not torch.equal(new, before), "the replaced parameter was not trained"
    assert_same_state(eager, comp, (e_actor, e_critic), (c_actor, c_critic))

    # a whole submodule replaced, the optimizer told: the layout is built again and the new tensors are used
    name = next(n for n, _ in comp.critic.named_parameters())
    path = name.rpartition(".")[0]
    parent, _, child = path.rpartition(".")
    old_module = comp.critic.get_submodule(path)
    fresh = copy.deepcopy(old_module)
    setattr(comp.critic.get_submodule(parent) if parent else comp.critic, child, fresh)
    swap = {id(o): n for o, n in zip(old_module.parameters(), fresh.parameters(), strict=True)}
    group = c_critic.param_groups[0]
    group["params"] = [swap.get(id(p), p) for p in group["params"]]
    inputs = compiled._fused_inputs(comp, c_actor, c_critic)
    assert inputs is not None and inputs[1][name].data_ptr() == fresh.weight.data_ptr()

    replace_first_weight(comp, None)
    assert compiled._fused_inputs(comp, c_actor, c_critic) is None


def eval_returns(run_dir: Path) -> list[float]:
    _, rows = read_metrics(run_dir)
    return [float(r["eval/return"]) for r in rows]


def test_compiled_fit_evaluates_like_eager_and_checkpoints_resume(tmp_path: Path, monkeypatch) -> None:
    """Meta arm (student, look-ahead copy and teacher): the same evaluations within a tolerance, plain
    checkpoint keys, and a resumed compiled run that continues. Every update of this single-process run
    takes the one graph: the pieces' optimizer step is made to fail."""
    eager = fit(tmp_path / "eager", *FIT)

    def pieces_step(self, opt) -> None:
        raise AssertionError("a compiled update took the pieces path")

    monkeypatch.setattr(CompiledDDPG, "step", pieces_step)
    comp = fit(tmp_path / "comp", *FIT, "--model.compile=true")
    assert comp.model._compiled is not None and eager.model._compiled is None
    assert comp.trainer.global_step == eager.trainer.global_step > 0  # every fused step counted

    e_ret, c_ret = eval_returns(tmp_path / "eager"), eval_returns(tmp_path / "comp")
    assert len(c_ret) == len(e_ret) >= 3
    assert c_ret == pytest.approx(e_ret, rel=1e-3)  # observed: 1.5e-6
    for (name, a), (_, b) in zip(eager.model.state_dict().items(), comp.model.state_dict().items(), strict=True):
        torch.testing.assert_close(b, a, atol=1e-3, rtol=1e-3, msg=name)

    ckpt = torch.load(tmp_path / "comp" / "checkpoints" / "last.ckpt", weights_only=False)
    assert not [k for k in ckpt["state_dict"] if "_orig_mod" in k]
    assert list(ckpt["state_dict"]) == list(
        torch.load(tmp_path / "eager" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    )
    assert ckpt["hyper_parameters"]["compile"] is True

    steps = comp.datamodule.env_steps
    resumed = fit(
        tmp_path / "comp", *QUIET, "--model.compile=true", "--data.total_env_steps=2800", "--ckpt_path", "last"
    )
    assert resumed.datamodule.env_steps >= 2800 > steps
    after = eval_returns(tmp_path / "comp")
    assert after[: len(c_ret)] == c_ret and len(after) > len(c_ret)


@pytest.mark.slow
def test_ddp_with_compile_keeps_the_ranks_identical(tmp_path: Path) -> None:
    """Two CPU ranks (as tests/test_ddp.py): compiled losses, gradients averaged by manual_backward."""
    run_dir = tmp_path / "run"
    result = run_ddp_fit(run_dir, "--model.compile=true", timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]
    probes = [torch.load(run_dir / f"probe_rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert probes[0]["global_step"] == probes[1]["global_step"] > 0
    for what in ("teacher", "student", "target"):
        a, b = probes[0][what], probes[1][what]
        assert a.keys() == b.keys() and a
        assert not [k for k in a if not torch.equal(a[k], b[k])], what
