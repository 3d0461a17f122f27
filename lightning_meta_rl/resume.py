"""The checks a ``--ckpt_path`` gets before anything is loaded or written: the file itself, the settings it
was written with, a run that is already complete, and the environment's spaces once it exists."""

from __future__ import annotations

from typing import Any

import yaml

from lightning_meta_rl.checkpoint import (
    data_mismatches,
    data_module_state,
    mismatches,
    read_checkpoint,
    resolve_ckpt_path,
    space_mismatches,
)
from lightning_meta_rl.envs import probe
from lightning_meta_rl.errors import UserError


def check_ckpt_path(config: Any, subcommand: str | None) -> tuple[dict[str, Any] | None, str]:
    """A --ckpt_path that is missing, unreadable or from another set-up is refused, naming what differs; a
    resumed fit of a run that is complete stops here. Returns the checkpoint (None without one) and its path."""
    ckpt_path = config.get("ckpt_path")
    path = None if ckpt_path is None else resolve_ckpt_path(str(ckpt_path), config.get("run_dir"))
    if path is None and str(ckpt_path) == "last" and config.get("run_dir") is None:
        raise UserError(
            "--ckpt_path last names the checkpoint of the run given by --run_dir, and no --run_dir was given. "
            "Add the run's --run_dir (the same one it was started with), or give the checkpoint file's path."
        )
    if path is None and str(ckpt_path) == "last" and subcommand != "fit":
        raise UserError(
            f"--ckpt_path last: there is no checkpoint at {config.get('run_dir')}/checkpoints/last.ckpt to "
            f"{subcommand}. Give the run's --run_dir, or the checkpoint file's path."
        )
    if path is None:
        if ckpt_path is not None:  # fit with 'last' before any checkpoint: a fresh start, as Lightning's, unwarned
            config.ckpt_path = None
        return None, ""
    config.ckpt_path = path  # Lightning looks for 'last' elsewhere in validate/test; the file it is
    checkpoint = read_checkpoint(path)
    diff = mismatches(checkpoint, config.data.env_id, config.model)
    saved_population = int(checkpoint["hyper_parameters"].get("population", 1))
    if saved_population != config.get("population", 1):
        diff.append(f"--population: checkpoint {saved_population}, this run {config.get('population', 1)}")
    if subcommand == "fit":  # resuming continues the same run: every difference is refused
        refuse_mismatch(path, diff)
        stop_if_complete(checkpoint, path, config.data)
    else:  # validate / test build the checkpoint's networks; only another environment cannot work
        refuse_mismatch(path, [d for d in diff if d.startswith("environment")])
        if diff:
            print(f"lightning-meta-rl: using the checkpoint's settings ({'; '.join(diff)})", flush=True)
    return checkpoint, path


def check_spaces(checkpoint: dict[str, Any], path: str, data: Any, subcommand: str | None, world_size: int) -> None:
    """The checkpoint's observation and action sizes against the environment's (known once it exists), and for
    a resumed fit the data settings its state depends on."""
    diff = space_mismatches(checkpoint, data.env_id, data.obs_dim, data.act_dim)
    if subcommand == "fit":
        diff += data_mismatches(checkpoint, data, world_size)
    refuse_mismatch(path, diff)


def stop_if_complete(checkpoint: dict[str, Any], path: str, data: Any) -> None:
    """A requeued job that resumes a finished run changes nothing: one line, exit status 0, before any file
    is touched. A larger --data.total_env_steps than the run reached extends it."""
    state = data_module_state(checkpoint)
    per_rank = state.get("per_rank") or [state]
    reached = min(int(s.get("env_steps", 0)) for s in per_rank)
    total_env_steps = data.total_env_steps
    if reached >= total_env_steps:
        # settings that do not fit are refused as for any resume (before_fit checks them for a run that goes on)
        spec = probe(data.env_id, data.env_kwargs)
        diff = space_mismatches(checkpoint, data.env_id, spec.obs_dim, spec.act_dim)
        refuse_mismatch(path, diff + data_mismatches(checkpoint, data, len(per_rank)))
        print(
            f"lightning-meta-rl: the run is already complete ({reached} of --data.total_env_steps="
            f"{total_env_steps} env steps in {path}); nothing to do. A larger --data.total_env_steps extends it.",
            flush=True,
        )
        raise SystemExit(0)


def refuse_mismatch(path: str, diff: list[str]) -> None:
    if diff:
        raise UserError(
            f"Checkpoint '{path}' does not fit this run: {'; '.join(diff)}. Resume with the settings the "
            f"run was started with (its config.yaml: --config <run_dir>/config.yaml), or start a new run "
            f"without --ckpt_path."
        )


def _empty_sections(tree: Any, prefix: str = "") -> list[str]:
    """Dotted keys of the empty mappings in a loaded YAML tree."""
    if not isinstance(tree, dict):
        return []
    out: list[str] = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += _empty_sections(value, name + ".") if value else [name]
    return out


def refuse_unknown_empty_sections(config: Any) -> None:
    """An empty section under a misspelt name (``model: {teacherr: {}}``) holds no option for the parser to
    reject, so it would pass silently: each empty section of a --config file must name a known setting."""
    for path in config.get("config") or []:
        try:
            tree = yaml.safe_load(path.get_content())
        except (OSError, AttributeError, yaml.YAMLError):
            continue
        unknown = [key for key in _empty_sections(tree) if key not in config]
        if unknown:
            raise UserError(
                f"Config file '{path}' has {'sections' if len(unknown) > 1 else 'a section'} that no setting has: "
                f"{', '.join(unknown)} (empty, so nothing else flagged it). Check the spelling against "
                f"--print_config, or remove it."
            )
