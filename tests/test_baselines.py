"""The DDPG arm's exploration baselines of issue 25: pink (1/f) action noise (Eberhard et al. 2023) and
adaptive parameter-space noise (Plappert et al. 2018). Their spectrum and adaptation, per-environment noise
drawn from the run's generator, and exact resume."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMOKE, TINY, clear_run_dir_env, finish_wandb, fit, read_metrics

from lightning_meta_rl.cli import cli
from lightning_meta_rl.config import TeacherConfig
from lightning_meta_rl.errors import ConfigError
from lightning_meta_rl.exploration import Exploration, build_exploration
from lightning_meta_rl.networks import ActionScale, Student
from lightning_meta_rl.noise import ParamNoise, PinkNoise

pytestmark = pytest.mark.usefixtures("one_thread")

SCALE = ([-1.0, 0.0], [3.0, 0.5])  # asymmetric bounds: half ranges 2 and 0.25


def make_student(layer_norm: bool = True) -> Student:
    torch.manual_seed(0)
    return Student(3, ActionScale(*SCALE), [16, 16], layer_norm)


def spectrum_slope(x: np.ndarray) -> float:
    """Least-squares slope of log power against log frequency of the periodogram of x [T] (zero frequency
    left out)."""
    power = np.abs(np.fft.rfft(x - x.mean())) ** 2
    freq = np.fft.rfftfreq(len(x))
    return float(np.polyfit(np.log(freq[1:]), np.log(power[1:]), 1)[0])


def round_trip(state: object) -> object:
    """Through torch.save / torch.load(weights_only=True), as a checkpoint travels."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# ----------------------------------------------------------------------------- pink noise
def test_pink_noise_has_a_one_over_f_spectrum() -> None:
    n = 8192
    pink = PinkNoise(ActionScale(*SCALE), sigma=0.2, horizon=n)
    g = torch.Generator().manual_seed(0)
    x = torch.cat([pink.sample(1, g) for _ in range(n)]).numpy()  # one sequence, [n, act_dim]
    slopes = [spectrum_slope(x[:, d]) for d in range(x.shape[1])]
    assert all(-1.15 < s < -0.85 for s in slopes), slopes
    assert 0.5 < x.std() < 1.5  # unit variance, as sigma expects
    # the estimate separates white from pink noise (the test could fail)
    white = torch.randn(n, generator=torch.Generator().manual_seed(0)).numpy()
    assert abs(spectrum_slope(white)) < 0.15


def test_pink_actions_are_the_student_plus_scaled_noise_per_environment() -> None:
    student, scale = make_student(), ActionScale(*SCALE)
    obs = torch.randn(3, 3)
    a = PinkNoise(scale, 0.3, 64).act(obs, student, torch.Generator().manual_seed(4))
    ref = PinkNoise(scale, 0.3, 64)
    noise = ref.sample(3, torch.Generator().manual_seed(4))
    with torch.no_grad():
        mu = student.actor(obs)
    torch.testing.assert_close(a.raw, mu + 0.3 * noise.to(mu) * scale.half_range)
    torch.testing.assert_close(a.executed, scale.clip(a.raw))
    assert not torch.equal(noise[0], noise[1]) and not torch.equal(noise[1], noise[2])  # own sequence each


def test_pink_reset_starts_a_new_sequence_for_that_environment_only() -> None:
    scale = ActionScale(*SCALE)
    a, b = PinkNoise(scale, 0.2, 100), PinkNoise(scale, 0.2, 100)
    ga, gb = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for _ in range(10):
        torch.testing.assert_close(a.sample(2, ga), b.sample(2, gb))
    b.reset(1)  # environment 1 of b starts an episode
    na, nb = torch.stack([a.sample(2, ga) for _ in range(20)]), torch.stack([b.sample(2, gb) for _ in range(20)])
    torch.testing.assert_close(na[:, 0], nb[:, 0])  # environment 0 continues its sequence
    assert not torch.allclose(na[:, 1], nb[:, 1])  # environment 1 has a new one


