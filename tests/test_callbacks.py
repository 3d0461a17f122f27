"""The optional callbacks (callbacks/*): state-visitation figure and data, learning curve, meta-reward
statistics, the env-step progress bar, and training without any of them."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from types import SimpleNamespace

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from conftest import fit, isolated_env, make_rollout, read_metrics, torch_threads

from callbacks.curves import LearningCurve, draw_curve
from callbacks.meta_stats import MetaRewardStats
from callbacks.visitation import StateVisitation, density, draw_visitation, explained_variance, fit_pca, project
from lightning_meta_rl.config import StudentConfig, TeacherConfig
from lightning_meta_rl.module import MetaRLModule
from lightning_meta_rl.types import IterationRecord

pytestmark = pytest.mark.usefixtures("one_thread")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WINDOW_KEYS = {"early_teacher", "early_student", "late_teacher", "late_student"}
D0_STEPS = 100  # conftest.TINY
WARMUP = 200  # conftest.TINY
BUDGET = 4000


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (max distance between the empirical CDFs)."""
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def assert_png(path: Path, shape: tuple[int, int]) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5_000, f"{path} is only {len(data)} bytes"
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == shape
    assert float(image[..., :3].std()) > 0.01  # not a blank canvas


def tiny_module(kind: str = "meta") -> MetaRLModule:
    return MetaRLModule(
        obs_dim=3,
        act_dim=1,
        action_low=[-2.0],
        action_high=[2.0],
        student=StudentConfig(hidden=(16, 16)),
        teacher=TeacherConfig(kind=kind, hidden=(16,)),  # type: ignore[arg-type]
    )


# ----------------------------------------------------------------------------- one meta-arm fit, shared
@pytest.fixture(scope="module")
def meta_run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Smoke config with all its callbacks, 4000 env steps; records every iteration's meta/reward."""
    base = tmp_path_factory.mktemp("meta_run")
    rewards: list[float] = []
    original = MetaRLModule.meta_iteration

    def spy(self: MetaRLModule, data):
        metrics = original(self, data)
        rewards.append(metrics["meta/reward"])
        return metrics

    with isolated_env(base) as mp, torch_threads(1):
        mp.setattr(MetaRLModule, "meta_iteration", spy)
        c = fit(base / "run", f"--data.total_env_steps={BUDGET}", "--trainer.enable_progress_bar=false")
    return SimpleNamespace(cli=c, run_dir=base / "run", rewards=rewards)


