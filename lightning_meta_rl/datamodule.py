"""RolloutDataModule: the rollout engine. Owns environments, collectors, replay buffer, observation
statistics and the per-rank random streams; counts every environment step against the budget."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from lightning_meta_rl.buffer import ReplayBuffer, RunningNorm, gather
from lightning_meta_rl.envs import ROLE_EVAL, ROLE_ROLLOUT, ROLE_TRAIN, EnvRunner, env_seed, probe
from lightning_meta_rl.errors import ConfigError
from lightning_meta_rl.ranks import gather_per_rank, own_rank
from lightning_meta_rl.rollout import Collector, Policy
from lightning_meta_rl.types import Batch, Rollout


class _Ticks(IterableDataset):
    """An endless stream of iteration numbers. Lightning prefetches one item ahead, so the stream
    carries no data: every rollout happens inside ``training_step``, with the policy as it is then."""

    def __iter__(self) -> Iterator[int]:
        i = 0
        while True:
            yield i
            i += 1


class _Episodes(Dataset):
    """``n`` evaluation items for the validate / test loops (each runs ``eval_episodes`` episodes)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class RolloutDataModule(L.LightningDataModule):
    """Environments, collectors and the replay buffer for one rank.

    Args:
        env_id: any gymnasium id with a flat Box observation and a Box action space; ``module:EnvId-v0``
            imports ``module`` first (for environments of your own).
        total_env_steps: budget of environment steps for this rank; every step counts (warm-up, D0, D1,
            R(pi) rollouts); reporting evaluation does not. Training stops at the first iteration boundary
            at or past it.
        warmup_steps: uniformly random steps stored in the buffer before any update (counted).
        buffer_size: replay capacity in transitions.
        normalize_obs: running mean/std observation normalization (clipped to +-obs_clip).
        obs_clip: clip of normalized observations.
        eval_every: reporting evaluation (and a checkpoint) every this many environment steps.
        eval_episodes: deterministic student episodes per reporting evaluation (not counted in the budget);
            also the episodes of ``validate`` and ``test``.
        seed: base seed of the environments and random streams (linked from ``seed_everything``).
        env_kwargs: extra keyword arguments for ``gymnasium.make``.
        num_envs: training environments stepped together with one batched policy call (D0 of the Meta
            arm, all exploration data of the DDPG arm); D1, R(pi) and evaluation use one environment each.
            Each collection then takes a whole number of steps of every environment.
        checkpoint_buffer: store the replay buffer in checkpoints, so that a resumed run continues exactly
            (large: about 2 * obs_dim + act_dim + 2 floats per stored transition).
    """

    def __init__(
        self,
        env_id: str = "Pendulum-v1",
        total_env_steps: int = 100_000,
        warmup_steps: int = 1_000,
        buffer_size: int = 1_000_000,
        normalize_obs: bool = True,
        obs_clip: float = 5.0,
        eval_every: int = 5_000,
        eval_episodes: int = 5,
        seed: int = 0,
        env_kwargs: dict[str, Any] | None = None,
        checkpoint_buffer: bool = True,
        num_envs: int = 1,
    ) -> None:
        super().__init__()
        for name, value in (
            ("num_envs", num_envs),
            ("total_env_steps", total_env_steps),
            ("buffer_size", buffer_size),
            ("eval_every", eval_every),
            ("eval_episodes", eval_episodes),
            ("obs_clip", obs_clip),
        ):
            if value <= 0:
                raise ConfigError(f"data.{name} must be positive, got {value}")
        if warmup_steps < 0:
            raise ConfigError(f"data.warmup_steps must be >= 0, got {warmup_steps}")
        if warmup_steps >= total_env_steps:
            raise ConfigError(
                f"data.warmup_steps ({warmup_steps}) must be smaller than data.total_env_steps ({total_env_steps})"
            )
        self.env_id = env_id
        self.total_env_steps = total_env_steps
        self.warmup_steps = warmup_steps
        self.buffer_size = buffer_size
        self.normalize_obs = normalize_obs
        self.obs_clip = obs_clip
        self.eval_every = eval_every
        self.eval_episodes = eval_episodes
        self.seed = seed
        self.env_kwargs = env_kwargs
        self.checkpoint_buffer = checkpoint_buffer
        self.num_envs = num_envs
        self.spec = probe(env_id, env_kwargs)  # fails here, at start-up, for unusable environments
        self.env_steps = 0
        self._ready = False
        self._pending_state: dict[str, Any] | None = None

    # Environment facts, linked into the model by the CLI.
    @property
    def obs_dim(self) -> int:
        return self.spec.obs_dim

    @property
    def act_dim(self) -> int:
        return self.spec.act_dim

    @property
    def action_low(self) -> list[float]:
        return self.spec.action_low

    @property
    def action_high(self) -> list[float]:
        return self.spec.action_high

    @property
    def budget_spent(self) -> bool:
        return self.env_steps >= self.total_env_steps

    def setup(self, stage: str) -> None:
        if self._ready:
            return
        rank = self.trainer.global_rank if self.trainer is not None else 0
        self.rank = rank
        self.normalizer = RunningNorm(self.obs_dim, self.obs_clip, enabled=self.normalize_obs)
        self.buffer = ReplayBuffer(self.buffer_size, self.obs_dim, self.act_dim)

        def runners(role: int, n: int) -> list[EnvRunner]:
            return [EnvRunner(self.env_id, self.env_kwargs, env_seed(self.seed, rank, role, i)) for i in range(n)]

        self.train_collector = Collector(runners(ROLE_TRAIN, self.num_envs), self.normalizer)
        self.rollout_collector = Collector(runners(ROLE_ROLLOUT, 1), self.normalizer)
        self.eval_collector = Collector(runners(ROLE_EVAL, 1), self.normalizer)
        # one generator for exploration noise / teacher samples, one for minibatch sampling, one for pairing seeds
        self.noise_rng = torch.Generator().manual_seed(env_seed(self.seed, rank, 3))
        self.sample_rng = torch.Generator().manual_seed(env_seed(self.seed, rank, 4))
        self.pair_rng = torch.Generator().manual_seed(env_seed(self.seed, rank, 5))
        self._ready = True

    def on_exception(self, exception: BaseException) -> None:
        self.teardown("exception")  # Lightning skips teardown when training stops with an exception

    def teardown(self, stage: str) -> None:
        if self._ready:
            for c in (self.train_collector, self.rollout_collector, self.eval_collector):
                for runner in c.runners:
                    runner.close()
            self._ready = False

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Ticks(), batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        # during fit, evaluation runs every `eval_every` env steps inside the training step instead
        fitting = self.trainer is not None and self.trainer.state.fn == "fit"
        return DataLoader(_Episodes(0 if fitting else 1), batch_size=None)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(_Episodes(1), batch_size=None)

    # ---- rollouts (each counted against the budget) ----
    def collect_steps(self, policy: Policy, n: int) -> Rollout:
        """n steps on the training environments (capped by what is left of the budget; at least 1; rounded up
        to a whole number of steps of every environment)."""
        n = max(1, min(n, self.total_env_steps - self.env_steps))
        rollout = self.train_collector.steps(policy, n)
        self.env_steps += len(rollout)
        return rollout

    def collect_episodes(self, policy: Policy, k: int, seed: int | None = None) -> Rollout:
        """k whole episodes on the student-rollout environment (D1, R(pi)); counted in the budget."""
        rollout = self.rollout_collector.episodes(policy, k, seed)
        self.env_steps += len(rollout)
        return rollout

    def pairing_seed(self) -> int:
        """A fresh reset seed for paired (common random numbers) evaluation of pi and pi'."""
        return int(torch.randint(0, 2**31 - 1, (1,), generator=self.pair_rng))

    def evaluate(self, policy: Policy) -> Rollout:
        """``eval_episodes`` episodes on the evaluation environment (not counted); ``.mean_return`` scores them."""
        return self.eval_collector.episodes(policy, self.eval_episodes)

    # ---- replay ----
    def add(self, rollout: Rollout) -> None:
        """Store a rollout in the replay buffer and fold its observations into the statistics."""
        self.buffer.add(rollout)
        self.normalizer.update(rollout.obs)

    def sample(self, batch_size: int, device: torch.device | None = None) -> Batch:
        """A normalized minibatch from the replay buffer."""
        return self._normalized(self.sample_raw(batch_size), device)

    def sample_raw(self, batch_size: int) -> Batch:
        """A minibatch from the replay buffer with its observations as stored (``sample`` normalizes them)."""
        return gather(self.buffer, self.buffer.sample_indices(batch_size, self.sample_rng))

    def sample_rollout(self, rollout: Rollout, batch_size: int, device: torch.device | None = None) -> Batch:
        """A normalized minibatch drawn uniformly from one rollout (the look-ahead trains on D0 only)."""
        return self._normalized(self.sample_rollout_raw(rollout, batch_size), device)

    def sample_rollout_raw(self, rollout: Rollout, batch_size: int) -> Batch:
        """``sample_rollout`` with the observations as collected."""
        return gather(rollout, torch.randint(0, len(rollout), (batch_size,), generator=self.sample_rng))

    def _normalized(self, b: Batch, device: torch.device | None) -> Batch:
        b = Batch(self.normalizer(b.obs), b.action, b.reward, self.normalizer(b.next_obs), b.terminated)
        if device is not None and device.type != "cpu":
            b = Batch(*(t.to(device, non_blocking=True) for t in b))
        return b

    # ---- checkpointing ----
    def state_dict(self) -> dict[str, Any]:
        if not self._ready:
            return {"env_steps": self.env_steps}
        return gather_per_rank(self.trainer, self._own_state())

    def _own_state(self) -> dict[str, Any]:
        state = {
            "env_id": self.env_id,  # read before resuming, to name a mismatched environment (checkpoint.py)
            "env_steps": self.env_steps,
            "normalizer": self.normalizer.state_dict(),
            "rng": {k: getattr(self, k).get_state() for k in ("noise_rng", "sample_rng", "pair_rng")},
            "collectors": {k: getattr(self, k).state_dict() for k in self._COLLECTORS},
        }
        if self.checkpoint_buffer:
            state["buffer"] = self.buffer.state_dict()
        return state

    _COLLECTORS = ("train_collector", "rollout_collector", "eval_collector")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = own_rank(self.trainer, state)
        self.env_steps = int(state["env_steps"])
        if "normalizer" in state:
            self._pending_state = state
            if self._ready:
                self.restore_pending_state()

    def restore_pending_state(self) -> None:
        """Apply a loaded checkpoint's state (statistics, generators, collectors, buffer) once the environments
        exist; the module calls it when training starts. Nothing to do without a loaded checkpoint."""
        state = self._pending_state
        if state is None:
            return
        self.normalizer.load_state_dict(state["normalizer"])
        for k, s in state["rng"].items():
            getattr(self, k).set_state(s)
        for k, s in state.get("collectors", {}).items():
            getattr(self, k).load_state_dict(s)
        if "buffer" in state:
            self.buffer.load_state_dict(state["buffer"])
        self._pending_state = None
