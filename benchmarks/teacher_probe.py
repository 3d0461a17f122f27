"""Teacher updates scored against an oracle direction (issue 25, item 4).

Does any way of updating the Meta teacher move it further along the direction that raises the meta-reward than the
faithful step does? The faithful teacher takes 82-667 Adam steps per run (lr 1e-3) from a K = 1 meta-reward whose
ranking of look-aheads is poor (Spearman 0.18; common-start returns 0.72, benchmarks/results/critic_choice).

Snapshots. Pendulum-v1 Meta runs (conf/pendulum.yaml's settings: Meta teacher, sigma 0.2, SPEC defaults, warm-up
1000) are trained with the real MetaRLModule, RolloutDataModule and Lightning Trainer, seeds SEEDS. At each snapshot
(first iteration end at or past SNAPSHOTS env steps) a callback freezes the student and the teacher as they are and:

1. Oracle. M fresh D0 segments (d0_steps each) from the teacher on a Pendulum instance of the probe's own; on each a
   look-ahead pi'_k trained by the module's own ``lookahead`` (stacked, the real update and Adam state). Its meta-reward
   m_k = mean over GT_STARTS common start states of R(pi'_k) - R(pi): deterministic returns, one start-state set for
   every policy of the snapshot, in a batched copy of Pendulum-v1's dynamics (benchmarks/critic_choice.py, retired,
   checked it against gymnasium). The oracle direction is the score-function gradient with advantages m_k - mean m,
   i.e. minus the gradient of the teacher's own ``meta_loss``, over all the teacher's parameters (the mean network;
   the std is not learned by default). Its stability: the cosine between the directions from the two halves of the M
   segments, against the same cosine with the meta-rewards permuted across segments (the null). Also measured: the
   reliability of m_k itself (Spearman between two halves of the start states), and how few directions carry the
   per-segment score vectors grad mean log pi_e(D0_k) (participation ratio of their covariance): with few, any two
   such gradients have a large cosine by chance, which is why every cosine below is shown next to its null.
2. Candidates, each applied R times from the same snapshot to a copy of the teacher (fresh Adam, as the teacher's
   optimizer starts), with the student frozen, until the candidate has spent BUDGET env steps; its D0 comes from the
   copy as it is updated. Env steps counted as the module counts them: D0, one D1 episode per look-ahead, and one
   R(pi) episode per update. Meta-rewards come from single episodes in the same batched dynamics:
   - faithful: K = 1, 200-step D0, m = R(pi') - R(pi) from two different random starts, lr 1e-3 (the paper's step);
   - K=4 / K=8 common start + LOO: K segments, all K look-aheads rolled out from one common random start, advantage
     m_k - mean of the others (the module's ``meta.samples``);
   - K=4 x 50 steps: the same with 50-step D0 segments (the look-ahead trains on 50 transitions);
   - K=4 PPO 4 epochs: the K=4 batch reused for 4 Adam steps on the clipped importance-weighted surrogate (clip 0.2,
     per-transition ratio pi_new / pi_old), implemented here with the teacher's ``log_prob``;
   - K=4 lr 1e-2: the K=4 common-start step with a 10x learning rate for the mean network.
   Scores of the displacement dtheta after the budget: cos(dtheta, oracle); projection of dtheta on the unit oracle
   per 1k env steps; and cos(g_1, oracle) of the candidate's first raw gradient (before Adam), the estimator alone;
   each cosine also against the null oracle (its root mean square is the chance level). Reference row: "Adam on
   oracle half A" is one fresh-Adam step on half A's direction scored against half B.

    python benchmarks/teacher_probe.py            # about 15 min on one busy core (5 seeds x 3 snapshots)
    python benchmarks/teacher_probe.py --quick    # a smoke test (under a minute), into benchmarks/_work/
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import lightning as L
import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from lightning_meta_rl.buffer import RunningNorm
from lightning_meta_rl.config import MetaConfig, TeacherConfig
from lightning_meta_rl.datamodule import RolloutDataModule
from lightning_meta_rl.envs import EnvRunner
from lightning_meta_rl.meta_reward import leave_one_out
from lightning_meta_rl.module import MetaRLModule
from lightning_meta_rl.policies import ExplorationPolicy
from lightning_meta_rl.rollout import Collector
from lightning_meta_rl.teachers import LearnedTeacher
from lightning_meta_rl.types import Rollout

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "teacher_probe"
WORK = ROOT / "benchmarks" / "_work" / "teacher_probe"
SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)
SNAPSHOTS: tuple[int, ...] = (5_000, 15_000, 30_000)
M, GT_STARTS, REPS, BUDGET = 1024, 32, 4, 3_600
# name: (K, D0 steps per segment, teacher lr, PPO epochs (0: plain step), common start)
CANDIDATES: dict[str, tuple[int, int, float, int, bool]] = {
    "faithful (K=1, 200 steps)": (1, 200, 1e-3, 0, False),
    "K=4 common start + LOO": (4, 200, 1e-3, 0, True),
    "K=8 common start + LOO": (8, 200, 1e-3, 0, True),
    "K=4 x 50 steps, common start + LOO": (4, 50, 1e-3, 0, True),
    "K=4 PPO 4 epochs, clip 0.2": (4, 200, 1e-3, 4, True),
    "K=4 common start, lr 1e-2": (4, 200, 1e-2, 0, True),
}
CLIP = 0.2


@torch.no_grad()
def returns(actors: list[nn.Module], norm: RunningNorm, starts: np.ndarray, horizon: int = 200) -> np.ndarray:
    """Deterministic returns [len(actors), len(starts)] from (theta, theta_dot) starts, Pendulum-v1's dynamics."""
    th = torch.as_tensor(starts[:, 0], dtype=torch.float64).repeat(len(actors), 1)
    thdot = torch.as_tensor(starts[:, 1], dtype=torch.float64).repeat(len(actors), 1)
    total = torch.zeros_like(th)
    for _ in range(horizon):
        obs = norm(torch.stack([torch.cos(th), torch.sin(th), thdot], -1).float())
        u = torch.stack([a(obs[i])[:, 0] for i, a in enumerate(actors)]).double().clamp(-2.0, 2.0)
        total -= (torch.remainder(th + math.pi, 2 * math.pi) - math.pi) ** 2 + 0.1 * thdot**2 + 0.001 * u**2
        thdot = (thdot + (15.0 * torch.sin(th) + 3.0 * u) * 0.05).clamp(-8.0, 8.0)
        th = th + thdot * 0.05
    return total.numpy()