def test_visitation_and_learning_curve_are_written(meta_run: SimpleNamespace) -> None:
    run_dir = meta_run.run_dir
    assert_png(run_dir / "visitation.png", (700, 800))  # figsize (8, 7) at 100 dpi
    assert_png(run_dir / "learning_curve.png", (400, 600))  # figsize (6, 4) at 100 dpi

    with np.load(run_dir / "visitation.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert set(arrays) == WINDOW_KEYS
    for key, points in arrays.items():
        assert points.ndim == 2 and points.shape[1] == 2 and len(points) > 0, (key, points.shape)
        assert np.isfinite(points).all(), key
        # Pendulum's projection is (angle, angular velocity): angle in [-pi, pi], |velocity| <= 8
        assert np.all(np.abs(points[:, 0]) <= math.pi + 1e-5), key
        assert np.all(np.abs(points[:, 1]) <= 8 + 1e-4), key
    # the teacher's exploration data and the student's deterministic trajectories visit different states
    for window in ("early", "late"):
        teacher, student = arrays[f"{window}_teacher"], arrays[f"{window}_student"]
        distance = max(ks_statistic(teacher[:, d], student[:, d]) for d in range(2))
        assert distance > 0.1, (window, distance)
        assert not np.allclose(teacher.mean(0), student.mean(0), atol=1e-3)
    # the late window holds D0 of whole iterations (d0_steps each)
    assert len(arrays["late_teacher"]) % D0_STEPS == 0


def test_visitation_early_window_holds_every_iteration_that_started_in_it(meta_run: SimpleNamespace) -> None:
    # warm-up ends at 200 env steps, the first R(pi) episode at 400; iterations are 100 D0 + 200 D1 + 200 R(pi)
    # steps, so they start at 400, 900, 1400, ...; the early window is the first 20% of the 3800 steps after
    # warm-up (env steps < 960): the iterations starting at 400 and 900.
    with np.load(meta_run.run_dir / "visitation.npz") as npz:
        early_teacher = npz["early_teacher"]
    assert len(early_teacher) == 2 * D0_STEPS
    cb = next(cb for cb in meta_run.cli.trainer.callbacks if isinstance(cb, StateVisitation))
    end = meta_run.cli.datamodule.env_steps
    # what the figure's titles say; the late window (from env step 3240) holds the iterations from 3400
    assert cb.ranges == {"early": [400, 1400], "late": [3400, end]}


def test_visitation_window_uses_where_the_iteration_started() -> None:
    cb = StateVisitation()
    module = tiny_module("meta")
    trainer = SimpleNamespace(is_global_zero=True, datamodule=SimpleNamespace(warmup_steps=200, total_env_steps=3000))
    # the first iteration: started at env step 400 (7% of the 2800 steps after warm-up), ended at 900
    d0, d1, student = make_rollout(100, obs_dim=3), make_rollout(200, obs_dim=3), make_rollout(200, obs_dim=3)
    module.last_iteration = IterationRecord(400, 900, d0, d1, student, meta_reward=1.0)
    cb.on_train_batch_end(trainer, module, None, None, 0)  # type: ignore[arg-type]
    assert sum(len(c) for c in cb.states[("early", "teacher")]) == 100


def test_meta_reward_stats_after_a_fit(meta_run: SimpleNamespace) -> None:
    metrics = meta_run.cli.trainer.callback_metrics
    rewards = meta_run.rewards
    assert len(rewards) >= 5
    assert float(metrics["meta/reward"]) == pytest.approx(rewards[-1], rel=1e-5, abs=1e-4)
    window = next(cb.window for cb in meta_run.cli.trainer.callbacks if isinstance(cb, MetaRewardStats))
    expected = sum(rewards[-window:]) / len(rewards[-window:])
    assert float(metrics["meta/reward_mean"]) == pytest.approx(expected, rel=1e-5, abs=1e-4)
    std = meta_run.cli.model.exploration.head.std().detach()  # in action units: exp(log_std) * half range
    entropy = torch.distributions.Normal(torch.zeros_like(std), std).entropy().sum()
    assert float(metrics["teacher/entropy"]) == pytest.approx(float(entropy), rel=1e-5)
    assert "teacher/std" not in metrics  # the teacher's std is logged once, as teacher/sigma


# ----------------------------------------------------------------------------- MetaRewardStats, driven directly
def drive(cb: MetaRewardStats, module: MetaRLModule, rewards: list[float | None]) -> list[dict[str, float]]:
    logged: list[dict[str, float]] = []
    module.log_dict = lambda metrics, **kwargs: logged.append(dict(metrics))  # type: ignore[method-assign]
    for i, m in enumerate(rewards):
        module.last_iteration = IterationRecord(100 * i, 100 * (i + 1), make_rollout(4, obs_dim=3), meta_reward=m)
        cb.on_train_batch_end(None, module, None, None, i)  # type: ignore[arg-type]
    return logged


def test_meta_reward_mean_is_over_the_last_window_finite_values() -> None:
    module = tiny_module("meta")
    with torch.no_grad():
        module.exploration.head.log_std.copy_(torch.tensor([-0.7]))
    values = [1.0, 2.0, math.nan, 3.0, 10.0, -4.0]
    logged = drive(MetaRewardStats(window=3), module, values)
    assert len(logged) == len(values)
    means = [d.get("meta/reward_mean") for d in logged]
    assert means[0] == pytest.approx(1.0)
    assert means[1] == pytest.approx(1.5)
    assert means[2] is None  # a NaN meta-reward is skipped, not averaged in
    assert means[3] == pytest.approx(2.0)
    assert means[4] == pytest.approx(5.0)
    assert means[5] == pytest.approx(3.0)  # (3 + 10 - 4) / 3: the oldest values left the window
    half_range = float(module.exploration.scale.half_range)  # the entropy of N(mean, std) in action units
    entropy = 0.5 * (1 + math.log(2 * math.pi)) - 0.7 + math.log(half_range)
    for d in logged:
        assert d["teacher/entropy"] == pytest.approx(entropy, rel=1e-6)


def test_meta_reward_window_survives_a_checkpoint() -> None:
    module = tiny_module("meta")
    before = MetaRewardStats(window=3)
    drive(before, module, [1.0, 2.0, 3.0])
    buf = io.BytesIO()
    torch.save(before.state_dict(), buf)  # what Lightning stores under the callback's state_key
    buf.seek(0)
    after = MetaRewardStats(window=3)
    after.load_state_dict(torch.load(buf))
    logged = drive(after, module, [4.0])
    assert logged[-1]["meta/reward_mean"] == pytest.approx(3.0)  # (2 + 3 + 4) / 3, as without the restart


@pytest.mark.parametrize("kind", ["gaussian", "ou"])
def test_meta_reward_stats_logs_nothing_for_the_ddpg_arm(kind: str) -> None:
    module = tiny_module(kind)
    assert drive(MetaRewardStats(), module, [None, None, None]) == []


def test_meta_reward_stats_rejects_a_non_positive_window() -> None:
    with pytest.raises(ValueError, match="window"):
        MetaRewardStats(window=0)


def test_ddpg_arm_fit_with_all_callbacks(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    c = fit(run_dir, "--model.teacher.kind=gaussian", "--trainer.enable_progress_bar=false")
    metrics = c.trainer.callback_metrics
    assert "eval/return" in metrics
    assert "meta/reward_mean" not in metrics and "meta/reward" not in metrics
    assert "teacher/entropy" not in metrics
    _, rows = read_metrics(run_dir)
    assert len(rows) >= 1
    with np.load(run_dir / "visitation.npz") as npz:
        assert {"late_teacher", "late_student"} <= set(npz.files)
    assert (run_dir / "learning_curve.png").read_bytes()[:8] == PNG_MAGIC


# ----------------------------------------------------------------------------- StateVisitation's pieces
def test_fit_pca_and_project_recover_a_plane() -> None:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(5, 2)))
    u1, u2 = q.T
    mean = np.array([1.0, -2.0, 0.5, 3.0, 0.0])
    a, b = rng.normal(0, 3.0, 2000), rng.normal(0, 1.0, 2000)
    states = mean + a[:, None] * u1 + b[:, None] * u2 + rng.normal(0, 1e-3, (2000, 5))
    basis = fit_pca(states)
    assert basis.shape == (3, 5)
    np.testing.assert_allclose(basis[0], states.mean(0))
    points = project(states, "pca", (0, 1), basis)
    assert points.shape == (2000, 2)
    np.testing.assert_allclose(points.mean(0), 0.0, atol=1e-9)
    var = points.var(0)
    assert var[0] == pytest.approx(9.0, rel=0.1) and var[1] == pytest.approx(1.0, rel=0.1)
    np.testing.assert_allclose(basis[0] + points @ basis[1:], states, atol=1e-2)  # nothing lost off the plane


