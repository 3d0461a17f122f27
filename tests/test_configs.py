"""Every shipped config parses and instantiates; linked environment facts; the two arms differ only in
the teacher; the defaults are the SPEC's."""

from __future__ import annotations

import copy
from pathlib import Path

import gymnasium as gym
import pytest
import yaml
from conftest import CONF, clear_run_dir_env, finish_wandb

from lightning_meta_rl.cli import cli

CONFIGS = sorted(p.name for p in CONF.glob("*.yaml"))
META_ARMS = sorted(p.name for p in CONF.glob("*.yaml") if not p.stem.endswith("_ddpg") and p.stem != "smoke")


def instantiate(tmp_path: Path, *configs: Path):
    args = [a for c in configs for a in ("--config", str(c))]
    try:
        return cli([*args, "--run_dir", str(tmp_path / "run")], run=False)
    finally:
        finish_wandb()
        clear_run_dir_env()


def load(name: str) -> dict:
    return yaml.safe_load((CONF / name).read_text())


def test_there_are_seven_environment_pairs_and_a_smoke_config() -> None:
    assert len(META_ARMS) == 7
    assert "smoke.yaml" in CONFIGS
    envs = {load(name)["data"]["env_id"] for name in META_ARMS}
    assert envs == {
        "Pendulum-v1",
        "InvertedPendulum-v5",
        "InvertedDoublePendulum-v5",
        "Hopper-v5",
        "HalfCheetah-v5",
        "Reacher-v5",
        "lightning_meta_rl/SparseMountainCar-v0",
    }


@pytest.mark.parametrize("name", CONFIGS)
def test_config_instantiates_with_linked_env_facts(tmp_path: Path, name: str) -> None:
    raw = load(name)
    c = instantiate(tmp_path, CONF / name)
    env = gym.make(raw["data"]["env_id"])
    try:
        assert c.datamodule.env_id == raw["data"]["env_id"]
        assert c.model.hparams.obs_dim == env.observation_space.shape[0]
        assert c.model.hparams.act_dim == env.action_space.shape[0]
        assert list(c.model.hparams.action_low) == env.action_space.low.tolist()
        assert list(c.model.hparams.action_high) == env.action_space.high.tolist()
    finally:
        env.close()
    assert c.model.teacher_cfg.kind == raw["model"]["teacher"]["kind"]
    assert c.datamodule.total_env_steps == raw["data"]["total_env_steps"]
    assert c.datamodule.seed == raw["seed_everything"]  # seed_everything is linked into the environments
    assert c.trainer.default_root_dir == str(tmp_path / "run")


def test_modern_profile_stacks_on_an_environment_config(tmp_path: Path) -> None:
    c = instantiate(tmp_path, CONF / "hopper.yaml", CONF / "profiles" / "modern.yaml")
    s = c.model.student_cfg
    assert c.datamodule.env_id == "Hopper-v5"
    assert c.model.teacher_cfg.kind == "meta"
    assert (tuple(s.hidden), s.batch_size, s.actor_lr, s.critic_lr, s.tau) == ((256, 256), 256, 3e-4, 3e-4, 0.005)
    assert c.model.utd_ratio == 1.0
    assert c.model.student.actor.net[0].out_features == 256  # the networks really are 256 wide


@pytest.mark.parametrize("meta", META_ARMS)
def test_arms_differ_only_in_teacher_kind(meta: str) -> None:
    ddpg = meta.replace(".yaml", "_ddpg.yaml")
    a, b = load(meta), load(ddpg)
    assert a["model"]["teacher"]["kind"] in ("meta", "meta_state", "meta_variance")
    assert b["model"]["teacher"]["kind"] in ("gaussian", "ou")
    a2, b2 = copy.deepcopy(a), copy.deepcopy(b)
    del a2["model"]["teacher"]["kind"], b2["model"]["teacher"]["kind"]
    assert a2 == b2


def test_defaults_are_the_spec_defaults(tmp_path: Path) -> None:
    c = instantiate(tmp_path, CONF / "pendulum.yaml")
    s, m, d = c.model.student_cfg, c.model.meta_cfg, c.datamodule
    assert tuple(s.hidden) == (64, 64) and s.layer_norm
    assert (s.actor_lr, s.critic_lr, s.critic_l2, s.gamma, s.tau, s.batch_size) == (1e-4, 1e-3, 1e-2, 0.99, 0.01, 64)
    assert (m.d0_steps, m.lookahead_updates, m.lookahead, m.eval_episodes) == (200, 50, "copy", 1)
    assert not (m.baseline or m.normalize or m.paired_evaluation)  # deviations are off by default
    assert c.model.utd_ratio == 0.25
    assert (d.buffer_size, d.normalize_obs, d.obs_clip) == (1_000_000, True, 5.0)
