"""The data side of ``--population=N``: one ``RolloutDataModule`` per member (seed + k), collected in lockstep."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from lightning_meta_rl.buffer import StackedBuffers, StackedNorm, field_shapes
from lightning_meta_rl.datamodule import RolloutDataModule
from lightning_meta_rl.errors import ConfigError, TrainingDiverged
from lightning_meta_rl.population_args import check_population
from lightning_meta_rl.ranks import gather_per_rank, own_rank
from lightning_meta_rl.rollout import Action, Policy, Stepper, StepThreads, act_after_resets, drive, packed
from lightning_meta_rl.types import Batch

# acts for several members at once: (member indices, their normalized observations [members, E, obs], their
# environments that started an episode) -> one Action per member
Act = Callable[[list[int], torch.Tensor, list[list[int]]], list[Action]]


class PopulationDataModule(RolloutDataModule):
    """The data of N members: one ``RolloutDataModule`` per seed (``seed + k``), each complete in itself.

    Args: those of RolloutDataModule, and
        population: the number of members (set by ``--population``).
        env_threads: threads that step the members' environments at once (1: in turn, on the training
            thread). MuJoCo simulates without holding the GIL, so on a machine with cores to spare more threads
            shorten a population's collections and evaluations; the results are the same for any number.
    """

    def __init__(self, *args: Any, population: int = 2, env_threads: int = 1, **kwargs: Any) -> None:
        check_population(population)
        if env_threads < 1:
            raise ConfigError(f"data.env_threads must be at least 1, got {env_threads}")
        super().__init__(*args, **kwargs)
        self.population = population
        self.env_threads = env_threads
        self._threads: StepThreads | None = None
        self.member_args = (args, kwargs)
        self.members: list[RolloutDataModule] = []
        self.retired: set[int] = set()  # members retired by the module (diverged): no longer progress

    def setup(self, stage: str) -> None:
        if self.env_threads > 1 and self._threads is None:
            self._threads = StepThreads(self.env_threads)
        if self.members:
            return
        args, kwargs = self.member_args
        members = [RolloutDataModule(*args, **{**kwargs, "seed": self.seed + k}) for k in range(self.population)]
        for member in members:
            member.setup(stage)
        self.stacked_buffers = self._stacked_buffers()
        for member, buffer in zip(members, self.stacked_buffers.buffers, strict=True):
            member.buffer = buffer
        self.members = members  # last: a setup that failed above is done again in full

    def _stacked_buffers(self) -> StackedBuffers:
        """The members' replay buffers as one, on the device the population trains on."""
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        try:
            return StackedBuffers(self.population, self.buffer_size, self.obs_dim, self.act_dim, device)
        except torch.cuda.OutOfMemoryError:  # (torch.OutOfMemoryError from torch 2.5 on)
            per_row = 4 * sum(math.prod(shape) for shape in field_shapes(self.obs_dim, self.act_dim).values())
            need = self.population * self.buffer_size * per_row / 2**30
            raise ConfigError(
                f"the replay buffers of {self.population} members of {self.buffer_size} transitions need {need:.1f} "
                f"GiB on {device}, more than it has free; lower data.buffer_size (a buffer never holds more than "
                f"data.total_env_steps transitions) or --population."
            ) from None

    def teardown(self, stage: str) -> None:
        if self._threads is not None:  # first: no step may still run on an environment being closed
            self._threads.close()
            self._threads = None
        for member in self.members:
            member.teardown(stage)

    @property
    def env_steps(self) -> int:
        """The population's progress: the environment steps of its slowest member still training (members
        differ in the Meta arm, whose episodes end at different steps; a retired member's count stops). The
        population's budget is spent when every member's is."""
        going = [m.env_steps for k, m in enumerate(self.members) if k not in self.retired]
        return min(going or [m.env_steps for m in self.members]) if self.members else self._env_steps

    @env_steps.setter
    def env_steps(self, value: int) -> None:
        self._env_steps = value

    def collect_lockstep(self, members: list[int], n: int, act: Act) -> dict[int, Any]:
        """n steps of each given member's training environments, all members stepped together so that ``act``
        (member indices, their observations, their environments that started an episode -> Actions) acts for
        all of them at once. Returns each member's Rollout, or the TrainingDiverged that stopped it."""
        steppers = []
        for k in members:
            m = self.members[k]
            steppers.append(m.train_collector.stepper(max(1, min(n, m.total_env_steps - m.env_steps))))
        return self._drive(members, steppers, act)

    def collect_episodes_lockstep(self, members: list[int], k: int, seeds: dict[int, int] | None, act: Act) -> dict:
        """k whole episodes of each given member's student-rollout environment (D1, R(pi)), in lockstep as in
        ``collect_lockstep`` (members whose episodes end sooner drop out of the batched call); counted in each
        member's budget. ``seeds``: each member's first reset seed (None: none)."""
        steppers = [
            self.members[m].rollout_collector.episode_stepper(k, None if seeds is None else seeds[m]) for m in members
        ]
        return self._drive(members, steppers, act)

    def evaluate_lockstep(self, policies: dict[int, Policy]) -> dict[int, Any]:
        """Each given member's evaluation (``evaluate``: its ``eval_episodes`` episodes on its evaluation
        environment, not counted) by its policy, members stepped together (each acts alone: the same numbers
        as its own ``evaluate``). Returns each member's Rollout, or the TrainingDiverged that stopped it."""
        members = list(policies)
        steppers = [self.members[k].eval_collector.episode_stepper(self.members[k].eval_episodes) for k in members]

        def act(keys: list[int], obs: torch.Tensor, started: list[list[int]]) -> list[Action]:
            return [act_after_resets(policies[k], o, s) for k, o, s in zip(keys, obs, started, strict=True)]

        return self._drive(members, steppers, act, counted=False)

    def _drive(self, members: list[int], steppers: list[Stepper], act: Act, counted: bool = True) -> dict[int, Any]:
        # the statistics do not change within a collection (the rollouts are added after it)
        normalize = StackedNorm([self.members[k].normalizer for k in members])

        def act_all(keys: list[int], obs: list[np.ndarray], started: list[list[int]]) -> list[Action]:
            return act([members[i] for i in keys], normalize(keys, np.stack(obs)), started)

        with torch.inference_mode():
            results = drive(steppers, act_all, self._threads)
        out: dict[int, Any] = {}
        for k, result in zip(members, results, strict=True):
            if isinstance(result, TrainingDiverged):
                out[k] = result
                continue
            out[k] = packed(*result)  # outside inference mode: the rollout's tensors may enter autograd
            if counted:
                self.members[k].env_steps += len(out[k])
        return out

    def sample_stacked(self, batch_size: int, device: torch.device | None, members: list[int]) -> Batch:
        """One minibatch per given member from its own buffer (and its own sampling stream), stacked
        ``[N, B, ...]`` where the buffers are (one gather for all members); the other members' rows are zeros
        (they do not step). Each member's rows are bit-identical to its own ``sample``."""
        idx = torch.stack(
            [self.members[k].buffer.sample_indices(batch_size, self.members[k].sample_rng) for k in members]
        )
        return self._placed(self.stacked_buffers.gather(members, idx), members, members, self.population, device)

    def stacked(self, raw: dict[int, tuple[int, Batch]], rows: int, device: torch.device | None) -> Batch:
        """Raw minibatches by row (row -> (member, minibatch)) as one ``[rows, B, ...]`` batch, each row's
        observations normalized by its member's statistics (one operation for all rows; each row bit-identical
        to its member's own ``sample``); rows not given are zeros."""
        batch = Batch.stack([b for _, b in raw.values()])
        return self._placed(batch, [k for k, _ in raw.values()], list(raw), rows, device)

    def _placed(
        self, batch: Batch, owners: list[int], given: list[int], rows: int, device: torch.device | None
    ) -> Batch:
        """Raw stacked minibatches (``batch`` row i drawn from member ``owners[i]``'s data) normalized by their
        members' statistics in one operation, placed at rows ``given`` of ``rows`` (the others: zeros), on
        ``device``."""
        normalize, every = StackedNorm([self.members[k].normalizer for k in owners]), list(range(len(owners)))
        batch = batch._replace(obs=normalize.tensor(every, batch.obs), next_obs=normalize.tensor(every, batch.next_obs))
        if given != list(range(rows)):  # the others' rows: zeros
            full = [torch.zeros(rows, *f.shape[1:], dtype=f.dtype, device=f.device) for f in batch]
            for f, drawn in zip(full, batch, strict=True):
                f[given] = drawn
            batch = Batch(*full)
        if device is not None and batch.obs.device != device:
            batch = Batch(*(t.to(device, non_blocking=True) for t in batch))
        return batch

    def state_dict(self) -> dict[str, Any]:
        members = [m.state_dict() for m in self.members]
        state = {"env_id": self.env_id, "env_steps": self.env_steps, "members": members}  # read before resuming
        return gather_per_rank(self.trainer, state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.setup("fit")
        members = own_rank(self.trainer, state)["members"]
        if len(members) != self.population:
            raise ConfigError(f"the checkpoint holds {len(members)} members, this run --population={self.population}")
        for member, s in zip(self.members, members, strict=True):
            member.load_state_dict(s)

    def restore_pending_state(self) -> None:
        for member in self.members:
            member.restore_pending_state()
