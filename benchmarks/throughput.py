"""Throughput on Hopper-v5: environment steps/s and gradient updates/s of our trainer against a plain loop.

Three arms, interleaved (ref, ddpg, meta, ref, ...) for ``--repeats`` rounds of ``--steps`` env steps each:

* ``ref``: a plain-PyTorch DDPG loop written below (no Lightning). It imports our ``Student``,
  ``ddpg_step``, ``make_adam``, ``ReplayBuffer``, ``RunningNorm`` and ``gather``, so it measures only
  what Lightning and our data path (collectors, rollouts, logging, callbacks) add. One gymnasium env
  stepped by hand, uniform warm-up, then iterations of ``d0_steps`` noisy steps (Gaussian noise around
  mu(s) on normalized observations, clipped) followed by ``utd_ratio`` updates per env step (critic, then
  actor, then polyak). Its hyperparameters are read from the trainer's own CLI, so they cannot drift.
  It is deliberately lean (numpy arrays per chunk, numpy noise, no per-step checks): it is the ceiling.
* ``ddpg``: our trainer, teacher kind ``gaussian`` (conf/hopper_ddpg.yaml).
* ``meta``: our trainer, teacher kind ``meta`` (conf/hopper.yaml); its env steps include D0, D1 and the
  R(pi) rollouts (all counted in the budget), its updates are student + look-ahead updates.
* ``sb3`` (with ``--sb3``; ``pip install -e ".[bench]"``): Stable-Baselines3's DDPG, the peer, on the same env
  with the same hidden widths, batch size, gamma, tau, buffer size, warm-up, Gaussian noise scale and
  update-to-data ratio (``train_freq = d0_steps`` env steps, then ``utd_ratio * d0_steps`` gradient steps,
  as our loop does). Differences it keeps: one learning rate for actor and critic (the actor's), no
  LayerNorm, no observation normalization, no critic L2. Timed over the same window (after warm-up).
* ``ddpg_compiled`` and ``meta_compiled`` (with ``--compile``): the two arms with ``--model.compile=true``
  (``torch.compile`` of the one update, ``ddpg_step`` in lightning_meta_rl/learner.py). Their window
  starts at the second training iteration, so compiling (in the first) is left out of the steady state and
  reported on its own: the first iteration's time less the window's mean time per iteration (only the
  process's first compiled run compiles; later ones reuse dynamo's code).

The trainer runs in-process through ``lightning_meta_rl.cli.cli(..., run=False)`` (W&B disabled, no
logger, no config callbacks, no progress bar; the default ``EnvStepCheckpoint`` stays, as in every run,
and saves only after the window). A callback times the steady state: from the start of the first
training iteration (after warm-up) to the end of the last; reporting evaluation (one episode at the end,
not counted in env steps) is subtracted. The reference times the same window. Updates are ``utd_ratio``
times the window's env steps plus ``lookahead_updates`` per Meta iteration.

Settings: ``default`` (SPEC defaults: 64-64 LayerNorm, batch 64, utd 0.25), ``modern``
(conf/profiles/modern.yaml: 256-256, batch 256, lr 3e-4, tau 0.005, utd 1) and, only when named in
``--settings``, ``modern_plain``: the modern setting without LayerNorm (benchmarks/plain_nets.yaml), the nets
SB3 builds. All arms run with ``torch.set_num_threads(1)`` for a fair single-core comparison.

    python benchmarks/throughput.py            # full: 20000 steps x 3 repeats x 2 settings
    python benchmarks/throughput.py --quick    # 3000 steps x 1 repeat, default setting only
    python benchmarks/throughput.py --sb3      # adds Stable-Baselines3's DDPG (the "bench" extra)
    python benchmarks/throughput.py --compile  # adds the compiled DDPG and Meta arms
"""

from __future__ import annotations

import argparse
import csv
import gc
import logging
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from lightning_meta_rl.adam import AdamState, make_adam
from lightning_meta_rl.buffer import ReplayBuffer, RunningNorm, gather
from lightning_meta_rl.cli import RUN_DIR_ENV, cli
from lightning_meta_rl.datamodule import RolloutDataModule
from lightning_meta_rl.learner import ddpg_step
from lightning_meta_rl.module import MetaRLModule
from lightning_meta_rl.networks import ActionScale, Student
from lightning_meta_rl.types import Batch, Rollout

