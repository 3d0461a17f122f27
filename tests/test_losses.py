"""Loss functions and the polyak update against values computed by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_meta_rl.losses import actor_loss, critic_loss, polyak_update, td_target, teacher_loss


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_td_target_termination_stops_bootstrap() -> None:
    y = td_target(reward=t(1.0, 2.0, -1.0), next_q=t(10.0, 10.0, 4.0), terminated=t(0.0, 1.0, 0.0), gamma=0.9)
    # 1 + 0.9*10 ; 2 (terminal: no bootstrap) ; -1 + 0.9*4
    torch.testing.assert_close(y, t(10.0, 2.0, 2.6))


def test_td_target_all_terminated_is_reward() -> None:
    r = t(0.5, -3.0)
    torch.testing.assert_close(td_target(r, t(100.0, -100.0), t(1.0, 1.0), gamma=0.99), r)


def test_critic_loss_without_l2_is_mse_and_ignores_weights() -> None:
    q, y = t(1.0, 2.0), t(0.0, 4.0)
    big = [torch.full((3, 3), 100.0)]
    # ((1-0)^2 + (2-4)^2) / 2 = 2.5
    assert critic_loss(q, y, big, l2=0.0).item() == pytest.approx(2.5)


def test_critic_loss_with_l2_adds_half_l2_sum_of_squares() -> None:
    q, y = t(1.0, 2.0), t(0.0, 4.0)
    weights = [torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0]])]  # sum of squares 1 + 4 + 9 = 14
    # 2.5 + 0.5 * 0.1 * 14 = 3.2
    assert critic_loss(q, y, weights, l2=0.1).item() == pytest.approx(3.2)


def test_critic_loss_gradient_flows_to_weights_through_l2() -> None:
    w = torch.tensor([[1.0, -2.0]], requires_grad=True)
    critic_loss(t(0.0), t(0.0), [w], l2=0.5).backward()
    torch.testing.assert_close(w.grad, 0.5 * w.detach())  # d/dw (l2/2 * w^2) = l2 * w


def test_actor_loss_is_negative_mean_q() -> None:
    assert actor_loss(t(1.0, 2.0, 3.0, -2.0)).item() == pytest.approx(-1.0)


@pytest.mark.parametrize("m", [2.0, torch.tensor(2.0)])
def test_teacher_loss_is_minus_m_times_mean_log_prob(m: float | torch.Tensor) -> None:
    # -(2*(-1) + 2*(-3)) / 2 = 4
    assert float(teacher_loss(t(-1.0, -3.0), m)) == pytest.approx(4.0)


def test_teacher_loss_descent_raises_log_prob_when_m_positive() -> None:
    lp = torch.tensor([-1.0, -2.0], requires_grad=True)
    teacher_loss(lp, 3.0).backward()
    torch.testing.assert_close(lp.grad, t(-1.5, -1.5))  # -m / T: descent increases log pi_e


def _linear(w: list[float], b: float) -> nn.Linear:
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([w]))
        layer.bias.fill_(b)
    return layer


def test_polyak_update_tau_0_1_exact_values() -> None:
    target, source = _linear([1.0, 2.0], 0.0), _linear([11.0, -8.0], 10.0)
    polyak_update(list(target.parameters()), list(source.parameters()), tau=0.1)
    # 0.9 * [1, 2] + 0.1 * [11, -8] = [2, 1];  0.9 * 0 + 0.1 * 10 = 1
    torch.testing.assert_close(target.weight, torch.tensor([[2.0, 1.0]]))
    torch.testing.assert_close(target.bias, torch.tensor([1.0]))
    torch.testing.assert_close(source.weight, torch.tensor([[11.0, -8.0]]))  # source untouched


def test_polyak_update_tau_1_copies() -> None:
    target, source = _linear([1.0, 2.0], 0.0), _linear([11.0, -8.0], 10.0)
    polyak_update(list(target.parameters()), list(source.parameters()), tau=1.0)
    for p, q in zip(target.parameters(), source.parameters(), strict=True):
        assert torch.equal(p, q)
