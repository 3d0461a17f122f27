"""The critic meta-reward estimator (--model.meta.reward=critic): its sign, and a run with no rollouts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import fit
from torch import nn

from lightning_meta_rl.config import MetaConfig
from lightning_meta_rl.errors import ConfigError
from lightning_meta_rl.meta_reward import critic_improvement


class _Constant(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.full((obs.shape[0], 1), self.value)


class _PeakAtOne(nn.Module):
    """Q(s, a) = -(a - 1)^2: the best action is 1 in every state."""

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return -((action - 1.0) ** 2).sum(-1)


def test_critic_improvement_is_positive_when_pi_prime_is_better_and_antisymmetric() -> None:
    obs = torch.randn(50, 3)
    worse, better = _Constant(-1.0), _Constant(0.5)
    up = float(critic_improvement(_PeakAtOne(), worse, better, obs))
    assert up == pytest.approx(-(0.5**2) + 2.0**2)  # Q(better) - Q(worse) = -0.25 + 4
    assert float(critic_improvement(_PeakAtOne(), better, worse, obs)) == pytest.approx(-up)
    assert float(critic_improvement(_PeakAtOne(), better, better, obs)) == 0.0


def test_a_critic_meta_reward_run_spends_every_step_after_warm_up_on_teacher_data(tmp_path: Path) -> None:
    c = fit(tmp_path / "run", "--model.meta.reward=critic", "--trainer.log_every_n_steps=1")
    model, data = c.model, c.datamodule
    iterations = model.iteration
    assert iterations >= 5
    assert data.env_steps == data.warmup_steps + iterations * model.meta_cfg.d0_steps  # no D1, no R(pi) rollouts
    assert model.last_iteration.d1 is None and model.last_iteration.student is None
    assert model.teacher_steps == iterations  # one teacher step per iteration
    assert torch.isfinite(torch.tensor(model.last_iteration.meta_reward))


def test_the_default_is_the_papers_return_estimator_and_pairing_needs_rollouts() -> None:
    assert MetaConfig().reward == "return"
    with pytest.raises(ConfigError, match="paired_evaluation"):
        MetaConfig(reward="critic", paired_evaluation=True)
    with pytest.raises(ConfigError, match="critic_states"):
        MetaConfig(critic_states=0)
