"""--model.meta.samples=K: the leave-one-out baseline, the teacher step that uses it, and a run's accounting.
(That the K stacked look-ahead students are K copies of the one update is tests/test_learner.py's.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import fit, make_rollout
from test_errors import run_main

from lightning_meta_rl.config import MetaConfig
from lightning_meta_rl.errors import ConfigError
from lightning_meta_rl.meta_reward import leave_one_out
from lightning_meta_rl.types import Rollout


def test_leave_one_out_removes_what_every_sample_shares() -> None:
    m = [3.0, 1.0, -1.0]
    assert leave_one_out(m) == pytest.approx([3.0, 0.0, -3.0])  # 3 - mean(1, -1), 1 - mean(3, -1), -1 - mean(3, 1)
    shifted = leave_one_out([x + 100.0 for x in m])  # e.g. R(pi), common to all K
    assert shifted == pytest.approx(leave_one_out(m))
    assert sum(leave_one_out(m)) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="at least two"):
        leave_one_out([1.0])


def test_samples_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="samples"):
        MetaConfig(samples=0)
    with pytest.raises(ConfigError, match="inplace"):
        MetaConfig(samples=3, lookahead="inplace")
    for option in ("baseline", "normalize", "paired_evaluation"):
        with pytest.raises(ConfigError, match="leave-one-out"):
            MetaConfig(samples=3, **{option: True})


def test_k_samples_without_k_training_environments_is_refused_in_one_paragraph(tmp_path: Path, capsys) -> None:
    message = run_main(tmp_path, capsys, "--model.meta.samples=3")
    assert "data.num_envs=3" in message and "(got 1)" in message
    assert not (tmp_path / "run").exists()


def _teacher_model(tmp_path: Path):
    c = fit(tmp_path / "run", "--data.total_env_steps=300", "--trainer.logger=false")
    return c.model


def test_the_teacher_step_weights_each_segment_by_its_leave_one_out_advantage(tmp_path: Path) -> None:
    model = _teacher_model(tmp_path)
    segments = []
    for start in (0, 10, 20):
        seg = make_rollout(10, obs_dim=model.hparams.obs_dim, act_dim=1, start=start)
        seg.context = torch.randn(10, model.hparams.obs_dim)
        seg.raw_action = torch.randn(10, 1)
        segments.append(seg)
    m = [5.0, -1.0, 2.0]
    log_prob = model.exploration.log_prob(
        torch.cat([s.context for s in segments]), torch.cat([s.raw_action for s in segments])
    )
    adv = leave_one_out(m)
    expected = -sum(a * lp.mean() for a, lp in zip(adv, log_prob.split(10), strict=True)) / 3
    steps, counted = model.teacher_steps, model.meta_stats.count
    out = model.teacher_step(segments, m)
    assert out["teacher/loss"] == pytest.approx(float(expected.detach()), rel=1e-5)
    assert out["meta/reward_spread"] == pytest.approx(float(torch.tensor(m).std(correction=0)))
    assert model.teacher_steps == steps + 1
    assert model.meta_stats.count == counted + 3  # every sample feeds the signal-to-noise diagnostic


@pytest.mark.parametrize("reward", ["return", "critic"])
def test_a_k_sample_run_collects_k_segments_and_takes_one_teacher_step_per_iteration(
    tmp_path: Path, reward: str
) -> None:
    budget = 1400 if reward == "critic" else 2600  # a return iteration spends 300 + 3 * 200 + 200 steps
    c = fit(
        tmp_path / "run",
        "--model.meta.samples=3",
        "--data.num_envs=3",
        f"--model.meta.reward={reward}",
        f"--data.total_env_steps={budget}",
    )
    model, data = c.model, c.datamodule
    rec = model.last_iteration
    iterations = model.iteration
    assert iterations >= 2
    assert model.teacher_steps == iterations
    assert model.meta_stats.count == 3 * iterations
    if reward == "critic":  # no rollouts: every step after warm-up is teacher data
        warmup = -(-data.warmup_steps // 3) * 3  # a whole number of steps of each of the 3 environments
        assert data.env_steps == warmup + iterations * 3 * model.meta_cfg.d0_steps
        assert rec.d1 is None
    else:  # three look-aheads rolled out, one episode each (Pendulum: 200 steps), then R(pi)
        assert len(rec.d0) == 3 * model.meta_cfg.d0_steps
        assert len(rec.d1.episode_returns) == 3 and len(rec.d1) == 600
        # the three look-aheads start from one reset state (common random numbers for the comparison)
        assert torch.equal(rec.d1.obs[0], rec.d1.obs[200]) and torch.equal(rec.d1.obs[0], rec.d1.obs[400])
        assert not torch.equal(rec.d1.obs[1], rec.d1.obs[201])  # and then act differently
        assert rec.student is not None
    assert torch.isfinite(torch.tensor(rec.meta_reward))
    # segment i is environment i's own consecutive steps: each step starts where the previous one ended
    for i in range(3):
        seg = rec.d0.environment(i, 3)
        assert len(seg) == model.meta_cfg.d0_steps
        running = (seg.terminated[:-1] + seg.truncated[:-1]) == 0
        assert running.any()
        assert torch.equal(seg.next_obs[:-1][running], seg.obs[1:][running])


def test_one_environment_of_a_rollout_is_every_num_envs_th_step() -> None:
    r = make_rollout(10)
    r.context = torch.arange(10.0)[:, None]
    one = r.environment(1, 2)
    assert torch.equal(one.reward, torch.tensor([1.0, 3.0, 5.0, 7.0, 9.0]))
    assert torch.equal(one.context[:, 0], one.reward) and torch.equal(one.obs[:, 0], one.reward)


def test_rollout_concat_keeps_order_and_episodes() -> None:
    a, b = make_rollout(3), make_rollout(2, start=3)
    a.episode_returns, b.episode_returns = [1.0], [2.0, 3.0]
    both = Rollout.concat([a, b])
    assert torch.equal(both.reward, torch.arange(5.0))
    assert both.episode_returns == [1.0, 2.0, 3.0] and both.context is None
    assert Rollout.concat([a]) is a
