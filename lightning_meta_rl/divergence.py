"""Divergence guards: a non-finite loss or parameter stops training with one paragraph, before any checkpoint
is written from that state."""

from __future__ import annotations

import math

import torch
from torch import nn

from lightning_meta_rl.errors import TrainingDiverged

WATCHED = ("student/", "lookahead/", "teacher/loss")  # the losses of an iteration's metrics


def check_losses(metrics: dict[str, float], iteration: int, env_steps: int) -> None:
    """Between checkpoints a non-finite parameter shows up as a non-finite loss within an iteration."""
    bad = [k for k, v in metrics.items() if k.startswith(WATCHED) and not math.isfinite(v)]
    if bad:
        raise diverged(bad, iteration, env_steps)


def check_parameters(module: nn.Module, iteration: int, env_steps: int) -> None:
    """Before every checkpoint and at the end of training: one test over all parameters at once, then the
    names only if one failed."""
    with torch.no_grad():
        finite = bool(torch.isfinite(torch.nn.utils.parameters_to_vector(module.parameters())).all())
    if not finite:
        names = [f"parameter {n}" for n, p in module.named_parameters() if not bool(torch.isfinite(p).all())]
        raise diverged(names, iteration, env_steps)


def diverged(what: list[str], iteration: int, env_steps: int) -> TrainingDiverged:
    return TrainingDiverged(
        f"Training diverged (found at iteration {iteration}, env step {env_steps}): {', '.join(what)} became NaN "
        f"or inf. Lower the learning rates or check the environment's rewards; no checkpoint was written from "
        f"this state, and the last one written before it is intact."
    )