ROOT = Path(__file__).resolve().parents[1]
ENV_ID = "Hopper-v5"
ARMS = ("ref", "ddpg", "meta")
ARM_CONFIG = {
    "ddpg": "conf/hopper_ddpg.yaml",
    "meta": "conf/hopper.yaml",
    "ddpg_compiled": "conf/hopper_ddpg.yaml",
    "meta_compiled": "conf/hopper.yaml",
}
COMPILED_ARMS = ("ddpg_compiled", "meta_compiled")
# every arm of a process alike: the flag is process-wide (main thread), so SB3 and the reference get it too
FLUSH_DENORMAL = {"flush": True}
SETTINGS = {
    "default": [],
    "modern": ["conf/profiles/modern.yaml"],
    "modern_plain": ["conf/profiles/modern.yaml", "benchmarks/plain_nets.yaml"],
}


@dataclass
class Run:
    setting: str
    arm: str
    repeat: int
    env_steps: int
    seconds: float
    updates: int
    startup_s: float = 0.0  # compiled arms: the first iteration's time beyond a steady one

    def row(self) -> dict[str, object]:
        return {
            **{k: v for k, v in asdict(self).items() if k != "updates"},
            "env_steps_per_s": self.env_steps / self.seconds,
            "updates_per_s": self.updates / self.seconds,
        }


def build_cli(setting: str, arm: str, steps: int, seed: int, run_dir: str):
    """Our trainer for one arm and setting, instantiated but not fitted."""
    os.environ.pop(RUN_DIR_ENV, None)  # cli() sets it for DDP ranks; a later in-process run must not inherit it
    configs = [ARM_CONFIG["ddpg" if arm == "ref" else arm], *SETTINGS[setting]]
    args = [a for c in configs for a in ("--config", str(ROOT / c))]
    args += [f"--seed_everything={seed}", f"--data.total_env_steps={steps}", f"--run_dir={run_dir}"]
    args += ["--trainer.logger=false", "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false"]
    args += ["--trainer.enable_model_summary=false", f"--data.eval_every={10 * steps}", "--data.eval_episodes=1"]
    # explicit either way: the 300k-step configs compile by default
    args.append(f"--model.compile={'true' if arm in COMPILED_ARMS else 'false'}")
    args.append(f"--flush_denormal={'true' if FLUSH_DENORMAL['flush'] else 'false'}")
    return cli(args, run=False)


class Window(Callback):
    """Wall time, env steps and gradient updates from the first training iteration to the end of the last."""

    def __init__(self, first_batch: int = 0) -> None:
        self.first_batch = first_batch  # the window starts at this training iteration
        self.t0: float | None = None
        self.t1, self.excluded, self.steps0, self.steps1, self.updates = 0.0, 0.0, 0, 0, 0
        self.lookahead_updates, self.batches, self.before_s = 0, 0, 0.0
        self.t_start: float | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        data = trainer.datamodule
        evaluate = data.evaluate

        def timed_evaluate(policy):  # reporting evaluation is not training: keep it out of the window
            t = time.perf_counter()
            out = evaluate(policy)
            self.excluded += time.perf_counter() - t
            return out

        data.evaluate = timed_evaluate

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        # the module's on_train_start (warm-up, first R(pi)) has run by now
        if self.t_start is None:
            self.t_start = time.perf_counter()
        if self.t0 is None and batch_idx >= self.first_batch:
            self.steps0, self.t0 = trainer.datamodule.env_steps, time.perf_counter()
            self.before_s = self.t0 - self.t_start - self.excluded  # the iterations left out of the window
            self.excluded = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.t0 is None:
            return
        # student updates: utd_ratio per env step (exact up to the carried fraction); plus the look-ahead's
        self.updates = int(pl_module.utd_ratio * (trainer.datamodule.env_steps - self.steps0))
        self.lookahead_updates += pl_module.meta_cfg.lookahead_updates if pl_module.is_meta else 0
        self.steps1, self.t1 = trainer.datamodule.env_steps, time.perf_counter()
        self.batches += 1


def trainer_run(setting: str, arm: str, repeat: int, steps: int) -> Run:
    with tempfile.TemporaryDirectory() as tmp:
        c = build_cli(setting, arm, steps, repeat, os.path.join(tmp, "run"))
        window = Window(first_batch=1 if arm in COMPILED_ARMS else 0)
        c.trainer.callbacks.append(window)
        c.trainer.fit(c.model, datamodule=c.datamodule)
    assert window.t0 is not None, "training ran no iteration"
    seconds = window.t1 - window.t0 - window.excluded
    updates = window.updates + window.lookahead_updates
    startup = window.before_s - window.first_batch * seconds / window.batches if window.first_batch else 0.0
    return Run(setting, arm, repeat, window.steps1 - window.steps0, seconds, updates, startup)


