"""What the module computes only for the loggers, and what it checks before a checkpoint is written."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import fit

from lightning_meta_rl.errors import TrainingDiverged
from lightning_meta_rl.module import MetaRLModule

DDPG = ["--model.teacher.kind=gaussian", "--data.total_env_steps=1400"]


def logged_gaps(run_dir: Path, every: int) -> dict[float, float]:
    """explore/action_gap per env_steps, as written by a CSV logger."""
    fit(
        run_dir,
        *DDPG,
        f"--trainer.log_every_n_steps={every}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={run_dir / 'csv'}",
    )
    (path,) = (run_dir / "csv").rglob("metrics.csv")
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("explore/action_gap")]
    return {float(r["env_steps"]): float(r["explore/action_gap"]) for r in rows}


def test_action_gap_is_computed_for_written_iterations_only_with_unchanged_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    computed: list[bool] = []
    original = MetaRLModule._action_gap

    def spy(self, data, d0):
        out = original(self, data, d0)
        computed.append(bool(out))
        return out

    monkeypatch.setattr(MetaRLModule, "_action_gap", spy)
    every_iteration = logged_gaps(tmp_path / "a", every=1)
    assert len(every_iteration) == len(computed) >= 10 and all(computed)
    computed.clear()
    every_third = logged_gaps(tmp_path / "b", every=3)
    # iterations 3, 6, 9, ... and the last one (its D0 spends the budget in the DDPG arm)
    assert sum(computed) == len(every_third) == len(computed) // 3 + (len(computed) % 3 != 0)
    # the same values as when every iteration is logged: computed at the same point of the iteration
    assert every_third == {k: every_iteration[k] for k in every_third}


def test_a_checkpoint_is_never_written_from_non_finite_parameters(tmp_path: Path) -> None:
    c = fit(tmp_path / "run", *DDPG)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    with torch.no_grad():
        c.model.student.critic_target.rest[0].weight[0, 0] = float("inf")
    with pytest.raises(TrainingDiverged, match=r"parameter student\.critic_target\.rest\.0\.weight"):
        c.trainer.save_checkpoint(last)
    assert last.read_bytes() == before
    with pytest.raises(TrainingDiverged):
        c.trainer.save_checkpoint(tmp_path / "new.ckpt")
    assert not (tmp_path / "new.ckpt").exists()
