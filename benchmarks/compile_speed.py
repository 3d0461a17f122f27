"""Steady-state DDPG updates per second, eager against ``--model.compile=true`` (lightning_meta_rl/compiled.py),
and what compiling costs at start-up.

The compiled update has two forms: one graph (``compiled``: where the backward is plain autograd, the
single-process fast path and the look-ahead copy) and pieces (``pieces``: where a backward must stay
visible, as under DDP; timed here with a backward that is not ``torch.Tensor.backward``).

For each setting (``default``: 64-64 LayerNorm, batch 64; ``modern``: 256-256, batch 256, conf/profiles/
modern.yaml's learning rates and tau) on Hopper-v5's sizes (11 observations, 3 actions), one thread:

* start-up: the wall-clock time of the first compiled update (every piece compiles there) minus a steady
  update, with a fresh inductor cache (``TORCHINDUCTOR_CACHE_DIR`` is set to a new temporary directory
  unless ``--warm-cache``); then the first update of the look-ahead copy (0 when it reuses the code);
* steady state: ``--rounds`` interleaved rounds (eager, compiled, eager, ...) of ``--updates`` updates
  each, after a warm-up; updates/s is the median over rounds. Batches come from a pre-built pool, so
  only the update is timed (no replay sampling, no environment);
* the look-ahead copy (Meta arm, once per iteration): ``lookahead_copy`` against the compiled path's
  reused copy, median per call.

    python benchmarks/compile_speed.py            # both settings, writes benchmarks/results/compile/compile.md
    python benchmarks/compile_speed.py --settings default --rounds 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

if "--warm-cache" not in sys.argv:  # before torch is imported: a cold compile, as in a user's first run
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="lmrl_inductor_")

import torch
from torch._dynamo.utils import counters

from lightning_meta_rl.compiled import CompiledDDPG
from lightning_meta_rl.networks import ActionScale
from lightning_meta_rl.student import Student, ddpg_update, lookahead_copy, make_adam
from lightning_meta_rl.types import Batch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from update_batches import ACT, OBS, SETTINGS, pool

OUT = Path(__file__).resolve().parent / "results" / "compile" / "compile.md"


class Arm:
    def __init__(self, s: dict, update, backward=torch.Tensor.backward) -> None:
        torch.manual_seed(0)
        self.student = Student(OBS, ActionScale([-1.0] * ACT, [1.0] * ACT), s["hidden"], layer_norm=True)
        self.actor_opt = make_adam(list(self.student.actor.parameters()), s["actor_lr"])
        self.critic_opt = make_adam(list(self.student.critic.parameters()), s["critic_lr"])
        self.update, self.tau, self.i, self.backward = update, s["tau"], 0, backward

    def run(self, batches: list[Batch], n: int, student: Student | None = None, opts=None) -> float:
        student = student or self.student
        actor_opt, critic_opt = opts or (self.actor_opt, self.critic_opt)
        t = time.perf_counter()
        for _ in range(n):
            self.update(
                student,
                batches[self.i % len(batches)],
                actor_opt,
                critic_opt,
                gamma=0.99,
                tau=self.tau,
                critic_l2=1e-2,
                backward=self.backward,
            )
            self.i += 1
        return time.perf_counter() - t


def bench(name: str, args: argparse.Namespace) -> dict[str, float]:
    s = SETTINGS[name]
    batches = pool(s["batch"])
    compiled = CompiledDDPG()
    eager, comp = Arm(s, ddpg_update), Arm(s, compiled.update)
    pieces = Arm(s, compiled.update, backward=lambda loss: loss.backward())
    eager.run(batches, 20)
    t = time.perf_counter()
    pieces.run(batches, 1)
    pieces_first = time.perf_counter() - t
    pieces.run(batches, 20)
    pieces_startup = pieces_first - pieces.run(batches, 50) / 50
    graphs0 = int(counters["stats"]["unique_graphs"])
    first = comp.run(batches, 1)
    comp.run(batches, 20)
    steady = comp.run(batches, 50) / 50
    graphs_student = int(counters["stats"]["unique_graphs"]) - graphs0

    clone, ca, cc = compiled.lookahead_copy(comp.student, comp.actor_opt, comp.critic_opt)
    look_first = comp.run(batches, 1, clone, (ca, cc))
    comp.run(batches, 10, clone, (ca, cc))
    graphs_after_look = int(counters["stats"]["unique_graphs"]) - graphs0

    rates: dict[str, list[float]] = {"eager": [], "compiled": [], "pieces": []}
    copy_ms: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(args.rounds):
        for arm_name, arm in (("eager", eager), ("compiled", comp), ("pieces", pieces)):
            rates[arm_name].append(args.updates / arm.run(batches, args.updates))
        t = time.perf_counter()
        lookahead_copy(eager.student, eager.actor_opt, eager.critic_opt)
        copy_ms["eager"].append(1e3 * (time.perf_counter() - t))
        t = time.perf_counter()
        clone, ca, cc = compiled.lookahead_copy(comp.student, comp.actor_opt, comp.critic_opt)
        copy_ms["compiled"].append(1e3 * (time.perf_counter() - t))
        comp.run(batches, 5, clone, (ca, cc))  # the copy is trained, as in an iteration
    graphs_end = int(counters["stats"]["unique_graphs"]) - graphs0
    e, c = statistics.median(rates["eager"]), statistics.median(rates["compiled"])
    pc = statistics.median(rates["pieces"])
    startup = first - steady
    saved = 1 / e - 1 / c
    return {
        "eager": e,
        "compiled": c,
        "speedup": c / e,
        "pieces": pc,
        "pieces_speedup": pc / e,
        "pieces_startup_s": pieces_startup,
        "eager_ms": 1e3 / e,
        "compiled_ms": 1e3 / c,
        "startup_s": startup,
        "look_first_s": look_first - steady,
        "break_even": startup / saved if saved > 0 else float("inf"),
        "copy_eager_ms": statistics.median(copy_ms["eager"]),
        "copy_compiled_ms": statistics.median(copy_ms["compiled"]),
        "graphs_student": graphs_student,
        "graphs_look": graphs_after_look - graphs_student,
        "graphs_later": graphs_end - graphs_after_look,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--updates", type=int, default=200, help="updates per arm and round")
    p.add_argument("--warm-cache", action="store_true", help="keep the user's inductor cache (warm start-up)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    torch.set_num_threads(1)
    results = {}
    for name in args.settings:
        results[name] = r = bench(name, args)
        print(name, {k: round(v, 4) for k, v in r.items()}, flush=True)

    cmd = "python " + " ".join(["benchmarks/compile_speed.py", *sys.argv[1:]])
    lines = [
        "# DDPG update throughput: eager against `--model.compile=true`",
        "",
        f"Command: `OMP_NUM_THREADS=1 {cmd}`",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} thread, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); "
        f"inductor cache: {'warm (the user cache)' if args.warm_cache else 'cold (a fresh directory)'}. "
        f"Hopper-v5 sizes (11 obs, 3 actions), LayerNorm, Adam; {args.rounds} interleaved rounds of "
        f"{args.updates} updates per arm, batches from a pre-built pool (the update alone is timed).",
        "",
        "| setting | eager updates/s | compiled updates/s | speed-up | eager ms/update | compiled ms/update "
        "| compile start-up s | break-even updates | pieces updates/s | pieces speed-up | pieces start-up s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['eager']:.0f} | {r['compiled']:.0f} | {r['speedup']:.2f}x | {r['eager_ms']:.3f} "
            f"| {r['compiled_ms']:.3f} | {r['startup_s']:.1f} | {r['break_even']:.0f} | {r['pieces']:.0f} "
            f"| {r['pieces_speedup']:.2f}x | {r['pieces_startup_s']:.1f} |"
        )
    lines += [
        "",
        "compiled: the one-graph update (one process, nothing listening to the backward: the default fast "
        "path and the look-ahead copy); pieces: the piecewise compiled update used where a backward must stay "
        "visible (DDP, hooks), timed with a backward that is not torch.Tensor.backward. "
        "Start-up: the first compiled update's time minus a steady one (everything compiles there; the pieces "
        "arm compiles first, so its own graphs only). "
        "Break-even: updates after which the compiled run has caught up (start-up / time saved per update); "
        "at the default utd_ratio 0.25 that is 4x as many environment steps.",
        "",
        "Look-ahead copy (Meta arm, once per iteration; the compiled path reuses one copy):",
        "",
        "| setting | first look-ahead update, extra s | graphs: student / look-ahead / later rounds "
        "| eager `lookahead_copy` ms | compiled reused copy ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['look_first_s']:.2f} | {r['graphs_student']:.0f} / {r['graphs_look']:.0f} / "
            f"{r['graphs_later']:.0f} | {r['copy_eager_ms']:.3f} | {r['copy_compiled_ms']:.3f} |"
        )
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
