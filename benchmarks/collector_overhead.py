"""What our Collector costs per environment step over a bare loop, on identical trajectories (Hopper-v5).

Both sides step their own Hopper-v5 (same seed) with the DDPG arm's exploration policy (Gaussian noise
around an untrained 64-64 LayerNorm actor, same noise seed), so they execute exactly the same actions
and see exactly the same observations (checked every round). The bare loop is what
benchmarks/throughput.py's reference does: preallocated numpy arrays, no checks. The Collector adds its
per-step NaN/inf checks of actions, observations and rewards, its policy and host-copy layers, and the
bookkeeping that lets it serve several environments and whole-episode rollouts. The difference is the
part of the throughput gap that comes from collecting data (the rest is per-iteration work and Lightning).

    python benchmarks/collector_overhead.py      # writes benchmarks/results/profile/collector.md
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from lightning_meta_rl.buffer import RunningNorm
from lightning_meta_rl.envs import EnvRunner
from lightning_meta_rl.exploration import ExplorationPolicy, GaussianNoise
from lightning_meta_rl.networks import ActionScale
from lightning_meta_rl.rollout import Collector, Policy
from lightning_meta_rl.student import Student
from lightning_meta_rl.types import Rollout

ROOT = Path(__file__).resolve().parents[1]
ENV_ID = "Hopper-v5"


class BareLoop:
    """The reference's way of collecting: one env, preallocated arrays, no checks, reset on episode end."""

    def __init__(self, seed: int, normalize) -> None:
        self.runner = EnvRunner(ENV_ID, None, seed)  # the same wrappers and seeding as the Collector's
        self.normalize = normalize
        self.obs: np.ndarray | None = None

    @torch.no_grad()
    def steps(self, policy: Policy, n: int) -> Rollout:
        env = self.runner.env
        if self.obs is None:
            self.obs = self.runner.reset()
        obs_dim, act_dim = self.obs.size, env.action_space.shape[0]
        obs, nxt = np.empty((n, obs_dim), np.float32), np.empty((n, obs_dim), np.float32)
        act, rew, term = np.empty((n, act_dim), np.float32), np.empty(n, np.float32), np.empty(n, np.float32)
        for t in range(n):
            obs[t] = self.obs
            act[t] = policy.act(self.normalize(torch.from_numpy(obs[t : t + 1]))).executed[0].numpy()
            nxt[t], rew[t], terminated, truncated, _ = env.step(act[t])
            term[t] = terminated
            if terminated or truncated:
                policy.reset(0)
                self.obs = self.runner.reset()
            else:
                self.obs = nxt[t]
        a = torch.from_numpy(act)
        return Rollout(
            torch.from_numpy(obs),
            a,
            a,
            torch.from_numpy(rew),
            torch.from_numpy(nxt),
            torch.from_numpy(term),
            torch.zeros(n),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="env steps per round and side")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "profile" / "collector.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    probe = EnvRunner(ENV_ID, None, 0).env
    low, high = probe.action_space.low.tolist(), probe.action_space.high.tolist()
    scale = ActionScale(low, high)
    student = Student(probe.observation_space.shape[0], scale, (64, 64), layer_norm=True)
    norm = RunningNorm(probe.observation_space.shape[0], 5.0, enabled=True)
    norm.update(torch.randn(1000, probe.observation_space.shape[0]))
    noise = GaussianNoise(scale, sigma=0.2)

    def policy() -> ExplorationPolicy:
        return ExplorationPolicy(noise, student, torch.Generator().manual_seed(0))

    ours, ours_policy = Collector([EnvRunner(ENV_ID, None, 0)], norm), policy()
    bare, bare_policy = BareLoop(0, norm), policy()
    times: dict[str, list[float]] = {"collector": [], "bare": []}
    for _ in range(args.rounds):
        t = time.perf_counter()
        a = ours.steps(ours_policy, args.steps)
        times["collector"].append((time.perf_counter() - t) / args.steps * 1e6)
        t = time.perf_counter()
        b = bare.steps(bare_policy, args.steps)
        times["bare"].append((time.perf_counter() - t) / args.steps * 1e6)
        if not (torch.equal(a.obs, b.obs) and torch.equal(a.action, b.action)):
            raise SystemExit("the two loops diverged: they no longer measure the same trajectories")
    col, bar = statistics.median(times["collector"]), statistics.median(times["bare"])
    diffs = sorted(c - b for c, b in zip(times["collector"], times["bare"], strict=True))
    text = "\n".join(
        [
            f"# Collector vs bare loop, {ENV_ID}, identical trajectories",
            "",
            f"Command: `python benchmarks/collector_overhead.py --steps {args.steps} --rounds {args.rounds}`",
            "",
            f"torch {torch.__version__}, 1 thread; {args.rounds} interleaved rounds of {args.steps} env steps each.",
            "",
            "| loop | median us per env step |",
            "| --- | --- |",
            f"| Collector (checks, layers, bookkeeping) | {col:.1f} |",
            f"| bare loop (throughput.py's reference way) | {bar:.1f} |",
            "",
            f"Per-round difference, Collector - bare: median {statistics.median(diffs):.1f} us per env step "
            f"(range {diffs[0]:.1f} to {diffs[-1]:.1f}); ratio of medians {col / bar:.3f}.",
            "",
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
