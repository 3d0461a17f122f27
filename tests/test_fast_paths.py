"""The shortcuts taken for speed (benchmarks/throughput.py) must not change what users see.

- Student updates skip ``manual_backward`` and ``LightningOptimizer.step`` only when nothing would
  happen on the way (lightning_meta_rl/fast_path.py): a callback or a module that listens to the
  backward or optimizer-step hooks still gets called for every student update; either way the trained
  parameters and ``trainer.global_step`` are the same.
- Training metrics are logged only on the iterations Lightning writes (``log_every_n_steps``), but every
  evaluation reaches the loggers.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import SMOKE, TINY, clear_run_dir_env, fit, read_metrics
from lightning.pytorch.callbacks import Callback

from lightning_meta_rl.cli import cli
from lightning_meta_rl.fast_path import lightning_is_idle
from lightning_meta_rl.module import MetaRLModule

QUIET = ["--trainer.callbacks=[]", "--trainer.enable_progress_bar=false"]
# the hooks Lightning calls around a manual backward and an optimizer step (written out, not imported,
# so that a hook dropped from fast_path.py's lists fails here)
CALLBACK_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
MODULE_HOOKS = (*CALLBACK_HOOKS, "backward")


class CountBackward(Callback):
    def __init__(self) -> None:
        self.before = 0
        self.after = 0

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        self.before += 1

    def on_after_backward(self, trainer, pl_module) -> None:
        self.after += 1


class CountSteps(Callback):
    def __init__(self) -> None:
        self.steps = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.steps += 1


def build(run_dir: Path, *overrides: str):
    """The CLI's model, data and trainer, not yet fitted."""
    try:
        return cli(["--config", SMOKE, "--run_dir", str(run_dir), *TINY, *overrides], run=False)
    finally:
        clear_run_dir_env()


def fit_with(run_dir: Path, callbacks: list[Callback], *overrides: str):
    c = build(run_dir, *QUIET, "--trainer.logger=false", *overrides)
    c.trainer.callbacks.extend(callbacks)
    c.trainer.fit(c.model, datamodule=c.datamodule)
    return c


def student_updates(c) -> int:
    """DDPG arm: utd_ratio updates per env step after warm-up (exact for TINY's round numbers)."""
    updates = int(c.model.utd_ratio * (c.datamodule.env_steps - c.datamodule.warmup_steps))
    assert updates > 0
    return updates


def test_fast_path_only_when_nobody_listens(tmp_path: Path) -> None:
    c = fit(tmp_path / "a", "--model.teacher.kind=gaussian", *QUIET)
    assert lightning_is_idle(c.trainer, c.model)
    assert c.model._fast and c.model._backward is torch.Tensor.backward

    c.trainer.callbacks.append(CountSteps())
    assert not lightning_is_idle(c.trainer, c.model)
    c.trainer.callbacks[-1] = CountBackward()
    assert not lightning_is_idle(c.trainer, c.model)


@pytest.mark.parametrize("hook", CALLBACK_HOOKS)
def test_a_callback_listening_to_any_one_hook_keeps_lightnings_path(tmp_path: Path, hook: str) -> None:
    c = build(tmp_path / "run", *QUIET, "--trainer.logger=false")
    assert lightning_is_idle(c.trainer, c.model)
    listener = type("Listener", (Callback,), {hook: lambda self, *args: None})()
    c.trainer.callbacks.append(listener)
    assert not lightning_is_idle(c.trainer, c.model)


@pytest.mark.parametrize("hook", MODULE_HOOKS)
def test_a_module_overriding_any_one_hook_keeps_lightnings_path(tmp_path: Path, hook: str) -> None:
    c = build(tmp_path / "run", *QUIET, "--trainer.logger=false")
    c.model.__class__ = type("Listening", (MetaRLModule,), {hook: lambda self, *args, **kwargs: None})
    assert not lightning_is_idle(c.trainer, c.model)


@pytest.mark.parametrize("setting", ["--trainer.profiler=simple", "--trainer.precision=64-true"])
def test_a_profiler_or_another_precision_keeps_lightnings_path(tmp_path: Path, setting: str) -> None:
    c = build(tmp_path / "run", *QUIET, "--trainer.logger=false", setting)
    assert not lightning_is_idle(c.trainer, c.model)


def test_backward_hooks_fire_for_every_student_update(tmp_path: Path) -> None:
    """DDPG arm (no teacher step): every backward is a student update, two per DDPG update."""
    counter = CountBackward()
    c = fit_with(tmp_path / "run", [counter], "--model.teacher.kind=gaussian")
    assert not c.model._fast and c.model._backward == c.model.manual_backward
    assert counter.before == counter.after == 2 * student_updates(c)


def test_optimizer_step_hooks_fire_for_every_student_update(tmp_path: Path) -> None:
    counter = CountSteps()
    c = fit_with(tmp_path / "run", [counter], "--model.teacher.kind=gaussian")
    assert not c.model._fast
    assert counter.steps == 2 * student_updates(c)


