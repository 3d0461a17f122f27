"""Writes updates_3f172b0.pt: what the DDPG update computed at commit 3f172b0, before the update was written once.

Run with that commit's package first on the path (``git worktree add /tmp/old 3f172b0``, then
``PYTHONPATH=/tmp/old python tests/golden/make_updates.py``): it imports the update functions of that time,
which no longer exist. tests/test_learner.py holds today's update to these numbers.
Contents: the seeded batches it trained on, per-update metrics, parameter snapshots of the live student
(eager ``ddpg_update``, torch's fused Adam), of a look-ahead copy started from the student's Adam state, and
of three stacked look-ahead members (the batched look-ahead of that time).
"""

# ruff: noqa: I001  (imports the package as it was at 3f172b0, whose modules no longer exist)
from __future__ import annotations

import sys

import torch

from lightning_meta_rl.ensemble import StackedLookahead, stack_batches
from lightning_meta_rl.networks import ActionScale
from lightning_meta_rl.student import Student, ddpg_update, lookahead_copy, make_adam
from lightning_meta_rl.types import Batch

OBS, ACT, B = 11, 3, 64
HP = {"gamma": 0.99, "tau": 0.01, "critic_l2": 0.01}


def batches(n: int, gen: torch.Generator, lead: tuple[int, ...] = ()) -> list[Batch]:
    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*lead, *shape, generator=gen)

    return [
        Batch(r(B, OBS), torch.rand(*lead, B, ACT, generator=gen) * 2 - 1, r(B), r(B, OBS), (r(B) > 1.5).float())
        for _ in range(n)
    ]


def snapshot(student: Student) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in student.state_dict().items()}


def main(path: str) -> None:
    torch.set_num_threads(1)  # the summation order of one thread, as in tests/test_learner.py
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    student = Student(OBS, ActionScale([-1.0, -2.0, -0.5], [1.0, 2.0, 1.5]), (64, 64), True)
    initial = snapshot(student)
    actor_opt = make_adam(list(student.actor.parameters()), 1e-4)
    critic_opt = make_adam(list(student.critic.parameters()), 1e-3)
    data = batches(50, gen)
    metrics, snaps = [], {}
    for i, b in enumerate(data):
        m = ddpg_update(student, b, actor_opt, critic_opt, **HP, backward=torch.Tensor.backward)
        metrics.append(torch.stack([m["critic_loss"], m["actor_loss"], m["q"]]))
        if (i + 1) % 10 == 0:
            snaps[i + 1] = snapshot(student)
    look = batches(20, gen)
    clone, ca, cc = lookahead_copy(student, actor_opt, critic_opt)
    look_metrics = []
    for b in look:
        m = ddpg_update(clone, b, ca, cc, **HP, backward=torch.Tensor.backward)
        look_metrics.append(torch.stack([m["critic_loss"], m["actor_loss"], m["q"]]))
    stacked_data = [stack_batches(list(b)) for b in zip(*[batches(20, gen) for _ in range(3)], strict=True)]
    stack = StackedLookahead(student, 3, actor_opt, critic_opt)
    stack_metrics = []
    for b in stacked_data:
        m = stack.update(b, **HP)
        stack_metrics.append(torch.stack([m["critic_loss"], m["actor_loss"], m["q"]]))
    members = {
        name: [p.detach().clone() for p in getattr(stack, name).params]
        for name in ("actor", "critic", "actor_target", "critic_target")
    }
    torch.save(
        {
            "hp": HP,
            "bounds": ([-1.0, -2.0, -0.5], [1.0, 2.0, 1.5]),
            "initial": initial,
            "batches": data,
            "metrics": torch.stack(metrics),
            "snapshots": snaps,
            "lookahead_batches": look,
            "lookahead_metrics": torch.stack(look_metrics),
            "lookahead_final": snapshot(clone),
            "stacked_batches": stacked_data,
            "stacked_metrics": torch.stack(stack_metrics),
            "stacked_final": members,
        },
        path,
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/golden/updates_3f172b0.pt")
