"""ActionScale with asymmetric bounds, actor outputs inside them, critic layout, uniform warm-up policy."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from lightning_meta_rl.networks import ActionScale, Actor, Critic, GaussianHead, Student
from lightning_meta_rl.policies import UniformPolicy

LOW, HIGH = [-1.0, 0.0], [3.0, 0.5]


@pytest.fixture
def scale() -> ActionScale:
    return ActionScale(LOW, HIGH)


def test_action_scale_maps_unit_box_ends_to_bounds(scale: ActionScale) -> None:
    assert scale(torch.tensor([-1.0, -1.0])).tolist() == LOW
    assert scale(torch.tensor([1.0, 1.0])).tolist() == HIGH
    torch.testing.assert_close(scale(torch.zeros(2)), torch.tensor([1.0, 0.25]))  # the box's centre
    torch.testing.assert_close(scale.half_range, torch.tensor([2.0, 0.25]))


def test_action_scale_inverse_of_forward_is_identity(scale: ActionScale) -> None:
    u = torch.rand(100, 2) * 2 - 1
    torch.testing.assert_close(scale.inverse(scale(u)), u)
    a = torch.tensor(LOW) + torch.rand(100, 2) * (torch.tensor(HIGH) - torch.tensor(LOW))
    torch.testing.assert_close(scale(scale.inverse(a)), a)
    assert scale.inverse(torch.tensor(LOW)).tolist() == [-1.0, -1.0]


def test_action_scale_clip(scale: ActionScale) -> None:
    out = scale.clip(torch.tensor([[-5.0, 9.0], [4.0, -0.1], [0.5, 0.2]]))
    assert torch.equal(out, torch.tensor([[-1.0, 0.5], [3.0, 0.0], [0.5, 0.2]]))


def test_action_scale_half_range_and_host_bounds_follow_loaded_bounds() -> None:
    scale = ActionScale([-1.0, 0.0], [1.0, 0.5])
    other = ActionScale([-4.0, 2.0], [0.0, 3.0])
    assert "half_range" not in scale.state_dict()  # checkpoints written before it existed still load
    scale.load_state_dict(other.state_dict())
    assert scale.half_range.tolist() == [2.0, 0.5]
    assert scale(torch.tensor([1.0, 1.0])).tolist() == [0.0, 3.0]
    assert [b.tolist() for b in scale.host] == [[-4.0, 2.0], [0.0, 3.0], [2.0, 0.5]]  # host copies too


def test_networks_pickle_and_copy_with_their_action_scale() -> None:
    """ddp_spawn and torch.save(model) pickle the modules; the look-ahead deep-copies them."""
    actor = Actor(3, ActionScale([-2.0], [2.0]), [8, 8], layer_norm=True)
    for clone in (pickle.loads(pickle.dumps(actor)), copy.deepcopy(actor)):
        assert clone.scale.half_range.tolist() == [2.0]
        clone.scale.load_state_dict(ActionScale([0.0], [1.0]).state_dict())
        assert clone.scale.half_range.tolist() == [0.5]
        assert clone.scale.host.half_range.tolist() == [0.5]
        assert actor.scale.half_range.tolist() == [2.0]


@pytest.mark.parametrize(("low", "high"), [([0.0], [0.0]), ([1.0, 0.0], [0.0, 1.0]), ([0.0, 0.0], [1.0])])
def test_action_scale_rejects_bad_bounds(low: list[float], high: list[float]) -> None:
    with pytest.raises(ValueError):
        ActionScale(low, high)


@pytest.mark.parametrize("layer_norm", [True, False])
def test_actor_output_inside_asymmetric_bounds_for_large_inputs(scale: ActionScale, layer_norm: bool) -> None:
    torch.manual_seed(0)
    actor = Actor(4, scale, [16, 16], layer_norm)
    with torch.no_grad():
        for p in actor.parameters():
            p.mul_(20)  # saturate the tanh
        a = actor(torch.randn(2000, 4) * 1e3)
    low, high = torch.tensor(LOW), torch.tensor(HIGH)
    assert bool((a >= low).all()) and bool((a <= high).all())
    # saturation really reached both ends of the asymmetric box (a symmetric [-1, 1] map would not)
    assert float(a[:, 0].max()) > 2.9 and float(a[:, 1].max()) > 0.49
    assert float(a[:, 0].min()) < -0.9 and float(a[:, 1].min()) < 0.01


def test_critic_sees_unit_actions_and_l2_weights_exclude_output(scale: ActionScale) -> None:
    critic = Critic(3, scale, [8, 6], layer_norm=True)
    shapes = [tuple(w.shape) for w in critic.weight_matrices()]
    assert shapes == [(8, 3), (6, 8 + 2)]  # action joins at the second layer; output layer not penalised
    q = critic(torch.randn(5, 3), torch.tensor(HIGH).repeat(5, 1))
    assert q.shape == (5,)


def test_critic_needs_two_hidden_layers(scale: ActionScale) -> None:
    with pytest.raises(ValueError):
        Critic(3, scale, [8], layer_norm=False)


def test_uniform_policy_inside_bounds_and_covers_them(scale: ActionScale) -> None:
    policy = UniformPolicy(scale, torch.Generator().manual_seed(0))
    acts = torch.cat([policy.act(torch.zeros(1, 3)).executed for _ in range(2000)])
    low, high = torch.tensor(LOW), torch.tensor(HIGH)
    assert bool((acts >= low).all()) and bool((acts <= high).all())
    span = acts.max(0).values - acts.min(0).values
    torch.testing.assert_close(span, high - low, atol=0.05 * 4, rtol=0.05)
    torch.testing.assert_close(acts.mean(0), (low + high) / 2, atol=0.1, rtol=0)


def test_gaussian_head_std_in_env_units_and_log_prob(scale: ActionScale) -> None:
    head = GaussianHead(2, scale, sigma=0.2, learn_std=False, hidden=None)
    torch.testing.assert_close(head.std(), 0.2 * torch.tensor([2.0, 0.25]))
    ctx = torch.tensor([[1.0, 0.25]])
    a = torch.tensor([[1.4, 0.2]])
    expected = torch.distributions.Normal(ctx, head.std()).log_prob(a).sum(-1)
    torch.testing.assert_close(head.log_prob(ctx, a), expected)
    assert list(head.parameters()) == []  # fixed std is a buffer


def _same_tensors(cached: list[torch.Tensor], module: torch.nn.Module) -> bool:
    own = list(module.parameters())
    return len(cached) == len(own) and all(c is p for c, p in zip(cached, own, strict=True))


def test_student_params_are_each_copys_own(scale: ActionScale) -> None:
    # the update reads the cached parameter lists: a copy, a stack or a member with a stale cache would train
    # (and polyak-average into) another student's tensors
    student = Student(3, scale, (8, 8), True)
    student.params()  # cached before copying
    for other in (copy.deepcopy(student), student.stacked(2), Student.stack([student, student]).member(1)):
        nets = other.params()
        assert _same_tensors(list(nets.actor.values()), other.actor)
        assert _same_tensors(list(nets.critic.values()), other.critic)
        assert _same_tensors(nets.actor_target, other.actor_target)
        assert _same_tensors(nets.critic_target, other.critic_target)
    moved = student.to(torch.float64)  # in place: the cache still holds the module's parameters
    assert _same_tensors(list(moved.params().critic.values()), moved.critic)


def test_stacking_modules_stacks_layers_and_vectors_and_refuses_what_it_cannot_stack() -> None:
    from lightning_meta_rl.members import stack_modules

    class Scaled(nn.Module):  # a vector parameter used elementwise, and a buffer
        def __init__(self, width: int) -> None:
            super().__init__()
            self.linear = nn.Linear(3, width)
            self.gain = nn.Parameter(torch.randn(width))
            self.register_buffer("offset", torch.ones(width))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x) * self.gain + self.offset

    torch.manual_seed(0)
    plain = [Scaled(4), Scaled(4)]
    stacked = stack_modules(plain)
    assert stacked.gain.shape == (2, 1, 4)  # rows, broadcast member by member
    x = torch.randn(2, 5, 3)
    out = stacked(x)
    for m in range(2):
        torch.testing.assert_close(out[m], plain[m](x[m]))
    plain[1].offset.fill_(2.0)  # a buffer kept once must be the same in every module
    with pytest.raises(ValueError, match="buffer 'offset' differs"):
        stack_modules(plain)
    matrix = nn.Module()
    matrix.weight = nn.Parameter(torch.randn(2, 2))  # a matrix outside a layer with a member form
    with pytest.raises(TypeError, match="no member form for the parameter 'weight'"):
        stack_modules([matrix, matrix])
