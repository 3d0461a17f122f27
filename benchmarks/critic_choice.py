"""Which critic, how many states, which states: the ``meta.reward=critic`` estimator decided by measurement (issue 12).

The critic meta-reward is m = mean_{s in S} Q(s, mu'(s)) - Q(s, mu(s)). Three choices are open:

* the judge Q: the student's critic (the implementation), the look-ahead pi''s own critic, or their mean;
* |S|: 100 / 1000 (the implementation) / 10000 replay states;
* S itself: replay states drawn once per iteration and *shared* by the K look-aheads of that iteration, or
  drawn *independently* per look-ahead; or the D0 states (the look-ahead's own D0 segment, or all
  segments of the iteration pooled and shared).

Method. One Pendulum-v1 Meta run (conf/pendulum.yaml's settings: Meta teacher, sigma 0.2, SPEC defaults,
warm-up 1000, seed 0) is trained with the real MetaRLModule, RolloutDataModule and Lightning Trainer. At each
snapshot (every 5k environment steps from 5k to 40k) a callback takes the live student and teacher and

1. collects ``J`` fresh D0 segments (``d0_steps`` each, episodes continuing across segments) from the teacher
   on a separate Pendulum instance, and trains a look-ahead pi'_j on each with the module's own
   ``lookahead`` method (the real update, the real optimizer state);
2. ground truth: g_j = R(pi'_j) - R(pi), deterministic returns from ``GT_EPISODES`` start states, the same
   start states for every policy of the snapshot (Pendulum is deterministic given its start state, so the
   only noise left is which start states were drawn; its size is reported as a split-half reliability).
   Episodes run in a batched re-implementation of Pendulum-v1's dynamics (checked against gymnasium's
   environment at the first snapshot);
3. every candidate estimator ``REDRAWS`` times with fresh states; and, for reference, the paper's
   rollout estimator R(pi') - R(pi) with one episode each (unpaired: different start states; paired:
   the same start state), from further fresh start states.

The probe is neutral for the run: its environments and random generators are its own, and the
generators the run uses are restored afterwards, so the run is the same as without probes and an
interrupted script resumes (finished snapshots are read back from ``raw.json``, not recomputed).

What matters for the teacher is the *ranking* of the K look-aheads of one iteration (REINFORCE with a
leave-one-out baseline across K samples), so the main score is the Spearman correlation between estimate
and ground truth across the J look-aheads of a snapshot, averaged over snapshots. Also reported: the same
for the mean of all redraws (the estimator's bias alone, without its sampling noise), the signal-to-noise
ratio (spread across j of the redraw-averaged estimate / std across redraws of the centred estimate), the
Pearson correlation pooled over all snapshots (does the level track the truth: what a K = 1 teacher
without baseline needs), and the cost per look-ahead.

    python benchmarks/critic_choice.py            # train, probe, write results (resumable)
    python benchmarks/critic_choice.py --report   # only rebuild results.md from raw.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import gymnasium as gym
import lightning as L
import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from torch import nn

from lightning_meta_rl.buffer import RunningNorm, gather
from lightning_meta_rl.config import MetaConfig, TeacherConfig
from lightning_meta_rl.datamodule import RolloutDataModule
from lightning_meta_rl.envs import EnvRunner
from lightning_meta_rl.exploration import ExplorationPolicy
from lightning_meta_rl.meta_reward import critic_improvement
from lightning_meta_rl.module import MetaRLModule
from lightning_meta_rl.rollout import Collector

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "critic_choice"
WORK = ROOT / "benchmarks" / "_work" / "critic_choice"  # the run's metrics.csv (git-ignored)

SEED = 0
SNAPSHOTS: tuple[int, ...] = (5_000, 10_000, 15_000, 20_000, 25_000, 30_000, 35_000, 40_000)
J = 16  # look-aheads per snapshot
REDRAWS = 20  # state draws per candidate and snapshot
GT_EPISODES = 500  # common start states of the ground truth
STATE_COUNTS = (100, 1_000, 10_000)
JUDGES = ("student", "lookahead", "mean")
TIMING_REPS = 15


# ----------------------------------------------------------------------------- Pendulum-v1, batched
def angle_normalize(x: torch.Tensor) -> torch.Tensor:
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


def pendulum_obs(th: torch.Tensor, thdot: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.cos(th), torch.sin(th), thdot], -1).float()


@torch.no_grad()
def pendulum_returns(
    actors: Sequence[nn.Module], norm: RunningNorm, starts: np.ndarray, horizon: int = 200
) -> np.ndarray:
    """Deterministic returns [len(actors), len(starts)] from start states [N, 2] (theta, theta_dot), with
    gymnasium Pendulum-v1's dynamics (g 10, dt 0.05, max torque 2, max speed 8, 200 steps)."""
    p, n = len(actors), len(starts)
    th = torch.as_tensor(starts[:, 0], dtype=torch.float64).repeat(p, 1)
    thdot = torch.as_tensor(starts[:, 1], dtype=torch.float64).repeat(p, 1)
    total = torch.zeros(p, n, dtype=torch.float64)
    for _ in range(horizon):
        obs = norm(pendulum_obs(th, thdot))
        u = torch.stack([actor(obs[i])[:, 0] for i, actor in enumerate(actors)]).double().clamp(-2.0, 2.0)
        total -= angle_normalize(th) ** 2 + 0.1 * thdot**2 + 0.001 * u**2
        thdot = (thdot + (3 * 10.0 / 2 * torch.sin(th) + 3.0 * u) * 0.05).clamp(-8.0, 8.0)
        th = th + thdot * 0.05
    return total.numpy()


