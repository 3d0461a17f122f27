"""Where the DDPG arm loses time against the plain reference loop of benchmarks/throughput.py (Hopper-v5,
default setting), two ways:

1. Both run under cProfile for the same number of environment steps and the time of each piece is
   compared. cProfile slows Python-heavy code more than C-heavy code: proportions, not timings.
2. No profiler: the wall time of the window (throughput.py's: after warm-up to the end) is split into
   collecting, student updates (sampling, update, storing rollouts) and the rest, per environment step,
   medians of ``--rounds`` interleaved rounds.

    python benchmarks/profile_gap.py            # writes benchmarks/results/profile/profile.md
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import throughput
import torch
from throughput import ROOT, build_cli, ddpg_recipe, quiet, reference_run, trainer_run

from lightning_meta_rl.datamodule import RolloutDataModule
from lightning_meta_rl.module import MetaRLModule


def cumulative(stats: pstats.Stats, path_end: str, func: str) -> tuple[float, int]:
    """Summed cumulative seconds and call count of the functions named ``func`` in files ending ``path_end``."""
    seconds, calls = 0.0, 0
    for (path, _, name), (_, ncalls, _, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        if name == func and path.endswith(path_end):
            seconds, calls = seconds + ct, calls + ncalls
    return seconds, calls


def profile(fn) -> pstats.Stats:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    return pstats.Stats(prof)


class Stopwatch:
    """Sums the wall time of calls to the functions it wraps, counting only while ``on``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.on = False

    def wrap(self, owner: object, name: str, label: str) -> None:
        """Time the calls of ``owner.name`` made while the stopwatch is on."""
        fn = getattr(owner, name)

        def timed(*args, **kwargs):
            if not self.on:
                return fn(*args, **kwargs)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start

        setattr(owner, name, timed)

    def gate(self, owner: object, name: str, label: str) -> None:
        """Time every call of ``owner.name`` and turn the stopwatch on for its duration."""
        fn = getattr(owner, name)

        def gated(*args, **kwargs):
            self.on = True
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
                self.on = False

        setattr(owner, name, gated)