def test_project_pendulum_and_dims() -> None:
    theta = np.linspace(-3.0, 3.0, 50)
    omega = np.linspace(-8.0, 8.0, 50)
    states = np.stack([np.cos(theta), np.sin(theta), omega], axis=1)
    np.testing.assert_allclose(project(states, "pendulum", (0, 1), None), np.stack([theta, omega], 1), atol=1e-6)
    np.testing.assert_array_equal(project(states, "dims", (2, 0), None), states[:, [2, 0]])


def test_density_integrates_to_one_and_puts_y_on_rows() -> None:
    rng = np.random.default_rng(1)
    points = rng.normal([1.0, -1.5], 0.5, (5000, 2))
    extent, bins = (-4.0, 4.0, -5.0, 3.0), 60
    grid = density(points, extent, bins)
    assert grid.shape == (bins, bins)
    assert (grid >= 0).all()
    cell = (extent[1] - extent[0]) / bins * (extent[3] - extent[2]) / bins
    assert float(grid.sum() * cell) == pytest.approx(1.0, abs=0.01)
    row, col = np.unravel_index(np.argmax(grid), grid.shape)  # contourf(x, y, Z) reads Z[y, x]
    xs = np.linspace(extent[0], extent[1], bins)
    ys = np.linspace(extent[2], extent[3], bins)
    assert xs[col] == pytest.approx(1.0, abs=0.4)
    assert ys[row] == pytest.approx(-1.5, abs=0.4)