def ddpg_recipe(setting: str, steps: int) -> tuple[MetaRLModule, RolloutDataModule]:
    """The DDPG arm's model and data, instantiated by its CLI: the reference reads its settings from them."""
    with tempfile.TemporaryDirectory() as tmp:
        c = build_cli(setting, "ddpg", steps, 0, os.path.join(tmp, "run"))
    return c.model, c.datamodule


class HandStepper:
    """One gymnasium env stepped by hand; episodes continue across calls. ``act`` maps raw obs to an action."""

    def __init__(self, seed: int) -> None:
        self.env = gym.make(ENV_ID)
        self.obs = self.env.reset(seed=seed)[0].astype(np.float32)

    def steps(self, n: int, act: Callable[[np.ndarray], np.ndarray]) -> Rollout:
        obs, nxt = np.empty((n, self.obs.size), np.float32), np.empty((n, self.obs.size), np.float32)
        actions = np.empty((n, self.env.action_space.shape[0]), np.float32)
        rewards, terms = np.empty(n, np.float32), np.empty(n, np.float32)
        for t in range(n):
            obs[t], actions[t] = self.obs, act(self.obs)
            nxt[t], rewards[t], terminated, truncated, _ = self.env.step(actions[t])
            terms[t] = terminated
            self.obs = self.env.reset()[0].astype(np.float32) if terminated or truncated else nxt[t]
        a, r, d = torch.from_numpy(actions), torch.from_numpy(rewards), torch.from_numpy(terms)
        return Rollout(torch.from_numpy(obs), a, a, r, torch.from_numpy(nxt), d, torch.zeros(n))


def reference_run(
    recipe: tuple[MetaRLModule, RolloutDataModule],
    setting: str,
    repeat: int,
    steps: int,
    on_end: Callable[[Student, torch.optim.Optimizer, torch.optim.Optimizer], None] | None = None,
) -> Run:
    """Plain DDPG, no Lightning: warm-up, then d0_steps noisy steps and utd_ratio updates per step, repeated.
    ``on_end`` (untimed) sees the trained student and its actor and critic optimizers."""
    (model, data), seed = recipe, repeat
    cfg = model.student_cfg
    torch.manual_seed(seed)
    rng, generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    env = HandStepper(seed)
    low, high = env.env.action_space.low, env.env.action_space.high
    obs_dim, act_dim = env.obs.size, low.size
    student = Student(obs_dim, ActionScale(low.tolist(), high.tolist()), cfg.hidden, cfg.layer_norm)
    actor_opt = make_adam(list(student.actor.parameters()), cfg.actor_lr)
    critic_opt = make_adam(list(student.critic.parameters()), cfg.critic_lr)
    step = partial(ddpg_step, gamma=cfg.gamma, tau=cfg.tau, critic_l2=cfg.critic_l2)
    actor_adam, critic_adam = AdamState.of(actor_opt), AdamState.of(critic_opt)
    buffer = ReplayBuffer(data.buffer_size, obs_dim, act_dim)
    norm = RunningNorm(obs_dim, data.obs_clip, enabled=data.normalize_obs)
    noise_std = model.teacher_cfg.sigma * (high - low) / 2

    @torch.no_grad()
    def noisy(obs: np.ndarray) -> np.ndarray:
        mu = student.actor(norm(torch.from_numpy(obs).unsqueeze(0)))[0].numpy()
        return np.clip(mu + noise_std * rng.standard_normal(act_dim), low, high)

    def add(rollout: Rollout) -> None:
        buffer.add(rollout)
        norm.update(rollout.obs)

    def sample() -> Batch:
        b = gather(buffer, buffer.sample_indices(cfg.batch_size, generator))
        return Batch(norm(b.obs), b.action, b.reward, norm(b.next_obs), b.terminated)

    add(env.steps(data.warmup_steps, lambda obs: rng.uniform(low, high)))
    done, credit, updates = data.warmup_steps, 0.0, 0
    t0 = time.perf_counter()
    while done < steps:
        n = min(model.meta_cfg.d0_steps, steps - done)
        add(env.steps(n, noisy))
        done, credit = done + n, credit + model.utd_ratio * n
        for _ in range(int(credit)):
            step(student, actor_adam, critic_adam, sample())
        updates, credit = updates + int(credit), credit - int(credit)
    run = Run(setting, "ref", repeat, done - data.warmup_steps, time.perf_counter() - t0, updates)
    if on_end is not None:
        on_end(student, actor_opt, critic_opt)
    return run


