"""What a population's D0 costs in teacher calls: every member's teacher acting in turn, against the members'
teachers acting as one (``teachers.TeacherStack``: their heads stacked, remade for each collection).

Hopper-v5's sizes and the default networks (64-64 with LayerNorm), eight members, one environment each. Each
arm collects a D0 of 200 steps (``meta.d0_steps``' default) per round: ``in turn`` asks each member's teacher
for its action at every step, as the population did before 2026-12-07; ``as one`` makes the stack once and asks
it once per step, the stack's making included. Each member's mu(s) and Q(s, mu(s)) are given, as the population
computes them for all members in one call before its teachers act. Rounds alternate the arms; medians over rounds; one torch thread.

    python benchmarks/teacher_acting.py           # writes benchmarks/results/population/teacher_acting.md
    python benchmarks/teacher_acting.py --quick   # a short run; prints only
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import torch
from runlib import commit, write_keeping_earlier

from lightning_meta_rl.config import TeacherConfig
from lightning_meta_rl.exploration import build_exploration
from lightning_meta_rl.networks import ActionScale, Student
from lightning_meta_rl.teachers import LearnedTeacher, TeacherStack

OUT = Path(__file__).resolve().parent / "results" / "population" / "teacher_acting.md"
OBS, ACT, HIDDEN, D0_STEPS = 11, 3, [64, 64], 200


def members(kind: str, n: int) -> tuple[list[LearnedTeacher], list[Student]]:
    """n teachers of ``kind``, and the students they act around as a population hands them over: each member's
    mu(s) and Q(s, mu(s)) computed already (by one stacked call per step, the same for both arms)."""
    scale = ActionScale([-1.0] * ACT, [1.0] * ACT)
    teachers: list[LearnedTeacher] = []
    for seed in range(n):
        torch.manual_seed(seed)
        teacher = build_exploration(TeacherConfig(kind=kind), OBS, scale, True)
        assert isinstance(teacher, LearnedTeacher)
        teachers.append(teacher)
    mu, q = torch.rand(n, 1, ACT) * 2 - 1, torch.randn(n, 1)
    views = [
        SimpleNamespace(actor=lambda obs, m=m: m, critic=lambda obs, a, v=v: v) for m, v in zip(mu, q, strict=True)
    ]
    return teachers, cast(list[Student], views)


def d0(kind: str, n: int, together: bool) -> Callable[[], None]:
    """One D0's teacher calls for n members (observations drawn beforehand)."""
    teachers, students = members(kind, n)
    obs = torch.randn(D0_STEPS, n, 1, OBS)
    streams = [torch.Generator().manual_seed(s) for s in range(n)]

    @torch.no_grad()
    def in_turn() -> None:
        for step in obs:
            for teacher, o, student, g in zip(teachers, step, students, streams, strict=True):
                teacher.act(o, student, g)

    @torch.no_grad()
    def as_one() -> None:
        stack, everyone = TeacherStack(teachers), list(range(n))
        for step in obs:
            stack.act(everyone, step, students, streams)

    return as_one if together else in_turn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="3 rounds; prints only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rounds = 3 if args.quick else args.rounds
    rows = []
    for kind in ("meta", "meta_state", "meta_variance"):
        arms = {name: d0(kind, args.members, name == "as one") for name in ("in turn", "as one")}
        times: dict[str, list[float]] = {name: [] for name in arms}
        for _ in range(rounds + 1):  # the first round warms up and is dropped
            for name, fn in arms.items():
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) / D0_STEPS * 1e6)
        turn, one = (statistics.median(times[name][1:]) for name in arms)
        rows.append(f"| {kind} | {turn:.0f} | {one:.0f} | **{turn / one:.2f}** |")
    text = "\n".join(
        [
            f"# A D0's teacher calls: {args.members} members in turn against as one",
            "",
            f"{date.today().isoformat()}, {platform.machine()}, one torch thread, code at {commit()}; "
            f"`python benchmarks/teacher_acting.py{' --quick' if args.quick else ''}`. Hopper-v5's sizes, 64-64 "
            f"networks with LayerNorm, a D0 of {D0_STEPS} steps, one environment per member; median of {rounds} "
            "alternating rounds.",
            "",
            "| teacher | in turn, us per step of all members | as one | in turn / as one |",
            "| --- | --- | --- | --- |",
            *rows,
            "",
        ]
    )
    print(text)
    if not args.quick:
        write_keeping_earlier(OUT, text)


if __name__ == "__main__":
    main()