def starts(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform([-math.pi, -1.0], [math.pi, 1.0], size=(n, 2))  # Pendulum-v1's reset distribution


def flat_grad(teacher: LearnedTeacher, segments: list[Rollout], advantages: list[float]) -> torch.Tensor:
    """The ascent direction of the teacher's own meta-policy-gradient loss (minus its gradient), flattened."""
    teacher.zero_grad()
    loss, _, _ = teacher.meta_loss(segments, advantages, torch.device("cpu"))
    loss.backward()
    return -torch.cat([p.grad.flatten() for p in teacher.parameters() if p.grad is not None]).detach()


def flat(teacher: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in teacher.parameters()]).clone()


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


class Snapshot:
    """The frozen student and teacher of one snapshot, with the probe's own environment and random streams."""

    def __init__(self, model: MetaRLModule, data: RolloutDataModule, seed: int) -> None:
        self.model, self.data = model, data
        self.gen = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.collector = Collector([EnvRunner(data.env_id, data.env_kwargs, seed)], data.normalizer)

    def segments(self, teacher: LearnedTeacher, k: int, steps: int) -> list[Rollout]:
        policy = ExplorationPolicy(teacher, self.model.student, self.gen)
        return [self.collector.steps(policy, steps) for _ in range(k)]

    def lookaheads(self, segments: list[Rollout], chunk: int = 16) -> list[nn.Module]:
        out: list[nn.Module] = []
        for i in range(0, len(segments), chunk):
            out += self.model.lookahead(self.data, segments[i : i + chunk])[0]
        return out

    def oracle(self, m: int) -> dict[str, Any]:
        segs = self.segments(self.model.teacher, m, self.model.meta_cfg.d0_steps)
        ret = returns(
            [self.model.student.actor, *self.lookaheads(segs)], self.data.normalizer, starts(self.rng, GT_STARTS)
        )
        meta = (ret[1:] - ret[0]).mean(1)
        teacher = copy.deepcopy(self.model.teacher)

        def direction(idx: range) -> torch.Tensor:
            sub = meta[list(idx)]
            return flat_grad(teacher, [segs[i] for i in idx], list(sub - sub.mean()))

        a, b = direction(range(0, m, 2)), direction(range(1, m, 2))
        shuffled = self.rng.permutation(meta)  # the null: the same segments, meta-rewards permuted across them
        null = flat_grad(teacher, segs, list(shuffled - shuffled.mean()))
        null_a = flat_grad(teacher, segs[0::2], list(shuffled[0::2] - shuffled[0::2].mean()))
        null_b = flat_grad(teacher, segs[1::2], list(shuffled[1::2] - shuffled[1::2].mean()))
        # the score vectors' geometry: participation ratio and top share of their covariance's eigenvalues
        scores = torch.stack([flat_grad(teacher, [seg], [1.0]) for seg in segs]).double()
        eig = torch.linalg.eigvalsh((scores - scores.mean(0)) @ (scores - scores.mean(0)).T).clamp(min=0)
        g = ret[1:] - ret[0]
        return {
            "null_split_half": cos(null_a, null_b),
            "pr": float(eig.sum() ** 2 / eig.square().sum()),
            "top1": float(eig.max() / eig.sum()),
            "m_split_half": float(spearmanr(g[:, 0::2].mean(1), g[:, 1::2].mean(1)).statistic),
            "full": direction(range(m)),
            "a": a,
            "b": b,
            "null": null,
            "split_half": cos(a, b),
            "meta": meta,
            "r_pi": ret[0].mean(),
        }

    def candidate(self, k: int, steps: int, lr: float, epochs: int, common: bool) -> dict[str, Any]:
        teacher = copy.deepcopy(self.model.teacher)
        opt = teacher.make_optimizer(lr, lr)
        theta0, spent, updates, first = flat(teacher), 0, 0, None
        while spent < BUDGET:
            segs = self.segments(teacher, k, steps)
            las = self.lookaheads(segs)
            if common:  # one common start for the K look-aheads; R(pi) cancels in the leave-one-out advantage
                adv = leave_one_out(list(returns(las, self.data.normalizer, starts(self.rng, 1))[:, 0]))
            else:  # the faithful K = 1 meta-reward: R(pi') and R(pi) from two different starts
                two = starts(self.rng, 2)
                adv = [
                    float(returns(las, self.data.normalizer, two[:1])[0, 0])
                    - float(returns([self.model.student.actor], self.data.normalizer, two[1:])[0, 0])
                ]
            spent += k * steps + 200 * k + 200  # D0, one D1 episode per look-ahead, one R(pi) episode
            if first is None:
                first = flat_grad(teacher, segs, adv)
            if epochs == 0:
                opt.zero_grad()
                teacher.meta_loss(segs, adv, torch.device("cpu"))[0].backward()
                opt.step()
            else:
                self.ppo(teacher, opt, segs, adv, epochs)
            updates += 1
        return {"delta": flat(teacher) - theta0, "first": first, "spent": spent, "updates": updates}

    @staticmethod
    def ppo(
        teacher: LearnedTeacher, opt: torch.optim.Optimizer, segs: list[Rollout], adv: list[float], epochs: int
    ) -> None:
        context = torch.cat([s.context for s in segs if s.context is not None])
        raw = torch.cat([s.raw_action for s in segs])
        a = torch.cat([torch.full((len(s),), float(x)) for s, x in zip(segs, adv, strict=True)])
        weight = torch.cat([torch.full((len(s),), 1.0 / (len(s) * len(segs))) for s in segs])  # as meta_loss
        with torch.no_grad():
            old = teacher.log_prob(context, raw)
        for _ in range(epochs):
            ratio = (teacher.log_prob(context, raw) - old).exp()
            surrogate = torch.minimum(ratio * a, ratio.clamp(1 - CLIP, 1 + CLIP) * a)
            opt.zero_grad()
            (-(weight * surrogate).sum()).backward()
            opt.step()

    def close(self) -> None:
        for runner in self.collector.runners:
            runner.close()


