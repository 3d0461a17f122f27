"""ReplayBuffer (ring FIFO, sampling, checkpoint round trip) and RunningNorm (statistics, clipping)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_rollout

from lightning_meta_rl.buffer import ReplayBuffer, RunningNorm, StackedBuffers, StackedNorm, gather


def slots(buf: ReplayBuffer) -> list[float]:
    return buf.reward.tolist()


def assert_consistent(buf: ReplayBuffer) -> None:
    """make_rollout puts the same value in every field of a step: all slots must agree with reward."""
    v = buf.reward[:, None]
    torch.testing.assert_close(buf.obs, v.expand_as(buf.obs))
    torch.testing.assert_close(buf.action, v.expand_as(buf.action))
    torch.testing.assert_close(buf.next_obs, (v + 0.5).expand_as(buf.next_obs))
    torch.testing.assert_close(buf.terminated, (buf.reward % 2 == 0).float())


def test_add_fills_in_order() -> None:
    buf = ReplayBuffer(5, obs_dim=2, act_dim=1)
    buf.add(make_rollout(3))
    assert (len(buf), buf.pos) == (3, 3)
    assert slots(buf)[:3] == [0.0, 1.0, 2.0]


def test_wrap_around_overwrites_oldest() -> None:
    buf = ReplayBuffer(5, obs_dim=2, act_dim=1)
    buf.add(make_rollout(3, start=0))  # 0 1 2 . .
    buf.add(make_rollout(4, start=3))  # 3 4 go to slots 3, 4; 5 6 overwrite 0 1
    assert len(buf) == 5
    assert buf.pos == 2
    assert slots(buf) == [5.0, 6.0, 2.0, 3.0, 4.0]
    assert buf.reward[buf.pos].item() == 2.0  # the oldest survivor is next to be overwritten
    assert_consistent(buf)


def test_rollout_longer_than_capacity_keeps_newest() -> None:
    buf = ReplayBuffer(5, obs_dim=2, act_dim=1)
    buf.add(make_rollout(2, start=0))
    buf.add(make_rollout(8, start=10))  # only 13..17 can survive
    assert len(buf) == 5
    assert sorted(slots(buf)) == [13.0, 14.0, 15.0, 16.0, 17.0]
    assert buf.reward[buf.pos].item() == 13.0  # FIFO order kept: the oldest is overwritten next
    assert_consistent(buf)
    buf.add(make_rollout(1, start=99))
    assert sorted(slots(buf)) == [14.0, 15.0, 16.0, 17.0, 99.0]


def test_empty_rollout_is_a_no_op() -> None:
    buf = ReplayBuffer(5, obs_dim=2, act_dim=1)
    buf.add(make_rollout(0))
    assert (len(buf), buf.pos) == (0, 0)


def test_sampling_only_returns_filled_slots() -> None:
    buf = ReplayBuffer(100, obs_dim=2, act_dim=1)
    buf.add(make_rollout(7))
    idx = buf.sample_indices(2000, torch.Generator().manual_seed(0))
    assert int(idx.min()) >= 0 and int(idx.max()) < 7
    assert set(idx.tolist()) == set(range(7))  # and uniformly enough to hit every filled slot
    batch = gather(buf, idx)
    torch.testing.assert_close(batch.obs[:, 0], batch.reward)  # rows stay aligned across fields


def test_sampling_empty_buffer_raises() -> None:
    with pytest.raises(RuntimeError):
        ReplayBuffer(4, 2, 1).sample_indices(3, torch.Generator())


@pytest.mark.parametrize("n", [3, 12])  # partly filled, wrapped
def test_state_dict_round_trip(n: int) -> None:
    buf = ReplayBuffer(5, obs_dim=2, act_dim=1)
    buf.add(make_rollout(n))
    restored = ReplayBuffer(5, obs_dim=2, act_dim=1)
    restored.load_state_dict(buf.state_dict())
    assert (restored.pos, restored.size) == (buf.pos, buf.size)
    for name in ("obs", "next_obs", "action", "reward", "terminated"):  # the filled rows: the rest is never read
        assert torch.equal(getattr(restored, name)[: buf.size], getattr(buf, name)[: buf.size]), name
    buf.add(make_rollout(2, start=50))
    restored.add(make_rollout(2, start=50))
    assert torch.equal(restored.reward, buf.reward) and restored.pos == buf.pos


def test_state_dict_is_a_copy() -> None:
    buf = ReplayBuffer(5, obs_dim=2, act_dim=1)
    buf.add(make_rollout(3))
    state = buf.state_dict()
    buf.add(make_rollout(5, start=20))
    assert state["reward"].tolist() == [0.0, 1.0, 2.0]


def test_load_state_dict_rejects_other_capacity() -> None:
    buf = ReplayBuffer(5, 2, 1)
    buf.add(make_rollout(3))
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(6, 2, 1).load_state_dict(buf.state_dict())


# ----------------------------------------------------------------------------- RunningNorm
def test_running_norm_matches_numpy_over_batches() -> None:
    rng = np.random.default_rng(0)
    batches = [
        rng.normal(loc, scale, size=(n, 3)) for loc, scale, n in ((0, 1, 7), (5, 2, 20), (-3, 0.5, 1), (1, 4, 50))
    ]
    norm = RunningNorm(3, clip=1e9)
    for b in batches:
        norm.update(torch.from_numpy(b).float())
    data = np.concatenate(batches).astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(norm.var.numpy(), data.var(0), rtol=1e-6, atol=1e-6)
    assert norm.count == len(data)
    x = torch.from_numpy(data[:4]).float()
    expected = (data[:4] - data.mean(0)) / (data.std(0) + 1e-8)
    np.testing.assert_allclose(norm(x).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_running_norm_clips_to_plus_minus_clip() -> None:
    norm = RunningNorm(2, clip=5.0)
    norm.update(torch.tensor([[0.0, 0.0], [2.0, 2.0]]))  # mean 1, std 1
    out = norm(torch.tensor([[1e6, -1e6], [1.5, 0.0]]))
    assert out[0].tolist() == [5.0, -5.0]
    torch.testing.assert_close(out[1], torch.tensor([0.5, -1.0]))


def test_running_norm_disabled_is_identity() -> None:
    norm = RunningNorm(2, clip=5.0, enabled=False)
    norm.update(torch.tensor([[10.0, 20.0], [30.0, 40.0]]))
    x = torch.tensor([[1e6, -3.0]])
    assert torch.equal(norm(x), x)
    assert norm.count == 0


def test_running_norm_state_dict_round_trip() -> None:
    norm = RunningNorm(2, clip=5.0)
    norm.update(torch.randn(10, 2) * 3 + 1)
    other = RunningNorm(2, clip=5.0)
    other.load_state_dict(norm.state_dict())
    x = torch.randn(4, 2)
    assert torch.equal(other(x), norm(x)) and other.count == norm.count


def test_normalizing_on_the_host_gives_torchs_numbers_bit_for_bit() -> None:
    """Observations on the CPU are normalized by numpy: the same float32 subtraction, division and clip, each
    correctly rounded, so every value equals torch's computation of the formula (rows from one to a batch, a
    strided view, values beyond the clip)."""
    norm = RunningNorm(11, 5.0)
    g = torch.Generator().manual_seed(0)
    norm.update(torch.randn(1000, 11, generator=g) * 3 + 1)
    mean32, std32 = norm.mean.float(), (norm.var.sqrt() + 1e-8).float()
    for x in (torch.randn(1, 11, generator=g), torch.randn(64, 11, generator=g) * 40, torch.randn(8, 22)[:, ::2]):
        out = norm(x)
        assert out.dtype == torch.float32 and torch.equal(out, ((x - mean32) / std32).clamp(-5.0, 5.0))
    assert float(norm(torch.full((1, 11), 1e6)).max()) == 5.0


def test_stacked_norm_gives_each_member_its_own_normalizers_numbers_bit_for_bit() -> None:
    """Three members with their own statistics: the stacked call normalizes member m's rows as its own
    RunningNorm does, bit for bit, for every member and for a subset of them (rows 2 and 0, in that order);
    values beyond the clip are clipped; disabled, the observations pass unchanged."""
    g = torch.Generator().manual_seed(0)
    norms = [RunningNorm(4, 5.0) for _ in range(3)]
    for k, norm in enumerate(norms):
        norm.update(torch.randn(100, 4, generator=g) * (k + 1) + 3 * k)
    stacked = StackedNorm(norms)
    obs = [(torch.randn(2, 4, generator=g) * 30).numpy() for _ in range(3)]
    out = stacked([0, 1, 2], np.stack(obs))
    assert out.shape == (3, 2, 4) and float(out.abs().max()) == 5.0
    for k, norm in enumerate(norms):
        assert torch.equal(out[k], norm(torch.from_numpy(obs[k])))
    some = stacked([2, 0], np.stack([obs[2], obs[0]]))
    assert torch.equal(some[0], norms[2](torch.from_numpy(obs[2]))) and torch.equal(some[1], out[0])
    off = StackedNorm([RunningNorm(4, 5.0, enabled=False) for _ in range(2)])
    assert torch.equal(off([0, 1], np.stack(obs[:2])), torch.from_numpy(np.stack(obs[:2])))


def test_stacked_buffers_are_each_members_own_buffer_and_gather_them_at_once() -> None:
    """Three members' buffers as rows of one storage: each fills (and wraps around) as a buffer of its own, and
    one gather of members 2 and 0 gives exactly the rows each buffer's own gather gives."""
    stacked = StackedBuffers(3, 8, obs_dim=2, act_dim=1, device=torch.device("cpu"))
    alone = [ReplayBuffer(8, obs_dim=2, act_dim=1) for _ in range(3)]
    for k in range(3):
        for buffer in (stacked.buffers[k], alone[k]):
            buffer.add(make_rollout(5 + 3 * k, start=100 * k))  # member 2 wraps around
    for k in range(3):
        assert stacked.buffers[k].state_dict()["obs"].equal(alone[k].state_dict()["obs"]), k
        assert (stacked.buffers[k].pos, stacked.buffers[k].size) == (alone[k].pos, alone[k].size)
    idx = torch.tensor([[0, 7, 3, 3], [4, 1, 0, 2]])
    got = stacked.gather([2, 0], idx)
    for i, k in enumerate((2, 0)):
        want = gather(alone[k], idx[i])
        assert all(g[i].equal(w) for g, w in zip(got, want, strict=True)), k


def test_a_stacked_members_saved_buffer_is_a_copy_on_the_host() -> None:
    """What a checkpoint gets of a member's buffer does not change when the storage is written afterwards."""
    stacked = StackedBuffers(2, 4, obs_dim=2, act_dim=1, device=torch.device("cpu"))
    stacked.buffers[1].add(make_rollout(4))
    state = stacked.buffers[1].state_dict()
    stacked.buffers[1].add(make_rollout(4, start=50))
    assert state["obs"][:, 0].tolist() == [0.0, 1.0, 2.0, 3.0] and state["obs"].device.type == "cpu"
