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
META = ["--model.teacher.kind=meta", "--data.total_env_steps=3200"]  # D0 does not end the last iteration


def logged_rows(run_dir: Path, every: int, arm: list[str]) -> list[dict[str, str]]:
    """The iteration metrics as written by a CSV logger."""
    fit(
        run_dir,
        *arm,
        f"--trainer.log_every_n_steps={every}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={run_dir / 'csv'}",
    )
    (path,) = (run_dir / "csv").rglob("metrics.csv")
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("student/updates")]  # not the evaluation rows


def gaps(rows: list[dict[str, str]]) -> dict[float, float]:
    return {float(r["env_steps"]): float(r["explore/action_gap"]) for r in rows}


@pytest.mark.parametrize("arm", [DDPG, META], ids=["ddpg", "meta"])
def test_the_action_gap_of_every_written_row_is_the_one_of_its_iteration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arm: list[str]
) -> None:
    calls: list[bool] = []  # one per computed gap: whether D0 had spent the budget
    original = MetaRLModule._action_gap

    def spy(self, data, d0):
        calls.append(data.budget_spent)
        return original(self, data, d0)

    monkeypatch.setattr(MetaRLModule, "_action_gap", spy)
    every_iteration = gaps(logged_rows(tmp_path / "a", 1, arm))
    iterations = len(calls)
    assert len(every_iteration) == iterations >= 5
    assert iterations % 5 != 0  # so that the last iteration is written only because it is the last
    assert calls[-1] == (arm is DDPG)  # in the Meta arm, D1 and R(pi), not D0, end the run
    calls.clear()
    every_fifth = gaps(logged_rows(tmp_path / "b", 5, arm))
    # iterations 5, 10, ... and the last one, each with its own value (none stale, none missing)
    assert len(every_fifth) == iterations // 5 + 1
    assert every_fifth == {k: every_iteration[k] for k in every_fifth}
    assert max(every_fifth) == max(every_iteration)  # the last iteration is among them
    if arm is DDPG:  # computed only for the written iterations (the Meta arm cannot know that in advance)
        assert len(calls) == len(every_fifth)


def test_a_metric_not_measured_in_an_iteration_is_written_as_nan_not_repeated(tmp_path: Path) -> None:
    # Pendulum episodes last 200 steps and D0 has 100: every other D0 ends no episode
    rows = logged_rows(tmp_path / "run", 1, DDPG)
    returns = [r["train/episode_return"] for r in rows]
    assert "nan" in returns and any(v != "nan" for v in returns)
    measured = [v for v in returns if v != "nan"]
    assert len(set(measured)) == len(measured)


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


def test_non_finite_final_weights_stop_the_run_also_without_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = MetaRLModule.on_train_batch_end

    def poison_at_the_end(self, outputs, batch, batch_idx):
        original(self, outputs, batch, batch_idx)
        if self.trainer.should_stop:  # a target weight the losses of this iteration never saw
            with torch.no_grad():
                self.student.actor_target.net[0].weight[0, 0] = float("nan")

    monkeypatch.setattr(MetaRLModule, "on_train_batch_end", poison_at_the_end)
    with pytest.raises(TrainingDiverged, match=r"parameter student\.actor_target\.net\.0\.weight"):
        fit(tmp_path / "run", *DDPG, "--trainer.enable_checkpointing=false")