def sb3_run(recipe: tuple[MetaRLModule, RolloutDataModule], setting: str, repeat: int, steps: int) -> Run:
    """Stable-Baselines3 DDPG with our settings (see the module docstring for what differs)."""
    from stable_baselines3 import DDPG
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.noise import NormalActionNoise

    model, data = recipe
    cfg, n = model.student_cfg, model.meta_cfg.d0_steps
    env = gym.make(ENV_ID)
    low, high = env.action_space.low, env.action_space.high
    noise = NormalActionNoise(np.zeros_like(low), model.teacher_cfg.sigma * (high - low) / 2)

    class SteadyState(BaseCallback):
        t0: float | None = None
        steps0 = 0

        def _on_step(self) -> bool:
            if self.t0 is None and self.num_timesteps >= data.warmup_steps:
                self.t0, self.steps0 = time.perf_counter(), self.num_timesteps
            return True

    agent = DDPG(
        "MlpPolicy",
        env,
        learning_rate=cfg.actor_lr,
        buffer_size=data.buffer_size,
        learning_starts=data.warmup_steps,
        batch_size=cfg.batch_size,
        tau=cfg.tau,
        gamma=cfg.gamma,
        train_freq=(n, "step"),
        gradient_steps=int(model.utd_ratio * n),
        action_noise=noise,
        policy_kwargs={"net_arch": list(cfg.hidden)},
        seed=repeat,
        device="cpu",
        verbose=0,
    )
    timer = SteadyState()
    agent.learn(total_timesteps=steps, callback=timer)
    assert timer.t0 is not None
    window = steps - timer.steps0
    return Run(setting, "sb3", repeat, window, time.perf_counter() - timer.t0, int(model.utd_ratio * window))


def medians(runs: list[Run], setting: str, arm: str) -> tuple[float, float]:
    rows = [r.row() for r in runs if r.setting == setting and r.arm == arm]
    return statistics.median(r["env_steps_per_s"] for r in rows), statistics.median(r["updates_per_s"] for r in rows)


def ratio_lines(runs: list[Run], setting: str) -> list[str]:
    def has(arm: str) -> bool:
        return any(r.setting == setting and r.arm == arm for r in runs)

    (ref, _), (ddpg, _) = medians(runs, setting, "ref"), medians(runs, setting, "ddpg")
    overhead = ddpg / ref
    lines = [
        f"- {setting}: DDPG arm / reference env steps/s = {overhead:.3f} (target >= 0.95: "
        f"{'met' if overhead >= 0.95 else 'NOT met'})",
    ]
    meta = medians(runs, setting, "meta")[0] if has("meta") else math.nan
    if has("meta"):
        meta_cost = ddpg / meta
        lines.append(
            f"- {setting}: Meta arm / DDPG arm wall-clock per env step = {meta_cost:.3f} (target <= 1.5: "
            f"{'met' if meta_cost <= 1.5 else 'NOT met'})"
        )
    compiled = any(r.setting == setting and r.arm == "ddpg_compiled" for r in runs)
    if compiled:
        fast, _ = medians(runs, setting, "ddpg_compiled")
        # dynamo keeps compiled code for the process's lifetime: only the first compiled run compiles
        startup = max(r.startup_s for r in runs if r.setting == setting and r.arm == "ddpg_compiled")
        lines.append(
            f"- {setting}: compiled DDPG arm / reference env steps/s = {fast / ref:.3f} (target >= 1.5: "
            f"{'met' if fast / ref >= 1.5 else 'NOT met'}); compiled / eager DDPG arm = {fast / ddpg:.3f}; "
            f"compile start-up {startup:.1f} s (the first compiled run of the process, cold or warm inductor cache)"
        )
    if has("meta_compiled") and has("meta"):
        fast_meta, _ = medians(runs, setting, "meta_compiled")
        lines.append(f"- {setting}: compiled Meta arm / eager Meta arm env steps/s = {fast_meta / meta:.3f}")
    if any(r.setting == setting and r.arm == "sb3" for r in runs):
        peer, _ = medians(runs, setting, "sb3")
        lines.append(f"- {setting}: DDPG arm / Stable-Baselines3 DDPG env steps/s = {ddpg / peer:.3f}")
        if compiled:
            lines.append(f"- {setting}: compiled DDPG arm / Stable-Baselines3 DDPG env steps/s = {fast / peer:.3f}")
    return lines