@torch.no_grad()
def gym_return(actor: nn.Module, norm: RunningNorm, start: np.ndarray) -> float:
    env = gym.make("Pendulum-v1")
    env.reset(seed=0)
    env.unwrapped.state = np.array(start, dtype=np.float64)  # type: ignore[attr-defined]
    obs = env.unwrapped._get_obs()  # type: ignore[attr-defined]
    total, done = 0.0, False
    while not done:
        a = actor(norm(torch.as_tensor(obs)[None]))[0].numpy()
        obs, r, term, trunc, _ = env.step(a)
        total += float(r)
        done = term or trunc
    env.close()
    return total


def start_states(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform([-math.pi, -1.0], [math.pi, 1.0], size=(n, 2))


# ----------------------------------------------------------------------------- the probe
@torch.no_grad()
def improvements(
    student_critic: nn.Module, la_critic: nn.Module, actor: nn.Module, la_actor: nn.Module, s: torch.Tensor
):
    """(student-critic estimate, look-ahead-critic estimate) on normalized states s."""
    return (
        critic_improvement(student_critic, actor, la_actor, s),
        critic_improvement(la_critic, actor, la_actor, s),
    )


def probe(model: MetaRLModule, data: RolloutDataModule, k: int, check_sim: bool) -> dict[str, Any]:
    """Everything measured at one snapshot (k: its index, which seeds its own random streams)."""
    t0 = time.perf_counter()
    rng_state, sample_state = torch.get_rng_state(), data.sample_rng.get_state()
    gen = torch.Generator().manual_seed(10_000 + k)
    np_rng = np.random.default_rng(20_000 + k)
    collector = Collector([EnvRunner(data.env_id, data.env_kwargs, 30_000 + k)], data.normalizer)
    policy = ExplorationPolicy(model.exploration, model.student, gen)
    student, norm = model.student, data.normalizer
    try:
        d0s, las = [], []
        for _ in range(J):
            d0 = collector.steps(policy, model.meta_cfg.d0_steps)
            la, _ = model.lookahead(data, d0)  # the module's own look-ahead (uses data.sample_rng: restored below)
            d0s.append(d0)
            las.append(la)
        actors = [student.actor] + [la.actor for la in las]

        # ground truth on common start states; the paper's one-episode estimators on fresh ones
        starts = start_states(np_rng, GT_EPISODES + 2 * REDRAWS * J)
        ret = pendulum_returns(actors, norm, starts)
        gt_ret = ret[:, :GT_EPISODES]
        gt = gt_ret[1:] - gt_ret[0]
        out: dict[str, Any] = {
            "env_steps": data.env_steps,
            "r_pi": float(gt_ret[0].mean()),
            "r_pi_prime": gt_ret[1:].mean(1).tolist(),
            "gt": gt.mean(1).tolist(),
            "gt_half_a": gt[:, 0::2].mean(1).tolist(),
            "gt_half_b": gt[:, 1::2].mean(1).tolist(),
        }
        if check_sim:  # the batched dynamics against gymnasium's environment, student and one look-ahead
            out["sim_check"] = [
                [float(ret[p, i]), gym_return(actors[p], norm, starts[i])] for p in (0, 1) for i in range(3)
            ]
        # reference, R(pi'_j) - R(pi) from one episode each: every pi'_j and pi from start states of their own
        # (the default, unpaired), or all K look-aheads and pi of an iteration from one common start state
        ref = ret[:, GT_EPISODES:].reshape(len(actors), REDRAWS, 2, J)  # [policy, draw, (pi', pi), j]
        own_starts = np.stack([ref[1 + j, :, 0, j] - ref[0, :, 1, j] for j in range(J)], 1)
        common = ref[1:, :, 0, 0].T - ref[0, :, 0, 0][:, None]
        out["est"] = {"return 1 ep, own starts": own_starts.tolist(), "return 1 ep, common start": common.tolist()}

        def replay(n: int) -> torch.Tensor:
            return norm(gather(data.buffer, data.buffer.sample_indices(n, gen)).obs)

        est: dict[str, list[list[float]]] = {}

        def put(name: str, r: int, j: int, pair: tuple[float, float]) -> None:
            for judge, v in zip(JUDGES, (pair[0], pair[1], 0.5 * (pair[0] + pair[1])), strict=True):
                rows = est.setdefault(f"{judge} | {name}", [[math.nan] * J for _ in range(REDRAWS)])
                rows[r][j] = v

        for r in range(REDRAWS):
            for n in STATE_COUNTS:
                shared = replay(n)
                for j, la in enumerate(las):
                    put(
                        f"replay {n} shared",
                        r,
                        j,
                        improvements(student.critic, la.critic, student.actor, la.actor, shared),
                    )
                    own = replay(n)
                    put(
                        f"replay {n} independent",
                        r,
                        j,
                        improvements(student.critic, la.critic, student.actor, la.actor, own),
                    )
        pooled = norm(torch.cat([d.obs for d in d0s]))
        for j, (la, d0) in enumerate(zip(las, d0s, strict=True)):  # deterministic given the D0s: one "draw"
            own_d0 = improvements(student.critic, la.critic, student.actor, la.actor, norm(d0.obs))
            all_d0 = improvements(student.critic, la.critic, student.actor, la.actor, pooled)
            for r in range(REDRAWS):
                put("D0 own (200)", r, j, own_d0)
                put(f"D0 pooled ({len(pooled)}) shared", r, j, all_d0)
        out["est"].update(est)

        # cost of one estimate for one look-ahead: state sampling (data.sample, as the module does) + critic(s)
        timing: dict[str, float] = {}
        la = las[0]
        for n in STATE_COUNTS:
            for judge in JUDGES:
                critics = {"student": [student.critic], "lookahead": [la.critic], "mean": [student.critic, la.critic]}
                times = []
                for _ in range(TIMING_REPS):
                    t = time.perf_counter()
                    s = data.sample(n).obs
                    for c in critics[judge]:
                        critic_improvement(c, student.actor, la.actor, s)
                    times.append(time.perf_counter() - t)
                timing[f"{judge} | replay {n}"] = 1e3 * float(np.median(times))
        out["timing_ms"] = timing
    finally:
        torch.set_rng_state(rng_state)
        data.sample_rng.set_state(sample_state)
        for runner in collector.runners:
            runner.close()
    out["probe_s"] = time.perf_counter() - t0
    return out


class Probe(L.Callback):
    """Runs ``probe`` at the first iteration end at or past each snapshot; stops training after the last."""

    def __init__(self, raw: dict[str, Any], path: Path) -> None:
        self.raw, self.path = raw, path

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        assert isinstance(pl_module, MetaRLModule)
        data = pl_module.data
        for k, at in enumerate(SNAPSHOTS):
            if data.env_steps >= at and str(at) not in self.raw:
                result = probe(pl_module, data, k, check_sim=k == 0)
                self.raw[str(at)] = result
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(self.raw))
                tmp.replace(self.path)
                print(
                    f"snapshot {at}: env_steps {result['env_steps']}, R(pi) {result['r_pi']:.0f}, "
                    f"probe {result['probe_s']:.0f} s",
                    flush=True,
                )
        if all(str(at) in self.raw for at in SNAPSHOTS):
            trainer.should_stop = True


