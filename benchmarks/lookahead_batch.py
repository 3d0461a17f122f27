"""The cost of ``--model.meta.samples=K``'s batched look-ahead against the paper's single look-ahead.

One look-ahead = a copy of the student (with its Adam state) and ``--updates`` DDPG updates (50 by default,
the faithful ``lookahead_updates``). Arms, timed whole (copy + updates), interleaved over ``--rounds``:

* ``one``: ``lookahead_copy`` + ``ddpg_update`` (what a K=1 iteration runs);
* ``stacked K``: ``StackedLookahead`` for each K in ``--ks`` (what a K-sample iteration runs), member k on
  its own minibatch;
* ``K separate``: K times the ``one`` arm, what K look-aheads would cost without batching.

Batches come from a pre-built pool (the update alone is timed, no replay sampling). Hopper-v5 sizes (11
observations, 3 actions), the default and modern settings. Medians over rounds; the ratio ``stacked K /
one`` is what issue 11 holds to <= 2 for K=5.

    python benchmarks/lookahead_batch.py                 # writes benchmarks/results/lookahead/lookahead.md
    python benchmarks/lookahead_batch.py --threads 0     # torch's default thread count instead of one
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from lightning_meta_rl.ensemble import StackedLookahead, stack_batches
from lightning_meta_rl.networks import ActionScale
from lightning_meta_rl.student import Student, ddpg_update, lookahead_copy, make_adam

sys.path.insert(0, str(Path(__file__).resolve().parent))
from update_batches import ACT, OBS, SETTINGS, pool

OUT = Path(__file__).resolve().parent / "results" / "lookahead" / "lookahead.md"


def bench(name: str, ks: list[int], args: argparse.Namespace) -> dict[str, float]:
    s = SETTINGS[name]
    torch.manual_seed(0)
    student = Student(OBS, ActionScale([-1.0] * ACT, [1.0] * ACT), s["hidden"], layer_norm=True)
    actor_opt = make_adam(list(student.actor.parameters()), s["actor_lr"])
    critic_opt = make_adam(list(student.critic.parameters()), s["critic_lr"])
    batches = pool(s["batch"], 16)
    settings = {"gamma": 0.99, "tau": s["tau"], "critic_l2": 1e-2}
    for b in batches[:3]:  # the student's Adam has state, as in a run
        ddpg_update(student, b, actor_opt, critic_opt, **settings, backward=torch.Tensor.backward)
    stacked_pool = {
        k: [stack_batches([batches[(i + j) % len(batches)] for j in range(k)]) for i in range(8)] for k in ks
    }

    def one() -> float:
        t = time.perf_counter()
        copy, a_opt, c_opt = lookahead_copy(student, actor_opt, critic_opt)
        for i in range(args.updates):
            ddpg_update(copy, batches[i % len(batches)], a_opt, c_opt, **settings, backward=torch.Tensor.backward)
        return time.perf_counter() - t

    def stacked(k: int) -> float:
        t = time.perf_counter()
        stack = StackedLookahead(student, k, actor_opt, critic_opt)
        for i in range(args.updates):
            stack.update(stacked_pool[k][i % 8], **settings)
        return time.perf_counter() - t

    one(), [stacked(k) for k in ks]  # warm-up
    times: dict[str, list[float]] = {"one": []} | {f"stacked {k}": [] for k in ks}
    for _ in range(args.rounds):
        times["one"].append(one())
        for k in ks:
            times[f"stacked {k}"].append(stacked(k))
    out = {arm: 1e3 * statistics.median(t) for arm, t in times.items()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--ks", nargs="+", type=int, default=[2, 5, 10])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--updates", type=int, default=50, help="updates per look-ahead (lookahead_updates)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    results = {name: bench(name, args.ks, args) for name in args.settings}
    cmd = "python " + " ".join(["benchmarks/lookahead_batch.py", *sys.argv[1:]])
    lines = [
        "# The batched look-ahead (`--model.meta.samples=K`) against one look-ahead",
        "",
        f"Command: `{cmd}`",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()}). Hopper-v5 sizes, LayerNorm, one look-ahead = copy "
        f"+ {args.updates} updates; medians of {args.rounds} interleaved rounds.",
        "",
        "| setting | one look-ahead ms | K | K look-aheads batched ms | batched / one | K separate / batched |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        for k in args.ks:
            b = r[f"stacked {k}"]
            lines.append(f"| {name} | {r['one']:.1f} | {k} | {b:.1f} | {b / r['one']:.2f}x | {k * r['one'] / b:.2f}x |")
        print(name, {a: round(v, 2) for a, v in r.items()}, flush=True)
    lines += [
        "",
        "`K separate / batched`: what K look-aheads run one after another would cost (K times one), against the "
        "batched update.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