def probe(model: MetaRLModule, data: RolloutDataModule, seed: int, k: int) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    rng_state, sample_state = torch.get_rng_state(), data.sample_rng.get_state()
    snap = Snapshot(model, data, 1_000 * seed + 100 + k)
    rows: list[dict[str, Any]] = []
    try:
        orc = snap.oracle(M)
        unit = orc["full"] / orc["full"].norm()
        base = {"seed": seed, "env_steps": data.env_steps, "r_pi": float(orc["r_pi"]), "split_half": orc["split_half"]}
        base |= {"meta_spread": float(orc["meta"].std()), "n_params": unit.numel()}
        base |= {key: orc[key] for key in ("null_split_half", "pr", "top1", "m_split_half")}
        ref = copy.deepcopy(model.teacher)  # one fresh Adam step along half A's direction, scored against half B
        step = ref.make_optimizer(1e-3, 1e-3)
        offset = 0
        for p in ref.parameters():
            p.grad = -orc["a"][offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        theta0 = flat(ref)
        step.step()
        d = flat(ref) - theta0
        rows.append(
            {
                **base,
                "config": "Adam on oracle half A (vs half B)",
                "rep": 0,
                "cos": cos(d, orc["b"]),
                "cos_first_grad": cos(orc["a"], orc["b"]),
                "proj_per_1k": math.nan,
                "spent": 0,
                "updates": 1,
                "cos_null": cos(d, orc["null"]),
                "cos_first_null": cos(orc["a"], orc["null"]),
            }
        )
        for name, spec in CANDIDATES.items():
            for rep in range(REPS):
                c = snap.candidate(*spec)
                rows.append(
                    {
                        **base,
                        "config": name,
                        "rep": rep,
                        "cos": cos(c["delta"], unit),
                        "cos_null": cos(c["delta"], orc["null"]),
                        "cos_first_null": cos(c["first"], orc["null"]),
                        "cos_first_grad": cos(c["first"], unit),
                        "proj_per_1k": float(c["delta"] @ unit) / (c["spent"] / 1e3),
                        "spent": c["spent"],
                        "updates": c["updates"],
                    }
                )
    finally:
        torch.set_rng_state(rng_state)
        data.sample_rng.set_state(sample_state)
        snap.close()
    print(
        f"seed {seed} snapshot {data.env_steps}: split-half {rows[0]['split_half']:+.3f}, "
        f"{time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return rows


class Probe(L.Callback):
    def __init__(self, seed: int, rows: list[dict[str, Any]]) -> None:
        self.seed, self.rows, self.done = seed, rows, 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        assert isinstance(pl_module, MetaRLModule)
        if self.done < len(SNAPSHOTS) and pl_module.data.env_steps >= SNAPSHOTS[self.done]:
            self.rows += probe(pl_module, pl_module.data, self.seed, self.done)  # type: ignore[arg-type]
            self.done += 1
            trainer.should_stop = self.done == len(SNAPSHOTS)


def train_and_probe(seed: int, rows: list[dict[str, Any]]) -> None:
    L.seed_everything(seed, verbose=False)
    data = RolloutDataModule(
        "Pendulum-v1",
        total_env_steps=SNAPSHOTS[-1] + 1_000,
        warmup_steps=1_000,
        eval_every=2_500,
        eval_episodes=10,
        seed=seed,
    )
    model = MetaRLModule(
        data.obs_dim,
        data.act_dim,
        data.action_low,
        data.action_high,
        teacher=TeacherConfig(kind="meta", sigma=0.2),
        meta=MetaConfig(),
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=-1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(WORK / f"seed{seed}"),
        callbacks=[Probe(seed, rows)],
    )
    trainer.fit(model, datamodule=data)


def report(rows: list[dict[str, Any]], command: str, wall: float) -> str:
    snaps = sorted({(r["seed"], r["env_steps"]) for r in rows})
    half = [next(r["split_half"] for r in rows if (r["seed"], r["env_steps"]) == s) for s in snaps]
    n_params = rows[0]["n_params"]
    lines = [
        "# Teacher updates against an oracle direction (issue 25, item 4)",
        "",
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, torch {torch.__version__}, one thread, {wall:.0f} s wall. "
        "Generated by `benchmarks/teacher_probe.py` (its docstring has the method). Command:",
        "",
        f"    {command}",
        "",
        f"Pendulum-v1 Meta runs (conf/pendulum.yaml settings), seeds {', '.join(str(s) for s in SEEDS)}; snapshots at "
        f"{', '.join(str(s[1]) for s in snaps if s[0] == SEEDS[0])} env steps (the first iteration end at or past "
        f"{', '.join(str(s) for s in SNAPSHOTS)}). Oracle: M = {M} look-aheads, m_k over {GT_STARTS} common "
        f"starts. Each candidate: {REPS} repetitions per snapshot, each until {BUDGET} env steps are spent.",
        "",
        "## The oracle's stability",
        "",
        "m split-half: Spearman of m_k from two halves of the start states (the meta-rewards' own reliability). "
        "Null split-half: the same cosine with the meta-rewards permuted across segments (no signal). PR and top "
        "share: participation ratio and largest-eigenvalue share of the covariance of the M per-segment score "
        "vectors grad mean log pi_e(D0_k) (how few directions carry them).",
        "",
        "| seed | env steps | R(pi) | std of m_k | m split-half | split-half cosine | null split-half | PR | top share |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s, h in zip(snaps, half, strict=True):
        r = next(r for r in rows if (r["seed"], r["env_steps"]) == s)
        lines.append(
            f"| {s[0]} | {s[1]} | {r['r_pi']:.1f} | {r['meta_spread']:.2f} | {r['m_split_half']:+.2f} | {h:+.3f} | "
            f"{r['null_split_half']:+.3f} | {r['pr']:.1f} | {r['top1']:.2f} |"
        )
    sb = 2 * np.mean(half) / (1 + np.mean(half))
    nulls = [next(r["null_split_half"] for r in rows if (r["seed"], r["env_steps"]) == s) for s in snaps]
    lines += [
        "",
        f"Mean split-half cosine {np.mean(half):+.3f} +- {np.std(half, ddof=1) / math.sqrt(len(half)):.3f} (s.e.; "
        f"halves of {M // 2}; positive in {sum(h > 0 for h in half)} of {len(half)}); the null's "
        f"{np.mean(nulls):+.3f}, root mean square {math.sqrt(np.mean(np.square(nulls))):.3f}. Spearman-Brown for the full M: "
        f"{sb:+.3f}, so the full oracle's expected cosine with the true gradient is about sqrt of that, "
        f"{math.sqrt(max(sb, 0.0)):.2f}. A random direction among the teacher's {n_params} parameters has cosine "
        f"about +-{1 / math.sqrt(n_params):.3f}.",
        "",
        "## Candidates",
        "",
        "Per snapshot the mean over repetitions; then mean [min, max] over snapshots. cos: displacement after the "
        "budget against the oracle. proj / 1k: its projection on the unit oracle per 1000 env steps (x 1e-3). "
        "cos g_1: the first raw gradient (the estimator before Adam). Chance: the root mean square of the same "
        "cosines against the null oracle (the same segments with their meta-rewards permuted), over all "
        "repetitions and snapshots: the size a cosine reaches with no signal at all.",
        "",
        "| configuration | cos(dtheta, oracle) | chance | proj / 1k env steps (x 1e-3) | cos(g_1, oracle) | chance | env steps per update | updates per budget |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in ["Adam on oracle half A (vs half B)", *CANDIDATES]:
        sel = [r for r in rows if r["config"] == name]
        per = {s: [r for r in sel if (r["seed"], r["env_steps"]) == s] for s in snaps}

        def agg(key: str, scale: float = 1.0, per: dict = per) -> str:
            v = np.array([np.mean([r[key] for r in rs]) * scale for rs in per.values()])
            return "-" if np.isnan(v).all() else f"{v.mean():+.3f} [{v.min():+.3f}, {v.max():+.3f}]"

        def rms(key: str, sel: list = sel) -> str:
            return f"{math.sqrt(np.mean([r[key] ** 2 for r in sel])):.3f}"

        updates = np.mean([r["updates"] for r in sel])
        spu = "-" if not sel[0]["spent"] else f"{np.mean([r['spent'] / r['updates'] for r in sel]):.0f}"
        lines.append(
            f"| {name} | {agg('cos')} | {rms('cos_null')} | {agg('proj_per_1k', 1e3)} | {agg('cos_first_grad')} | "
            f"{rms('cos_first_null')} | {spu} | {updates:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    global SEEDS, SNAPSHOTS, M, GT_STARTS, REPS, BUDGET
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke test (into benchmarks/_work/teacher_probe)")
    args = parser.parse_args()
    out = OUT
    if args.quick:
        SEEDS, SNAPSHOTS, M, GT_STARTS, REPS, BUDGET, out = (0,), (1_400,), 8, 4, 1, 800, WORK / "quick"
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    t = time.perf_counter()
    for seed in SEEDS:
        train_and_probe(seed, rows)
        with open(out / "teacher_probe.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    command = "python benchmarks/teacher_probe.py" + (" --quick" if args.quick else "")
    (out / "teacher_probe.md").write_text(report(rows, command, time.perf_counter() - t))
    print((out / "teacher_probe.md").read_text())


if __name__ == "__main__":
    main()