def train_and_probe(raw: dict[str, Any], path: Path) -> None:
    L.seed_everything(SEED, verbose=False)
    data = RolloutDataModule(
        env_id="Pendulum-v1",
        total_env_steps=50_000,
        warmup_steps=1_000,
        eval_every=2_500,
        eval_episodes=10,
        seed=SEED,
    )
    model = MetaRLModule(
        data.obs_dim,
        data.act_dim,
        data.action_low,
        data.action_high,
        teacher=TeacherConfig(kind="meta", sigma=0.2),
        meta=MetaConfig(),
    )
    WORK.mkdir(parents=True, exist_ok=True)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=-1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(WORK),
        callbacks=[Probe(raw, path)],
    )
    trainer.fit(model, datamodule=data)


# ----------------------------------------------------------------------------- the report
def centred_noise(e: np.ndarray) -> float:
    """std across redraws of the estimate minus the mean over look-aheads of the same draw, mean over j."""
    c = e - e.mean(1, keepdims=True)
    return float(np.sqrt(c.var(0, ddof=1).mean()))


def summarize(raw: dict[str, Any]) -> list[dict[str, Any]]:
    snaps = [raw[str(at)] for at in SNAPSHOTS if str(at) in raw]
    names = list(snaps[0]["est"])
    rows = []
    for name in names:
        rho1, rho_inf, snr, xs, ys = [], [], [], [], []
        for s in snaps:
            e, gt = np.array(s["est"][name]), np.array(s["gt"])  # [R, J], [J]
            rho1.append(np.mean([spearmanr(draw, gt).statistic for draw in e]))
            rho_inf.append(spearmanr(e.mean(0), gt).statistic)
            noise = centred_noise(e)
            signal = float(e.mean(0).std(ddof=1))
            snr.append(signal / noise if noise > 0 else math.inf)
            xs.append(e.ravel())
            ys.append(np.tile(gt, len(e)))
        x, y = np.concatenate(xs), np.concatenate(ys)
        rows.append(
            {
                "name": name,
                "rho1": float(np.mean(rho1)),
                "rho1_se": float(np.std(rho1, ddof=1) / math.sqrt(len(rho1))),
                "rho1_per_snapshot": rho1,
                "rho_inf": float(np.mean(rho_inf)),
                "snr": float(np.median(snr)),
                "pooled_r": float(pearsonr(x, y).statistic),
                "sign": float(np.mean(np.sign(x) == np.sign(y))),
                "ms": float(np.median([s["timing_ms"].get(_timing_key(name), math.nan) for s in snaps])),
            }
        )
    return rows