def report(runs: list[Run], command: str, steps: int) -> str:
    settings = list(dict.fromkeys(r.setting for r in runs))
    lines = [
        f"# Throughput on {ENV_ID}: {steps} env steps per run, medians over repeats",
        "",
        f"Command: `{command}`",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs, denormals "
        f"{'flushed to zero' if FLUSH_DENORMAL['flush'] else 'kept (IEEE)'} in every arm. Window: first "
        "iteration after warm-up to the end of training, reporting evaluation excluded.",
        "",
        "| setting | arm | runs | env steps/s | updates/s | ms per env step |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    arms = list(dict.fromkeys(r.arm for r in runs))
    for setting in settings:
        for arm in arms:
            sps, ups = medians(runs, setting, arm)
            n = sum(r.setting == setting and r.arm == arm for r in runs)
            lines.append(f"| {setting} | {arm} | {n} | {sps:.0f} | {ups:.0f} | {1000 / sps:.3f} |")
    lines += ["", "Ratios (of medians):", ""] + [line for s in settings for line in ratio_lines(runs, s)]
    return "\n".join(lines) + "\n"


def run_all(settings: list[str], repeats: int, steps: int, arms: tuple[str, ...] = ARMS) -> list[Run]:
    """Every (setting, repeat, arm), the arms interleaved within each round."""
    runs: list[Run] = []
    for setting in settings:
        recipe = ddpg_recipe(setting, steps)
        for repeat in range(repeats):
            for arm in arms:
                gc.collect()
                if arm == "ref":
                    run = reference_run(recipe, setting, repeat, steps)
                elif arm == "sb3":
                    run = sb3_run(recipe, setting, repeat, steps)
                else:
                    run = trainer_run(setting, arm, repeat, steps)
                print(f"{setting} {arm} repeat {repeat}: {run.row()['env_steps_per_s']:.0f} env steps/s", flush=True)
                runs.append(run)
    return runs


def write_csv(runs: list[Run], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(runs[0].row()))
        writer.writeheader()
        writer.writerows(r.row() for r in runs)


def quiet() -> None:
    """Same conditions for every arm: one thread, no W&B; Lightning's start-up banners silenced."""
    torch.set_num_threads(1)
    torch.set_flush_denormal(FLUSH_DENORMAL["flush"])
    os.environ["WANDB_MODE"] = "disabled"
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"lightning\.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3000 steps, 1 repeat, default setting only")
    parser.add_argument("--steps", type=int, default=None, help="env steps per run (default 20000; quick 3000)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 3; quick 1)")
    parser.add_argument(
        "--settings", nargs="+", choices=list(SETTINGS), default=None, help="default: default and modern"
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--sb3", action="store_true", help="add Stable-Baselines3's DDPG (pip install -e '.[bench]')")
    parser.add_argument("--compile", action="store_true", help="add the ddpg_compiled and meta_compiled arms")
    parser.add_argument("--arms", nargs="+", default=None, help="run only these arms (ref and ddpg always run)")
    parser.add_argument(
        "--flush-denormal", choices=("on", "off"), default="on", help="every arm alike (the CLI's default: on)"
    )
    args = parser.parse_args()
    FLUSH_DENORMAL["flush"] = args.flush_denormal == "on"
    steps = args.steps or (3000 if args.quick else 20000)
    repeats = args.repeats or (1 if args.quick else 3)
    out = args.out or ROOT / "benchmarks" / "results" / ("throughput_quick" if args.quick else "throughput")
    quiet()
    arms = (*ARMS, "sb3") if args.sb3 else ARMS
    arms = (*arms, *COMPILED_ARMS) if args.compile else arms
    if args.arms:
        arms = tuple(a for a in arms if a in ("ref", "ddpg", *args.arms))
    runs = run_all(args.settings or (["default"] if args.quick else ["default", "modern"]), repeats, steps, arms)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(runs, out / "throughput.csv")
    text = report(runs, "python benchmarks/throughput.py " + " ".join(sys.argv[1:]), steps)
    (out / "throughput.md").write_text(text)
    print(text)
    if args.quick:
        print(ratio_lines(runs, "default")[0].removeprefix("- "))


if __name__ == "__main__":
    main()
