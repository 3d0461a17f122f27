"""Fixed exploration of the DDPG arm beyond Gaussian and OU: pink (1/f) action noise and parameter-space noise."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from lightning_meta_rl.exploration import Exploration
from lightning_meta_rl.networks import ActionScale, Student
from lightning_meta_rl.rollout import Action


class PinkNoise(Exploration):
    """a = mu(s) + sigma * half_range * x_t, x pink (1/f) noise of unit variance per environment and action
    dimension (Eberhard et al., "Pink Noise Is All You Need", ICLR 2023; their package ``pink-noise-rl``).

    Each environment has its own ``pink.PinkNoiseProcess``: a sequence of ``horizon`` steps per action
    dimension, drawn anew when its environment starts an episode (and, as the package does, when a sequence
    runs out). Each process draws from its own numpy generator, seeded from the torch generator the first
    time its environment acts, so a run is reproducible; ``extra_state`` keeps every process's sequence,
    position and generator state, so a resumed run continues the very same noise.
    """

    def __init__(self, scale: ActionScale, sigma: float, horizon: int) -> None:
        super().__init__(scale)
        # imported here, not at the top: the package's __init__ also imports stable-baselines3 when present
        from pink import PinkNoiseProcess

        self.process_class = PinkNoiseProcess
        self.sigma, self.horizon = sigma, horizon
        self.processes: list[Any] = []  # one PinkNoiseProcess per environment, made at its first step

    def _process(self, act_dim: int, horizon: int, rng: np.random.Generator) -> Any:
        return self.process_class(size=(act_dim, horizon), rng=rng)

    def sample(self, envs: int, generator: torch.Generator) -> torch.Tensor:
        """The next step of every environment's pink sequence: [envs, act_dim], unit variance."""
        act_dim = self.scale.low.numel()
        while len(self.processes) < envs:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            self.processes.append(self._process(act_dim, self.horizon, np.random.default_rng(seed)))
        return torch.from_numpy(np.stack([p.sample() for p in self.processes[:envs]]))

    def reset(self, index: int) -> None:
        if index < len(self.processes):
            self.processes[index].reset()  # a new sequence for the new episode

    def act(self, obs: torch.Tensor, student: Student, generator: torch.Generator) -> Action:
        mean = student.actor(obs).detach()
        noise = self.sample(mean.shape[0], generator).to(mean)
        raw = mean + self.sigma * noise * self.scale.half_range
        return Action(raw, self.scale.clip(raw))

    def extra_state(self) -> Any:
        return [
            {"buffer": torch.from_numpy(p.buffer.copy()), "idx": int(p.idx), "rng": p.rng.bit_generator.state}
            for p in self.processes
        ]

    def load_extra_state(self, state: Any) -> None:
        self.processes = []
        for s in state or []:
            rng = np.random.default_rng()
            rng.bit_generator.state = s["rng"]
            buffer = s["buffer"].numpy().copy()
            process = self._process(buffer.shape[0], buffer.shape[-1], np.random.default_rng(0))
            process.rng, process.buffer, process.idx = rng, buffer, s["idx"]
            self.processes.append(process)


class ParamNoise(Exploration):
    """Parameter-space noise (Plappert et al., ICLR 2018): the action of a perturbed copy of the student's
    actor, mu(s; theta + std * z), no action noise.

    z ~ N(0, I) over the actor's linear layers (LayerNorm parameters are not perturbed, as in OpenAI
    baselines), one z per environment, drawn from the torch generator at the first step of each of its
    episodes and kept for the episode; the perturbation follows the live actor as it learns. The scale
    ``std`` adapts so that the action distance d = sqrt(mean((mu~(s) - mu(s))^2)), in half action ranges,
    stays near ``target``: every ``interval`` steps, std is multiplied by ``adapt`` if d was below the
    target on the states acted on since the last adaptation, divided by it otherwise. (Plappert et al.
    measure d on a replay batch with a fresh perturbation; the exploration never sees the buffer, so d is
    measured here on the states it acts on, with the perturbation that acted, which has the current std.)
    """

    def __init__(self, scale: ActionScale, target: float, adapt: float, interval: int) -> None:
        super().__init__(scale)
        self.target, self.adapt, self.interval = target, adapt, interval
        self.std = target  # initial std: baselines' adaptive-param_<sigma> starts both at sigma
        self.z: list[dict[str, torch.Tensor] | None] = []  # per environment; None: draw at its next step
        self.sq_sum, self.count, self.steps = 0.0, 0, 0  # the distance since the last adaptation
        self.last_distance = math.nan  # d at the last adaptation

    @staticmethod
    def perturbed_names(actor: nn.Module) -> list[str]:
        """The actor's parameters that are perturbed: those of its linear layers."""
        return [
            f"{name}.{p}" if name else p
            for name, m in actor.named_modules()
            if isinstance(m, nn.Linear)
            for p, _ in m.named_parameters(recurse=False)
        ]

    def reset(self, index: int) -> None:
        if index < len(self.z):
            self.z = [None if i == index else z for i, z in enumerate(self.z)]

    def act(self, obs: torch.Tensor, student: Student, generator: torch.Generator) -> Action:
        actor = student.actor
        params = dict(actor.named_parameters())
        names = self.perturbed_names(actor)
        envs = obs.shape[0]
        self.z += [None] * (envs - len(self.z))
        for i in range(envs):
            if self.z[i] is None:
                # drawn on the host from the run's generator, kept where the actor is
                self.z[i] = {n: torch.randn(params[n].shape, generator=generator).to(params[n]) for n in names}
        with torch.no_grad():
            mean = actor(obs)
            raw = torch.cat(
                [
                    torch.func.functional_call(
                        actor, {n: params[n] + self.std * z[n].to(params[n]) for n in names}, (obs[i : i + 1],)
                    )
                    for i, z in enumerate(self.z[:envs])
                    if z is not None
                ]
            )
        gap = (raw - mean) / self.scale.half_range
        self.sq_sum += float(gap.double().square().sum())
        self.count += gap.numel()
        self.steps += 1
        if self.steps % self.interval == 0:
            self.adapt_std()
        return Action(raw, self.scale.clip(raw))

    def adapt_std(self) -> None:
        """std *= adapt if the measured distance is below the target, else std /= adapt (Plappert et al.)."""
        self.last_distance = math.sqrt(self.sq_sum / self.count) if self.count else math.nan
        if self.count:
            self.std = self.std * self.adapt if self.last_distance < self.target else self.std / self.adapt
        self.sq_sum, self.count = 0.0, 0

    def extra_state(self) -> Any:
        return {
            "std": self.std,
            "z": [None if z is None else {n: t.cpu() for n, t in z.items()} for z in self.z],
            "sq_sum": self.sq_sum,
            "count": self.count,
            "steps": self.steps,
            "last_distance": self.last_distance,
        }

    def load_extra_state(self, state: Any) -> None:
        if state is None:
            return
        self.std, self.z = float(state["std"]), list(state["z"])
        self.sq_sum, self.count, self.steps = float(state["sq_sum"]), int(state["count"]), int(state["steps"])
        self.last_distance = float(state["last_distance"])
