"""W&B sweep files (conf/sweeps/*.yaml): well formed, their metric is one a run logs, and one sampled
argument set runs through the real command line exactly as ``wandb agent`` would start it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CONF, ROOT, fit, read_metrics, run_module

pytestmark = pytest.mark.usefixtures("one_thread")

SWEEPS = sorted(p.name for p in (CONF / "sweeps").glob("*.yaml"))
DISTRIBUTIONS = {"uniform", "log_uniform_values", "q_uniform", "q_log_uniform_values", "int_uniform", "normal"}
# settle-fast budget for the real run; the sampled arguments come after it, so a sweep parameter wins
BUDGET = [
    "--data.total_env_steps=1500",
    "--data.warmup_steps=200",
    "--data.eval_every=500",
    "--data.eval_episodes=1",
    "--model.meta.d0_steps=100",
    "--model.meta.lookahead_updates=5",
    "--trainer.enable_progress_bar=false",
]


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((CONF / "sweeps" / name).read_text())


def config_file(sweep: dict[str, Any]) -> str:
    command = sweep["command"]
    return command[command.index("--config") + 1]


def first_sample(sweep: dict[str, Any]) -> dict[str, Any]:
    """One point of the search space: the first of ``values``, ``value``, or a distribution's ``min``."""
    sample = {}
    for name, spec in sweep["parameters"].items():
        if "values" in spec:
            sample[name] = spec["values"][0]
        elif "value" in spec:
            sample[name] = spec["value"]
        else:
            sample[name] = spec["min"]
    return sample


def render_args(sample: dict[str, Any]) -> list[str]:
    """What W&B's ``${args}`` macro expands to: ``--name=value`` per parameter."""
    return [f"--{name}={value}" for name, value in sample.items()]


def lookup(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node[part]
    return node


def test_there_are_sweeps() -> None:
    assert "hopper_meta.yaml" in SWEEPS and "hopper_ddpg_noise.yaml" in SWEEPS


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_file_is_well_formed(name: str) -> None:
    sweep = load(name)
    for key in ("program", "method", "metric", "parameters", "command"):
        assert key in sweep, key
    assert sweep["method"] in {"grid", "random", "bayes"}
    assert (ROOT / sweep["program"]).is_file()
    assert sweep["metric"]["name"] and sweep["metric"]["goal"] in {"maximize", "minimize"}
    assert sweep["parameters"]
    for param, spec in sweep["parameters"].items():
        if "values" in spec:
            assert isinstance(spec["values"], list) and spec["values"], param
        elif "distribution" in spec:
            assert spec["distribution"] in DISTRIBUTIONS, param
            assert spec["min"] < spec["max"], param
            if sweep["method"] == "grid":
                pytest.fail(f"grid search cannot enumerate the distribution of {param}")
        else:
            assert "value" in spec, param
    command = sweep["command"]
    assert command[:2] == ["${env}", "${interpreter}"]
    i = command.index("-m")
    assert command[i : i + 4] == ["-m", "lightning_meta_rl", "fit", "--config"]
    assert (ROOT / config_file(sweep)).is_file()
    assert command[-1] == "${args}"


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_parameters_are_real_options_of_the_config(name: str) -> None:
    sweep = load(name)
    config = yaml.safe_load((ROOT / config_file(sweep)).read_text())
    for param in sweep["parameters"]:
        head = param.split(".")[0]
        assert head in {"model", "data", "trainer", "seed_everything"}, param
    assert "seed_everything" in sweep["parameters"]
    assert config["data"]["env_id"] == "Hopper-v5"


def test_sweep_metric_is_logged_by_a_run(tmp_path: Path) -> None:
    names = {load(name)["metric"]["name"] for name in SWEEPS}
    run_dir = tmp_path / "run"
    c = fit(run_dir, "--trainer.enable_progress_bar=false", "--trainer.callbacks=[]")
    header, _ = read_metrics(run_dir)
    for metric in names:
        assert metric in c.trainer.callback_metrics, (metric, sorted(c.trainer.callback_metrics))
        assert metric in header


@pytest.mark.parametrize("name", SWEEPS)
def test_sampled_arguments_run_through_the_cli(tmp_path: Path, name: str) -> None:
    sweep = load(name)
    sample = first_sample(sweep)
    run_dir = tmp_path / "run"
    args = ["fit", "--config", config_file(sweep), *BUDGET, *render_args(sample), f"--run_dir={run_dir}"]
    result = run_module(*args, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("lightning-meta-rl: final eval/return") == 1
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    for param, value in sample.items():
        assert lookup(saved, param) == value, (param, lookup(saved, param), value)
    assert saved["data"]["env_id"] == "Hopper-v5"
    assert saved["data"]["total_env_steps"] == 1500
    _, rows = read_metrics(run_dir)
    assert rows and all(r["eval/return"] not in ("", "nan") for r in rows)
