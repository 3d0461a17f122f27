"""Denormal floats slow the update: the reference DDPG loop with IEEE denormals kept against flushed to zero.

Why the CLI flushes denormals by default (``--flush_denormal``, lightning_meta_rl/cli.py): in nets without
LayerNorm some ReLU units die; their gradients are then exactly zero, and Adam's first moment for their
weights decays by beta1 = 0.9 per update until it reaches the denormal range (below 1.2e-38 in float32),
where x86 CPUs take a slow path for every arithmetic operation that touches it.

This script runs throughput.py's plain reference loop (no Lightning, our ``Student``, ``ddpg_update``,
fused Adam) on Hopper-v5 with denormals kept and flushed, for ``--repeats`` interleaved rounds (each first
in turn), one thread. After each run (untimed) it counts the denormal entries of the student's weights and
of both optimizers' Adam moments. Settings are throughput.py's: ``modern_plain`` (256-256, no LayerNorm: the nets
Stable-Baselines3 builds) by default; add ``modern`` for the same with LayerNorm.

    python benchmarks/denormals.py                                   # modern_plain, 4000 steps x 3 rounds
    python benchmarks/denormals.py --settings modern_plain modern --steps 4000 --repeats 3
"""

from __future__ import annotations

import argparse
import csv
import gc
import os
import statistics
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from throughput import ROOT, SETTINGS, ddpg_recipe, quiet, reference_run

from lightning_meta_rl.student import Student


def denormals(tensors: list[torch.Tensor]) -> tuple[int, int]:
    """(denormal entries, all entries) over float32 ``tensors``, read from the bits (exponent all zeros,
    mantissa not): a float comparison would see none while flushing is on, since the CPU then also reads
    denormal inputs as zero."""
    count = 0
    for t in tensors:
        bits = t.detach().contiguous().view(torch.int32)
        count += int((((bits & 0x7F800000) == 0) & ((bits & 0x007FFFFF) != 0)).sum())
    return count, sum(t.numel() for t in tensors)


@dataclass
class Row:
    setting: str
    flush: bool
    repeat: int
    env_steps_per_s: float
    weights: int  # denormal entries among the actor's and critic's parameters
    exp_avg: int  # ... among both optimizers' first moments
    exp_avg_sq: int  # ... among their second moments
    entries: int  # parameters (each moment has as many entries)


def counts(student: Student, actor_opt: torch.optim.Optimizer, critic_opt: torch.optim.Optimizer) -> dict[str, int]:
    params = [p.detach() for p in student.actor.parameters()] + [p.detach() for p in student.critic.parameters()]
    states = [opt.state[p] for opt in (actor_opt, critic_opt) for group in opt.param_groups for p in group["params"]]
    weights, entries = denormals(params)
    return {
        "weights": weights,
        "exp_avg": denormals([s["exp_avg"] for s in states])[0],
        "exp_avg_sq": denormals([s["exp_avg_sq"] for s in states])[0],
        "entries": entries,
    }


def record(
    into: list[dict[str, int]],
    student: Student,
    actor_opt: torch.optim.Optimizer,
    critic_opt: torch.optim.Optimizer,
) -> None:
    into.append(counts(student, actor_opt, critic_opt))


def run_all(settings: list[str], repeats: int, steps: int) -> list[Row]:
    rows: list[Row] = []
    for setting in settings:
        recipe = ddpg_recipe(setting, steps)
        for repeat in range(repeats):
            for flush in (False, True) if repeat % 2 == 0 else (True, False):  # each goes first in turn
                gc.collect()
                if not torch.set_flush_denormal(flush) and flush:
                    raise SystemExit("this CPU cannot flush denormals (no SSE3): nothing to compare")
                found: list[dict[str, int]] = []
                run = reference_run(recipe, setting, repeat, steps, on_end=partial(record, found))
                row = Row(setting, flush, repeat, run.env_steps / run.seconds, **found[0])
                print(row, flush=True)
                rows.append(row)
    torch.set_flush_denormal(False)
    return rows


def report(rows: list[Row], command: str, steps: int) -> str:
    lines = [
        f"# Denormals and the update's speed: Hopper-v5 reference DDPG loop, {steps} env steps per run",
        "",
        f"Command: `{command}`",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs; rounds interleaved "
        "(kept first in even rounds, flushed first in odd ones). Denormal counts are taken after each run, medians over rounds.",
        "",
        "| setting | denormals | runs | env steps/s (median) | denormal weights | denormal exp_avg "
        "| denormal exp_avg_sq | parameters |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for setting in dict.fromkeys(r.setting for r in rows):
        for flush in (False, True):
            sel = [r for r in rows if r.setting == setting and r.flush == flush]

            def med(field: str, sel: list[Row] = sel) -> float:
                return statistics.median(getattr(r, field) for r in sel)

            lines.append(
                f"| {setting} | {'flushed' if flush else 'kept (IEEE)'} | {len(sel)} | {med('env_steps_per_s'):.1f} "
                f"| {med('weights'):.0f} | {med('exp_avg'):.0f} | {med('exp_avg_sq'):.0f} | {sel[0].entries} |"
            )
    lines += ["", "Ratios (flushed / kept, env steps/s):", ""]
    for setting in dict.fromkeys(r.setting for r in rows):
        kept = [r.env_steps_per_s for r in rows if r.setting == setting and not r.flush]  # in round order
        flushed = [r.env_steps_per_s for r in rows if r.setting == setting and r.flush]
        per_round = ", ".join(f"{f / k:.2f}" for k, f in zip(kept, flushed, strict=True))
        ratio = statistics.median(flushed) / statistics.median(kept)
        lines.append(f"- {setting}: {ratio:.2f} (ratio of medians); per round {per_round}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=["modern_plain"])
    parser.add_argument("--steps", type=int, default=4000, help="env steps per run (warm-up included)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "denormals")
    args = parser.parse_args()
    quiet()
    rows = run_all(args.settings, args.repeats, args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "denormals.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(vars(rows[0])))
        writer.writeheader()
        writer.writerows(vars(r) for r in rows)
    text = report(rows, "python benchmarks/denormals.py " + " ".join(sys.argv[1:]), args.steps)
    (args.out / "denormals.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
