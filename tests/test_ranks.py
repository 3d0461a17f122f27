"""Per-rank checkpoint state: each DDP rank takes its own part back; a different process count is refused."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lightning_meta_rl.errors import ConfigError
from lightning_meta_rl.ranks import gather_per_rank, own_rank


def trainer(rank: int, world: int, fn: str = "fit") -> SimpleNamespace:
    return SimpleNamespace(global_rank=rank, world_size=world, state=SimpleNamespace(fn=fn))


def test_single_process_state_is_stored_as_is() -> None:
    state = {"env_steps": 5}
    assert gather_per_rank(trainer(0, 1), state) is state  # type: ignore[arg-type]
    assert gather_per_rank(None, state) is state
    assert own_rank(trainer(0, 1), state) is state  # type: ignore[arg-type]


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_each_rank_takes_its_own_part(rank: int) -> None:
    state = {"per_rank": [{"env_steps": 10}, {"env_steps": 11}, {"env_steps": 12}]}
    assert own_rank(trainer(rank, 3), state) == {"env_steps": 10 + rank}  # type: ignore[arg-type]


def test_resuming_with_another_process_count_is_refused() -> None:
    two = {"per_rank": [{"env_steps": 1}, {"env_steps": 2}]}
    with pytest.raises(ConfigError, match="written by 2 training process"):
        own_rank(trainer(0, 1), two)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="written by 1 training process"):
        own_rank(trainer(1, 2), {"env_steps": 1})  # type: ignore[arg-type]


def test_validation_of_a_ddp_checkpoint_uses_rank_zero() -> None:
    two = {"per_rank": [{"env_steps": 1}, {"env_steps": 2}]}
    assert own_rank(trainer(0, 1, fn="validate"), two) == {"env_steps": 1}  # type: ignore[arg-type]