def test_pink_noise_continues_exactly_after_a_checkpoint_mid_sequence() -> None:
    scale = ActionScale(*SCALE)
    first, fresh = PinkNoise(scale, 0.2, 50), PinkNoise(scale, 0.2, 50)
    g = torch.Generator().manual_seed(2)
    for _ in range(37):
        first.sample(2, g)
    first.reset(0)
    for _ in range(5):
        first.sample(2, g)
    fresh.load_extra_state(round_trip(first.extra_state()))
    # past the end of the sequence (50 steps), where the process draws a new one from its own generator
    runs = []
    for noise in (first, fresh):
        steps = [noise.sample(2, g) for _ in range(60)]
        noise.reset(1)
        runs.append(torch.stack(steps + [noise.sample(2, g) for _ in range(5)]))
    assert torch.equal(runs[1], runs[0])


# ----------------------------------------------------------------------------- parameter noise
@pytest.mark.parametrize("target", [0.05, 0.3])
def test_param_noise_action_distance_tracks_its_target(target: float) -> None:
    student = make_student()
    noise = ParamNoise(ActionScale(*SCALE), target=target, adapt=1.05, interval=10)
    noise.std = 0.1  # start off target: the adaptation must bring the distance there
    g, obs_g = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    distances = []
    with torch.inference_mode():  # as in the collector
        for t in range(3000):
            if t % 100 == 0:
                noise.reset(0)
            noise.act(torch.randn(1, 3, generator=obs_g), student, g)
            if t >= 1500 and noise.steps % noise.interval == 0:
                distances.append(noise.last_distance)
    assert 0.75 * target < float(np.mean(distances)) < 1.33 * target, (np.mean(distances), noise.std)


def test_param_noise_std_follows_the_target() -> None:
    """A larger target distance ends with a larger parameter std (adaptation in the right direction)."""
    stds = []
    for target in (0.05, 0.3):
        student, noise = make_student(), ParamNoise(ActionScale(*SCALE), target, adapt=1.05, interval=10)
        noise.std = 0.1  # the same start for both
        g = torch.Generator().manual_seed(0)
        for _ in range(1000):
            noise.act(torch.randn(1, 3, generator=g), student, g)
        stds.append(noise.std)
    assert 3 * stds[0] < stds[1]


def test_param_noise_is_a_perturbed_actor_per_environment() -> None:
    student, scale = make_student(), ActionScale(*SCALE)
    noise = ParamNoise(scale, target=0.2, adapt=1.01, interval=50)
    obs = torch.randn(2, 3)
    act = noise.act(obs, student, torch.Generator().manual_seed(3))
    names = noise.perturbed_names(student.actor)
    assert names and all("net." in n for n in names)
    assert not any(isinstance(student.actor.get_submodule(n.rsplit(".", 1)[0]), torch.nn.LayerNorm) for n in names)
    # by hand: environment i's action is the actor with theta + std * z_i, z drawn in order from the generator
    g = torch.Generator().manual_seed(3)
    params = dict(student.actor.named_parameters())
    for i in range(2):
        perturbed = make_student()
        with torch.no_grad():
            for n in names:
                perturbed.actor.get_parameter(n).add_(0.2 * torch.randn(params[n].shape, generator=g))
            torch.testing.assert_close(act.raw[i : i + 1], perturbed.actor(obs[i : i + 1]))
    assert bool((act.raw >= scale.low).all() and (act.raw <= scale.high).all())  # tanh: inside the box
    assert not torch.allclose(act.raw[0], student.actor(obs[:1]).detach()[0])


def test_param_noise_keeps_its_perturbation_for_the_episode() -> None:
    student = make_student()
    noise = ParamNoise(ActionScale(*SCALE), target=0.2, adapt=1.01, interval=1000)
    g, obs = torch.Generator().manual_seed(0), torch.randn(2, 3)
    first = noise.act(obs, student, g).raw
    torch.testing.assert_close(noise.act(obs, student, g).raw, first)  # same perturbation, same state
    noise.reset(1)
    again = noise.act(obs, student, g).raw
    torch.testing.assert_close(again[0], first[0])
    assert not torch.allclose(again[1], first[1])  # environment 1's episode has a new perturbation