def test_state_visitation_uses_pca_for_other_environments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "run"
    figures = []

    def spy(*args, **kwargs):
        figures.append(draw_visitation(*args, **kwargs))
        return figures[-1]

    monkeypatch.setattr("callbacks.visitation.draw_visitation", spy)
    fit(run_dir, "--data.env_id=InvertedPendulum-v5", "--trainer.enable_progress_bar=false")
    (fig,) = figures  # the axes say how much of the early states' variance each principal direction holds
    pc1, pc2 = fig.axes[2].get_xlabel(), fig.axes[0].get_ylabel()
    share = [
        float(re.fullmatch(rf"PC{k} \(([0-9.e+-]+)% of variance\)", label)[1]) for k, label in ((1, pc1), (2, pc2))
    ]
    assert 100 >= share[0] >= share[1] > 0 and share[0] + share[1] <= 100.1, (pc1, pc2)
    with np.load(run_dir / "visitation.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert {"early_teacher", "late_teacher"} <= set(arrays)
    for key, points in arrays.items():
        assert points.ndim == 2 and points.shape[1] == 2 and len(points) > 0, key
        assert np.isfinite(points).all()
    # the plane is fitted on the early window's states: they are centred on it, widest along PC 1
    early = np.concatenate([v for k, v in arrays.items() if k.startswith("early")])
    np.testing.assert_allclose(early.mean(0), 0.0, atol=1e-4)
    var = early.var(0)
    assert var[0] >= var[1] > 0
    assert (run_dir / "visitation.png").read_bytes()[:8] == PNG_MAGIC


def test_state_visitation_rejects_a_bad_window() -> None:
    for window in (0.0, 0.6):
        with pytest.raises(ValueError, match="window"):
            StateVisitation(window=window)


# ----------------------------------------------------------------------------- no callbacks, progress bar
def test_training_runs_without_any_callbacks(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    c = fit(
        run_dir,
        "--trainer.callbacks=[]",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    )
    assert not [cb for cb in c.trainer.callbacks if type(cb).__module__.startswith("callbacks.")]
    assert c.trainer.progress_bar_callback is None
    _, rows = read_metrics(run_dir)
    assert len(rows) >= 1 and all(r["eval/return"] not in ("", "nan") for r in rows)
    assert not (run_dir / "visitation.png").exists()
    assert not (run_dir / "learning_curve.png").exists()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()  # checkpointing is the package's own default


def test_training_runs_with_checkpointing_disabled(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    fit(
        run_dir, "--trainer.callbacks=[]", "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false"
    )
    _, rows = read_metrics(run_dir)
    assert len(rows) >= 1
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()


def test_env_step_progress_bar_counts_env_steps_against_the_budget(tmp_path: Path, capfd) -> None:
    c = fit(tmp_path / "run")  # conftest.TINY: a budget of 800 env steps; the smoke config lists the bar
    out, err = capfd.readouterr()
    bar = type(c.trainer.progress_bar_callback)
    assert bar.__module__ == "callbacks.progress" and bar.__name__ == "EnvStepProgressBar"
    text = out + err  # Lightning's tqdm bars write to stdout
    assert "env steps" in text
    assert "/800" in text
    assert "steps/s" in text  # tqdm's rate, in env steps
    counts = [int(n) for n in re.findall(r"env steps: *\d+%\|[^|]*\| *(\d+)/800", text)]
    assert counts and max(counts) == 800  # clamped to the budget at the end
    assert counts == sorted(counts)
    assert "Epoch 0" not in text  # epochs mean nothing here


def test_disabled_progress_bar_drops_the_configured_one(tmp_path: Path, capfd) -> None:
    run_dir = tmp_path / "run"
    c = fit(run_dir, "--trainer.enable_progress_bar=false")
    out, err = capfd.readouterr()
    assert c.trainer.progress_bar_callback is None
    assert not [cb for cb in c.trainer.callbacks if "ProgressBar" in type(cb).__name__]
    assert [type(cb).__name__ for cb in c.trainer.callbacks if type(cb).__module__.startswith("callbacks.")] == [
        "MetaRewardStats",
        "StateVisitation",
        "LearningCurve",
        "EvaluationVideo",
    ]
    assert "env steps:" not in out + err
    _, rows = read_metrics(run_dir)
    assert len(rows) >= 1


# ----------------------------------------------------------------------------- what the figures show
def curve_rows(r_pi: float) -> list[dict[str, float]]:
    return [{"env_steps": 400.0 * k, "iteration": float(k), "eval/return": -100.0 * k, "r_pi": r_pi} for k in (1, 2, 3)]


def test_learning_curve_draws_the_episode_spread_and_r_pi() -> None:
    episodes = {400.0: [-120.0, -80.0], 800.0: [-250.0, -150.0], 1200.0: [-300.0]}
    fig = draw_curve({"meta": curve_rows(-90.0)}, episodes, "env: meta")
    ax = fig.axes[0]
    (band,) = ax.collections  # fill_between: a band from each evaluation's lowest to highest episode
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(-250.0) and ys.max() == pytest.approx(-80.0)  # 1200 (one episode) left out
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["meta", "R(pi), measured by the algorithm (dashed)"]
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [-90.0] * 3)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "min-max over 2 episodes" in legend
    plt.close(fig)


def test_learning_curve_leaves_out_what_a_run_does_not_have() -> None:
    fig = draw_curve({"gaussian": curve_rows(math.nan)}, {}, "env: gaussian")  # DDPG arm: R(pi) is NaN
    assert not fig.axes[0].collections and [line.get_label() for line in fig.axes[0].get_lines()] == ["gaussian"]
    plt.close(fig)


def test_learning_curve_collects_each_evaluations_episodes_and_keeps_them_across_a_resume() -> None:
    module, cb = tiny_module("meta"), LearningCurve()
    trainer = SimpleNamespace(is_global_zero=True)
    for k, returns in ((1, [-3.0, -1.0]), (2, None), (3, [-2.0, 0.0])):  # iteration 2 did not evaluate
        module.iteration = k
        record = IterationRecord(100 * k, 100 * (k + 1), make_rollout(4, obs_dim=3))
        if returns is not None:
            module.history.record({"env_steps": 100.0 * (k + 1), "iteration": float(k), "eval/return": -1.0})
            record.evaluation = make_rollout(4, obs_dim=3)
            record.evaluation.episode_returns = returns
        module.last_iteration = record
        cb.on_train_batch_end(trainer, module, None, None, k)  # type: ignore[arg-type]
    assert cb.episodes == {200.0: [-3.0, -1.0], 400.0: [-2.0, 0.0]}
    buf = io.BytesIO()
    torch.save(cb.state_dict(), buf)
    buf.seek(0)
    resumed = LearningCurve()
    resumed.load_state_dict(torch.load(buf, weights_only=True))  # as a checkpoint holds it
    assert resumed.episodes == cb.episodes


def test_a_fit_collects_every_evaluations_episodes_and_a_resumed_fit_keeps_them(tmp_path: Path) -> None:
    run_dir, args = tmp_path / "run", ("--data.eval_episodes=2", "--trainer.enable_progress_bar=false")
    first = fit(run_dir, *args)
    before = next(cb for cb in first.trainer.callbacks if isinstance(cb, LearningCurve)).episodes
    rows = first.model.history.rows
    assert sorted(before) == [r["env_steps"] for r in rows]
    for row in rows:  # eval/return is the mean of the episodes collected for it
        assert len(before[row["env_steps"]]) == 2
        assert sum(before[row["env_steps"]]) / 2 == pytest.approx(row["eval/return"], rel=1e-5)
    again = fit(run_dir, *args, "--data.total_env_steps=1300", "--ckpt_path", "last")
    after = next(cb for cb in again.trainer.callbacks if isinstance(cb, LearningCurve)).episodes
    assert len(after) > len(before) and {k: after[k] for k in before} == before
    assert sorted(after) == [r["env_steps"] for r in again.model.history.rows]


def test_a_populations_learning_curve_has_a_line_per_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = []

    def spy(runs, episodes, title):
        drawn.append((runs, title))
        return draw_curve(runs, episodes, title)

    monkeypatch.setattr("callbacks.curves.draw_curve", spy)
    c = fit(tmp_path / "pop", "--model.teacher.kind=gaussian", "--population=2", "--trainer.enable_progress_bar=false")
    ((runs, title),) = drawn
    assert list(runs) == ["seed 0", "seed 1"] and title.endswith("2 seeds")
    assert runs["seed 1"] == c.model.evaluations[1].history.rows and runs["seed 1"] != runs["seed 0"]
    assert (tmp_path / "pop" / "learning_curve.png").read_bytes()[:8] == PNG_MAGIC


def visitation_points() -> dict[tuple[str, str], np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        ("early", "teacher"): rng.normal(0.0, 2.0, (2000, 2)),  # wide: a low peak density
        ("early", "student"): rng.normal(1.0, 0.2, (2000, 2)),  # narrow: a high peak density
        ("late", "teacher"): rng.normal(-1.0, 1.0, (2000, 2)),
        ("late", "student"): rng.normal(0.5, 0.5, (2000, 2)),
    }


def test_visitation_panels_share_one_color_scale_with_a_colorbar() -> None:
    ranges = {"early": [400, 1400], "late": [3400, 4400]}
    fig = draw_visitation(visitation_points(), ranges, ("PC1 (70% of variance)", "PC2 (20% of variance)"), "t", 40)
    panels, bars = fig.axes[:4], fig.axes[4:]
    assert len(bars) == 1  # one colorbar for the four panels
    limits = [ax.collections[0].get_clim() for ax in panels]
    assert len(set(limits)) == 1 and limits[0][0] == 0.0
    for ax in panels[1:]:
        np.testing.assert_array_equal(ax.collections[0].levels, panels[0].collections[0].levels)
    # the scale is the densest panel's (the narrow student's, a peak of about 1 / (2 pi 0.2^2) = 4), far above
    # the wide teacher's own peak (1 / (2 pi 2^2) = 0.04), which a per-panel scale would have used
    assert 1.0 < limits[0][1] < 5.0
    titles = [ax.get_title() for ax in panels]
    assert all("env steps 400-1,400" in t for t in titles[:2]) and all("env steps 3,400-4,400" in t for t in titles[2:])
    assert panels[2].get_xlabel() == "PC1 (70% of variance)" and panels[0].get_ylabel() == "PC2 (20% of variance)"
    plt.close(fig)


def test_explained_variance_of_a_plane() -> None:
    rng = np.random.default_rng(0)
    states = np.stack([rng.normal(0, 3.0, 5000), rng.normal(0, 1.0, 5000), rng.normal(0, 0.1, 5000)], 1)
    share = explained_variance(states, fit_pca(states))
    np.testing.assert_allclose(share, [9 / 10.01, 1 / 10.01], rtol=0.05)


def test_visitation_step_ranges_follow_the_iterations_and_survive_a_checkpoint() -> None:
    cb, module = StateVisitation(), tiny_module("meta")
    trainer = SimpleNamespace(is_global_zero=True, datamodule=SimpleNamespace(warmup_steps=200, total_env_steps=3000))
    for start, end in ((400, 700), (700, 1000), (1400, 1900), (2500, 3000)):  # early, early, neither, late
        module.last_iteration = IterationRecord(start, end, make_rollout(100, obs_dim=3))
        cb.on_train_batch_end(trainer, module, None, None, 0)  # type: ignore[arg-type]
    assert cb.ranges == {"early": [400, 1000], "late": [2500, 3000]}
    buf = io.BytesIO()
    torch.save(cb.state_dict(), buf)
    buf.seek(0)
    resumed = StateVisitation()
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert resumed.ranges == cb.ranges
    assert sum(len(c) for c in resumed.states[("early", "teacher")]) == 200