def wall_clock_split(steps: int, rounds: int) -> list[str]:
    """Table 2: per env step, where each loop spends its window, without a profiler."""
    watch = Stopwatch()
    # ours: everything inside training_step (warm-up runs before it, in on_train_start)
    watch.gate(MetaRLModule, "training_step", "training_step")
    watch.wrap(RolloutDataModule, "collect_steps", "collect")
    watch.wrap(MetaRLModule, "student_updates", "updates")
    watch.wrap(RolloutDataModule, "add", "updates")
    # reference: every HandStepper.steps call but the first of a run (its warm-up)
    calls = {"n": 0}
    steps_fn = throughput.HandStepper.steps

    def ref_steps(self, n, act):
        calls["n"] += 1
        if calls["n"] == 1:
            return steps_fn(self, n, act)
        start = time.perf_counter()
        out = steps_fn(self, n, act)
        watch.seconds["collect"] += time.perf_counter() - start
        return out

    throughput.HandStepper.steps = ref_steps
    recipe = ddpg_recipe("default", steps)
    split: dict[str, list[dict[str, float]]] = {"ref": [], "ddpg": []}
    for repeat in range(rounds):
        for arm in split:
            watch.seconds.clear()
            calls["n"] = 0
            run = (
                reference_run(recipe, "default", repeat, steps)
                if arm == "ref"
                else trainer_run("default", arm, repeat, steps)
            )
            us = {k: v / run.env_steps * 1e6 for k, v in watch.seconds.items()}
            total = run.seconds / run.env_steps * 1e6
            if arm == "ref":
                row = {"collect": us["collect"], "updates": total - us["collect"], "rest": 0.0, "loop": 0.0}
            else:
                rest = us["training_step"] - us["collect"] - us["updates"]
                row = {
                    "collect": us["collect"],
                    "updates": us["updates"],
                    "rest": rest,
                    "loop": total - us["training_step"],
                }
            split[arm].append({**row, "total": total})
    med = {arm: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for arm, rows in split.items()}
    labels = {
        "collect": "collecting D0 (noisy steps)",
        "updates": "student updates (sampling, update, storing rollouts)",
        "rest": "rest of training_step (loss checks, action-gap diagnostic on logged iterations, ...)",
        "loop": "Lightning loop, hooks and log_dict (outside training_step)",
        "total": "whole window",
    }
    lines = [
        "",
        f"## Wall clock without a profiler: microseconds per env step, medians of {rounds} interleaved rounds "
        f"of {steps} env steps",
        "",
        "| piece | reference | ours | ours - reference |",
        "| --- | --- | --- | --- |",
    ]
    for key, label in labels.items():
        ref, ours = med["ref"][key], med["ddpg"][key]
        lines.append(f"| {label} | {ref:.1f} | {ours:.1f} | {ours - ref:+.1f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6000, help="env steps of the cProfile runs")
    parser.add_argument("--split-steps", type=int, default=20000, help="env steps of each timed round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the timed split")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "profile")
    args = parser.parse_args()
    torch.set_num_threads(1)
    quiet()

    with tempfile.TemporaryDirectory() as tmp:
        c = build_cli("default", "ddpg", args.steps, 0, os.path.join(tmp, "run"))
        ours = profile(lambda: c.trainer.fit(c.model, datamodule=c.datamodule))
    recipe = ddpg_recipe("default", args.steps)
    ref = profile(lambda: reference_run(recipe, "default", 0, args.steps))

    # the same pieces of work on both sides: (label, ours (file, function), reference (file, function))
    pieces = [
        ("collecting env steps (all steps, warm-up included)", ("rollout.py", "_run"), ("throughput.py", "steps")),
        (
            "optimizer steps (ours: counted in global_step, lightning_meta_rl/fast_path.py)",
            ("lightning_meta_rl/fast_path.py", "step"),
            ("torch/optim/optimizer.py", "wrapper"),
        ),
        ("DDPG updates, whole (sampling excluded)", ("student.py", "ddpg_update"), ("student.py", "ddpg_update")),
    ]
    lines = [
        f"# Profile: DDPG arm vs plain loop, Hopper-v5, default setting, {args.steps} env steps each",
        "",
        "Command: `python benchmarks/profile_gap.py`",
        "",
        "## Under cProfile",
        "",
        "Seconds under cProfile (inflates Python-heavy code: proportions, not timings).",
        "",
        "| piece | ours (s) | reference (s) | ours - reference (s) | calls (ours / reference) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, (o_path, o_fn), (r_path, r_fn) in pieces:
        (o_s, o_n), (r_s, r_n) = cumulative(ours, o_path, o_fn), cumulative(ref, r_path, r_fn)
        lines.append(f"| {label} | {o_s:.3f} | {r_s:.3f} | {o_s - r_s:+.3f} | {o_n} / {r_n} |")
    only_ours = [
        ("Lightning's log_dict, all calls", ("lightning/pytorch/core/module.py", "log_dict")),
        (
            "isinstance checks against ABCs (mostly the first self.log's, one-time)",
            ("~", "<built-in method _abc._abc_subclasscheck>"),
        ),
        ("training_step, whole", ("lightning_meta_rl/module.py", "training_step")),
        (
            "Lightning epoch loop, whole (training_step + hooks + checkpoint callback)",
            ("training_epoch_loop.py", "run"),
        ),
    ]
    lines += ["", "| only in ours | seconds | calls |", "| --- | --- | --- |"]
    for label, (path, fn) in only_ours:
        s, n = cumulative(ours, path, fn)
        lines.append(f"| {label} | {s:.3f} | {n} |")
    total_ref, _ = cumulative(ref, "throughput.py", "reference_run")
    lines += ["", f"Reference loop, whole (warm-up included): {total_ref:.3f} s."]
    lines += wall_clock_split(args.split_steps, args.rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    (args.out / "profile.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
