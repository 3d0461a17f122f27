"""Where the DDPG arm loses time against the plain reference loop of benchmarks/throughput.py (Hopper-v5,
default setting): both run under cProfile for the same number of environment steps, and the time of each
piece is compared per environment step. cProfile slows Python-heavy code more than C-heavy code, so read
the numbers as proportions, not as timings (the timings are throughput.py's).

    python benchmarks/profile_gap.py            # 6000 env steps each; writes benchmarks/results/profile/
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
from pathlib import Path

import torch
from throughput import ROOT, build_cli, ddpg_recipe, quiet, reference_run


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6000)
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
    args.out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    (args.out / "profile.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