@pytest.mark.parametrize("kind", ["gaussian", "meta"])
def test_fast_and_lightning_paths_train_the_same_student_and_count_the_same_steps(tmp_path: Path, kind: str) -> None:
    fast = fit_with(tmp_path / "fast", [], f"--model.teacher.kind={kind}", "--model.meta.lookahead=inplace")
    slow = fit_with(tmp_path / "slow", [CountSteps()], f"--model.teacher.kind={kind}", "--model.meta.lookahead=inplace")
    assert fast.model._fast and not slow.model._fast
    assert fast.trainer.global_step == slow.trainer.global_step > 0
    if kind == "gaussian":  # two optimizer steps per DDPG update
        assert fast.trainer.global_step == 2 * student_updates(fast)
    for (name, a), (_, b) in zip(fast.model.state_dict().items(), slow.model.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_module_override_of_a_hook_is_honoured(tmp_path: Path) -> None:
    class Listening(MetaRLModule):
        def on_before_optimizer_step(self, optimizer) -> None:
            self.seen = getattr(self, "seen", 0) + 1

    c = build(tmp_path / "run", "--model.teacher.kind=gaussian", *QUIET, "--trainer.logger=false")
    m = c.model
    listening = Listening(
        m.hparams.obs_dim,
        m.hparams.act_dim,
        m.hparams.action_low,
        m.hparams.action_high,
        student=m.cfg,
        teacher=m.teacher_cfg,
        meta=m.meta_cfg,
        utd_ratio=m.utd_ratio,
    )
    c.trainer.fit(listening, datamodule=c.datamodule)
    assert not lightning_is_idle(c.trainer, listening)
    assert listening._backward == listening.manual_backward
    assert listening.seen == 2 * student_updates(c)


def test_every_evaluation_reaches_the_logger_when_logging_is_sparse(tmp_path: Path) -> None:
    save = tmp_path / "csv"
    run_dir = tmp_path / "run"
    c = fit(
        run_dir,
        "--model.teacher.kind=gaussian",  # 100 env steps per iteration: many iterations, many evaluations
        *QUIET,
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={save}",
        "--trainer.log_every_n_steps=3",
        "--data.total_env_steps=1600",
        "--data.eval_every=200",
    )
    _, evals = read_metrics(run_dir)
    (logged,) = save.rglob("metrics.csv")
    with open(logged, newline="") as f:
        rows = list(csv.DictReader(f))
    logged_evals = [(r["env_steps"], r["eval/return"]) for r in rows if r.get("eval/return")]
    assert len(evals) >= 5
    assert [float(s) for s, _ in logged_evals] == [float(r["env_steps"]) for r in evals]
    assert [float(v) for _, v in logged_evals] == [float(r["eval/return"]) for r in evals]
    # training metrics: only every third iteration and the last are written, each with its own values
    # (DDPG arm: iteration k, 0-based, ends at warm-up 200 + 100 * (k + 1) env steps)
    train_rows = [r for r in rows if r.get("student/updates")]
    n = c.model.global_step_iterations
    assert n >= 9
    assert [int(r["step"]) for r in train_rows] == [k for k in range(n) if (k + 1) % 3 == 0 or k == n - 1]
    assert all(float(r["env_steps"]) == 200 + 100 * (int(r["step"]) + 1) for r in train_rows)


def test_logging_can_be_switched_off(tmp_path: Path) -> None:
    save = tmp_path / "csv"
    fit(
        tmp_path / "run",
        *QUIET,
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={save}",
        "--trainer.log_every_n_steps=0",
    )
    _, evals = read_metrics(tmp_path / "run")
    (logged,) = save.rglob("metrics.csv")
    with open(logged, newline="") as f:
        rows = list(csv.DictReader(f))
    assert not [r for r in rows if r.get("student/updates")]
    assert len([r for r in rows if r.get("eval/return")]) == len(evals) >= 1


def test_the_lightning_internals_the_fast_path_relies_on_still_exist(tmp_path: Path) -> None:
    """fast_path.py uses two private pieces of Lightning. If an upgrade renames them, the fast path would
    silently turn itself off (slower, still correct); this test makes that loud instead."""
    import lightning

    c = fit(tmp_path / "a", "--model.teacher.kind=gaussian", *QUIET)
    optimizers = getattr(c.trainer.strategy, "_lightning_optimizers", None)
    where = f"lightning {lightning.__version__} changed internals that lightning_meta_rl/fast_path.py uses"
    assert optimizers, f"{where}: Strategy._lightning_optimizers is gone"
    for opt in optimizers:
        for name in ("_on_before_step", "_on_after_step"):
            assert callable(getattr(opt, name, None)), f"{where}: LightningOptimizer.{name} is gone"
    assert c.model._fast, f"{where}: the fast path did not engage on a plain one-process run"