def _timing_key(name: str) -> str:
    judge, states = name.split(" | ") if " | " in name else ("", name)
    words = states.split()
    return f"{judge} | replay {words[1]}" if words[0] == "replay" else ""


CONTRASTS = (
    ("student | replay 1000 shared", "lookahead | replay 1000 shared"),
    ("student | replay 1000 shared", "mean | replay 1000 shared"),
    ("student | replay 1000 shared", "student | replay 100 shared"),
    ("student | replay 10000 shared", "student | replay 1000 shared"),
    ("student | replay 100 shared", "student | replay 100 independent"),
    ("student | replay 1000 shared", "student | replay 1000 independent"),
    ("student | replay 1000 shared", "student | D0 pooled (3200) shared"),
    ("student | replay 1000 shared", "student | D0 own (200)"),
    ("student | replay 1000 shared", "return 1 ep, own starts"),
    ("return 1 ep, common start", "student | replay 1000 shared"),
)


def report(raw: dict[str, Any], command: str) -> str:
    snaps = [raw[str(at)] for at in SNAPSHOTS if str(at) in raw]
    rows = summarize(raw)
    lines = [
        "# The critic meta-reward: which judge, how many states, which states (issue 12)",
        "",
        "Generated by `benchmarks/critic_choice.py` (its docstring has the method). Command:",
        "",
        f"    {command}",
        "",
        f"One Pendulum-v1 Meta run (conf/pendulum.yaml settings, seed {SEED}); {len(snaps)} snapshots "
        f"({', '.join(str(s['env_steps']) for s in snaps)} env steps); at each, {J} look-aheads pi'_j from "
        f"{J} fresh teacher D0 segments (the module's `lookahead`); ground truth g_j = R(pi'_j) - R(pi) over "
        f"{GT_EPISODES} common start states; every estimator {REDRAWS} times with fresh states.",
        "",
        "## Snapshots and the ground truth",
        "",
        f"| env steps | R(pi) | mean g_j | std g_j across j | split-half Spearman of g ({GT_EPISODES // 2} vs {GT_EPISODES // 2} starts) | probe s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    halves = []
    for s in snaps:
        gt = np.array(s["gt"])
        h = spearmanr(s["gt_half_a"], s["gt_half_b"]).statistic
        halves.append(h)
        lines.append(
            f"| {s['env_steps']} | {s['r_pi']:.1f} | {gt.mean():+.2f} | {gt.std(ddof=1):.2f} | {h:.2f} | {s['probe_s']:.0f} |"
        )
    lines += [
        "",
        f"Mean split-half Spearman {np.mean(halves):.2f}; Spearman-Brown reliability of the ground truth's ranking "
        f"from all {GT_EPISODES} start states: {2 * np.mean(halves) / (1 + np.mean(halves)):.2f} (the ceiling of any rho below).",
    ]
    check = snaps[0].get("sim_check")
    if check:
        worst = max(abs(a - b) for a, b in check)
        lines.append(
            f"Batched Pendulum dynamics against gymnasium's environment, 6 episodes: largest return difference {worst:.2g}."
        )
    lines += [
        "",
        "## Estimators",
        "",
        "rho (1 draw): Spearman across the J look-aheads of a snapshot between one draw of the estimate and g, "
        "mean over draws and snapshots (+- standard error over snapshots): the ranking the teacher gets. "
        "rho (mean of draws): the same for the estimate averaged over all draws (its bias alone). "
        "SNR: spread across j of the draw-averaged estimate / std across draws of the estimate centred on "
        "the draw's mean over j (median over snapshots; inf: deterministic given D0). "
        "pooled r: Pearson of estimate and g over all snapshots, look-aheads and draws (the level: what "
        "K = 1 without a baseline needs). sign: fraction of estimates with the sign of g. ms: one estimate "
        "for one look-ahead (replay sampling with `data.sample` + the critic forwards), median.",
        "",
        "| judge | states | rho (1 draw) | rho (mean of draws) | SNR | pooled r | sign | ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in sorted(rows, key=lambda r: -r["rho1"]):
        judge, states = r["name"].split(" | ") if " | " in r["name"] else ("(rollouts)", r["name"])
        if r["name"] == "student | replay 1000 independent":
            states += " (the implementation)"
        ms = "400 env steps" if judge == "(rollouts)" else ("-" if math.isnan(r["ms"]) else f"{r['ms']:.2f}")
        lines.append(
            f"| {judge} | {states} | {r['rho1']:+.3f} +- {r['rho1_se']:.3f} | {r['rho_inf']:+.3f} | "
            f"{r['snr']:.2f} | {r['pooled_r']:+.3f} | {r['sign']:.2f} | {ms} |"
        )
    by_name = {r["name"]: np.array(r["rho1_per_snapshot"]) for r in rows}
    lines += [
        "",
        "## Paired contrasts",
        "",
        "rho (1 draw) of A minus that of B, per snapshot (the same look-aheads and ground truth), mean +- standard "
        "error over snapshots, and in how many snapshots A ranked better.",
        "",
        "| A | B | A - B | A better in |",
        "| --- | --- | --- | --- |",
    ]
    for a, b in CONTRASTS:
        if a in by_name and b in by_name:
            d = by_name[a] - by_name[b]
            lines.append(
                f"| {a.replace(' | ', ', ')} | {b.replace(' | ', ', ')} | {d.mean():+.3f} +- {d.std(ddof=1) / math.sqrt(len(d)):.3f} | "
                f"{int((d > 0).sum())} of {len(d)} |"
            )
    lines += ["", "## rho (1 draw) per snapshot", ""]
    lines.append("| judge / states | " + " | ".join(str(s["env_steps"]) for s in snaps) + " |")
    lines.append("| --- |" + " --- |" * len(snaps))
    for r in sorted(rows, key=lambda r: -r["rho1"]):
        lines.append(
            f"| {r['name'].replace(' | ', ', ')} | " + " | ".join(f"{v:+.2f}" for v in r["rho1_per_snapshot"]) + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", action="store_true", help="only rebuild results.md from raw.json")
    parser.add_argument("--quick", action="store_true", help="a smoke test of the script (into benchmarks/_work/)")
    args = parser.parse_args()
    out = OUT
    if args.quick:
        global SNAPSHOTS, J, REDRAWS, GT_EPISODES
        SNAPSHOTS, J, REDRAWS, GT_EPISODES, out = (2_000, 3_000), 4, 3, 40, WORK / "quick"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "raw.json"
    raw: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if not args.report and not all(str(at) in raw for at in SNAPSHOTS):
        t = time.perf_counter()
        train_and_probe(raw, path)
        print(f"train and probe: {time.perf_counter() - t:.0f} s", flush=True)
    if not raw:
        sys.exit("no snapshot measured yet: run without --report first")
    (out / "results.md").write_text(report(raw, "python benchmarks/critic_choice.py"))
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