def test_param_noise_continues_exactly_after_a_checkpoint() -> None:
    student, scale = make_student(), ActionScale(*SCALE)
    first, fresh = ParamNoise(scale, 0.2, 1.05, 7), ParamNoise(scale, 0.2, 1.05, 7)
    g, obs_g = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    obs = [torch.randn(2, 3, generator=obs_g) for _ in range(60)]
    for t in range(25):
        if t == 11:
            first.reset(0)
        first.act(obs[t], student, g)
    fresh.load_extra_state(round_trip(first.extra_state()))
    for t in range(25, 60):
        if t == 40:
            first.reset(1)
            fresh.reset(1)
        g_state = g.get_state()
        expected = first.act(obs[t], student, g).raw
        g.set_state(g_state)
        assert torch.equal(fresh.act(obs[t], student, g).raw, expected), t
    assert fresh.std == first.std and fresh.steps == first.steps == 60


def test_new_kinds_are_fixed_noise_with_their_settings() -> None:
    scale = ActionScale(*SCALE)
    pink = build_exploration(TeacherConfig(kind="pink", sigma=0.3, pink_horizon=77), 3, scale, True)
    param = build_exploration(TeacherConfig(kind="param", sigma=0.1, param_adapt=1.2, param_interval=9), 3, scale, True)
    assert isinstance(pink, PinkNoise) and (pink.sigma, pink.horizon) == (0.3, 77)
    assert isinstance(param, ParamNoise) and (param.target, param.std, param.adapt, param.interval) == (
        0.1,
        0.1,
        1.2,
        9,
    )
    for e in (pink, param):
        assert isinstance(e, Exploration) and not e.learned
        assert not list(e.parameters())  # nothing for an optimizer
    with pytest.raises(ConfigError):
        TeacherConfig(kind="param", param_adapt=1.0)
    with pytest.raises(ConfigError):
        TeacherConfig(kind="pink", pink_horizon=0)


# ----------------------------------------------------------------------------- through the CLI
@pytest.mark.parametrize("kind", ["pink", "param"])
def test_new_kinds_fit_with_every_callback_of_the_smoke_config(kind: str, tmp_path: Path) -> None:
    c = fit(tmp_path / "run", f"--model.teacher.kind={kind}", "--trainer.enable_progress_bar=false")
    assert c.model.teacher_cfg.kind == kind and not c.model.is_meta
    assert len(c.trainer.optimizers) == 2  # actor and critic: nothing of the exploration is trained
    _, rows = read_metrics(tmp_path / "run")
    assert rows and all(r["eval/return"] not in ("", "nan") for r in rows)
    assert c.datamodule.env_steps >= 800


def curve(run_dir: Path) -> list[tuple[str, str]]:
    _, rows = read_metrics(run_dir)
    return [(r["env_steps"], r["eval/return"]) for r in rows if r.get("eval/return")]


@pytest.mark.parametrize("kind", ["pink", "param"])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(kind: str, tmp_path: Path) -> None:
    """B stops after 700 env steps, in the middle of a Pendulum episode (200 warm-up + 5 x 100) and at an
    evaluation point (a run evaluates when its budget ends), and resumes to 1400 from its last checkpoint; A
    runs to 1400 at once. Same seed: every evaluation and every weight
    must be the same, which needs the noise's state (pink sequences, parameter perturbations and std) in
    the checkpoint."""
    args = [f"--model.teacher.kind={kind}", "--model.teacher.param_interval=7", "--trainer.callbacks=[]"]
    args += ["--data.eval_every=350", "--trainer.enable_progress_bar=false"]
    fit(tmp_path / "a", *args, "--data.total_env_steps=1400")
    fit(tmp_path / "b", *args, "--data.total_env_steps=700")
    stopped = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert stopped["RolloutDataModule"]["collectors"]["train_collector"]["obs"][0] is not None  # mid-episode
    assert stopped["meta_rl"]["exploration"]  # the noise's state is in the checkpoint
    try:
        resume = ["--data.total_env_steps=1400", "--ckpt_path", "last"]
        cli(["fit", "--config", SMOKE, "--run_dir", str(tmp_path / "b"), *TINY, *args, *resume])
    finally:
        finish_wandb()
        clear_run_dir_env()
    assert curve(tmp_path / "b") == curve(tmp_path / "a") and len(curve(tmp_path / "a")) >= 3
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(b["state_dict"][key], value), key
    assert same_state(b["meta_rl"]["exploration"], a["meta_rl"]["exploration"])


def same_state(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(map(same_state, a, b))
    return a == b or (a != a and b != b)  # NaN equals NaN here
