"""Policies for the collectors (rollout.Policy): the exploration around the live student, the deterministic
student, and uniform random actions (warm-up)."""

from __future__ import annotations

import torch
from torch import nn

from lightning_meta_rl.exploration import Exploration
from lightning_meta_rl.networks import ActionScale, Student
from lightning_meta_rl.rollout import Action


class ExplorationPolicy:
    """Adapts an Exploration + the live student to the Collector's Policy protocol."""

    def __init__(self, exploration: Exploration, student: Student, generator: torch.Generator) -> None:
        self.exploration, self.student, self.generator = exploration, student, generator
        device = student.actor.scale.low.device  # looked up once per rollout, not once per step
        self.device = None if device.type == "cpu" else device  # observations arrive on the host

    def act(self, obs: torch.Tensor) -> Action:
        return self.exploration.act(obs if self.device is None else obs.to(self.device), self.student, self.generator)

    def reset(self, index: int) -> None:
        self.exploration.reset(index)


class DeterministicPolicy:
    """The student's (or a look-ahead copy's) mu(s), no noise."""

    def __init__(self, actor: nn.Module) -> None:
        self.actor = actor

    def act(self, obs: torch.Tensor) -> Action:
        a = self.actor(obs.to(next(self.actor.parameters()).device))
        return Action(a, a)

    def reset(self, index: int) -> None:
        pass


class UniformPolicy:
    """Uniformly random actions in the bounds: the warm-up of both arms."""

    def __init__(self, scale: ActionScale, generator: torch.Generator) -> None:
        self.scale, self.generator = scale, generator

    def act(self, obs: torch.Tensor) -> Action:
        u = torch.rand((obs.shape[0], self.scale.low.numel()), generator=self.generator) * 2 - 1
        a = self.scale(u.to(self.scale.low.device))
        return Action(a, a)

    def reset(self, index: int) -> None:
        pass
