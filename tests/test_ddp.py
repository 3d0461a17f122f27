"""Two-process DDP on CPU through the real command line: one run directory, one summary line, one
checkpoint; every rank ends with the same teacher, student and targets after seeing different episodes.

Per-rank state comes from tests/ddp_probe.py (a test-only callback added with ``--trainer.callbacks+=``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import read_metrics, run_ddp_fit

SUMMARY = "lightning-meta-rl: final eval/return"


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    result = run_ddp_fit(run_dir)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count(SUMMARY) == 1, result.stdout[-4000:]  # rank 0 only
    return run_dir


def load_probe(run_dir: Path, rank: int) -> dict:
    return torch.load(run_dir / f"probe_rank{rank}.pt", weights_only=False)


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys() and a, what
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, f"{what} differs across ranks: {differing}"


def test_ddp_writes_one_run_directory(ddp_run: Path) -> None:
    header, rows = read_metrics(ddp_run)
    assert header[:3] == ["env_steps", "iteration", "eval/return"]
    assert len(rows) >= 1
    assert float(rows[-1]["env_steps"]) >= 2000  # the smoke budget, per rank
    assert (ddp_run / "config.yaml").is_file()
    assert (ddp_run / "checkpoints" / "last.ckpt").is_file()
    assert not list((ddp_run / "checkpoints").glob("*.tmp"))
    assert sorted(p.name for p in ddp_run.glob("probe_rank*.pt")) == ["probe_rank0.pt", "probe_rank1.pt"]


def test_ddp_checkpoint_holds_teacher_and_student(ddp_run: Path) -> None:
    ckpt = torch.load(ddp_run / "checkpoints" / "last.ckpt", weights_only=False)
    state = ckpt["state_dict"]
    teacher = {k.removeprefix("exploration."): v for k, v in state.items() if k.startswith("exploration.")}
    student = {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}
    assert any("mean_net" in k for k in teacher) and "head.log_std" in teacher
    assert any(k.startswith("actor.") for k in student) and any(k.startswith("critic.") for k in student)
    assert any(k.startswith("actor_target.") for k in student) and any(k.startswith("critic_target.") for k in student)
    assert len(ckpt["optimizer_states"]) == 3  # actor, critic, teacher
    # it is rank 0's final state
    probe = load_probe(ddp_run, 0)
    assert_same(teacher, probe["teacher"], "checkpoint vs rank 0 teacher")
    assert_same({k: student[k] for k in probe["student"]}, probe["student"], "checkpoint vs rank 0 student")


def test_ranks_agree_on_parameters_and_saw_different_episodes(ddp_run: Path) -> None:
    p0, p1 = load_probe(ddp_run, 0), load_probe(ddp_run, 1)
    assert (p0["rank"], p1["rank"]) == (0, 1)
    assert p0["world_size"] == p1["world_size"] == 2
    assert p0["global_step"] == p1["global_step"] > 0  # the same number of updates on every rank
    for what in ("teacher", "student", "target"):
        assert_same(p0[what], p1[what], what)
    # ...and training changed them (identical-because-untouched would prove nothing)
    assert any(not torch.equal(p0["teacher"][k], p0["initial"]["teacher"][k]) for k in p0["teacher"])
    assert any(not torch.equal(p0["student"][k], p0["initial"]["student"][k]) for k in p0["student"])
    assert any(not torch.equal(p0["target"][k], p0["initial"]["student"][k]) for k in p0["target"])
    # different environment seeds per rank: the first D0 starts from different states
    d0, d1 = p0["first_d0_obs"], p1["first_d0_obs"]
    assert d0 is not None and d1 is not None and d0.shape == d1.shape
    assert not torch.allclose(d0, d1)
    assert not torch.allclose(d0[0], d1[0])


def test_ddp_checkpoint_keeps_every_rank_state(ddp_run: Path) -> None:
    ckpt = torch.load(ddp_run / "checkpoints" / "last.ckpt", weights_only=True)
    data, counters = ckpt["RolloutDataModule"]["per_rank"], ckpt["meta_rl"]["per_rank"]
    assert len(data) == 2 and len(counters) == 2
    rng = [d["collectors"]["train_collector"]["runners"][0]["np_random"] for d in data]
    assert rng[0] != rng[1]  # each rank resumes its own environments, not rank 0's
    assert not torch.equal(data[0]["rng"]["noise_rng"], data[1]["rng"]["noise_rng"])
