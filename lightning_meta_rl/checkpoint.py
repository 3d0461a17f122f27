"""Checkpoints every N environment steps, written atomically (a kill never leaves a half-written file), and
the checks a ``--ckpt_path`` gets before anything is loaded or written."""

from __future__ import annotations

import os
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

from lightning_meta_rl.errors import UserError


class EnvStepCheckpoint(Checkpoint):
    """Keeps ``<dirpath>/last.ckpt`` current: saved at the first iteration boundary past every
    ``every_env_steps`` environment steps (default: the DataModule's ``eval_every``) and at the end of training.

    Every save goes to a temporary file first and is renamed over the old one, so a run killed at any
    moment (even with SIGKILL) leaves the previous complete checkpoint in place; resume it with
    ``fit --ckpt_path last`` (or the file's path) and the same ``--run_dir``.

    Args:
        every_env_steps: environment steps between saves (None: ``data.eval_every``).
        dirpath: where ``last.ckpt`` goes (None: ``<run directory>/checkpoints``).
        save_weights_only: save the weights alone (such a checkpoint cannot resume a run).
    """

    FILENAME = "last.ckpt"

    def __init__(
        self, every_env_steps: int | None = None, dirpath: str | None = None, save_weights_only: bool = False
    ) -> None:
        if every_env_steps is not None and every_env_steps <= 0:
            raise ValueError(f"every_env_steps must be positive, got {every_env_steps}")
        self.every_env_steps = every_env_steps
        self.dirpath = dirpath
        self.save_weights_only = save_weights_only
        self._next_save: int | None = None
        self._saved_at: int | None = None  # env steps of the last save (no second save of the same state)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = os.path.realpath(os.path.join(trainer.default_root_dir, "checkpoints"))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is None:  # known once Lightning has restored (or not) a checkpoint
            self._refuse_earlier_run(trainer)

    def _refuse_earlier_run(self, trainer: L.Trainer) -> None:
        """A new fit (no ``ckpt_path``) never overwrites the checkpoint of an earlier run in the same place; the
        CLI refuses a non-empty run directory before this, code that builds its own Trainer is refused here."""
        assert self.dirpath is not None
        path = os.path.join(self.dirpath, self.FILENAME)
        found = trainer.strategy.broadcast(os.path.exists(path) if trainer.is_global_zero else False)
        if found:
            raise UserError(
                f"'{path}' holds the checkpoint of an earlier run; a new run never overwrites one. Choose another "
                f"default_root_dir (or EnvStepCheckpoint dirpath), delete that run, or resume it by passing "
                f"ckpt_path='{path}' to trainer.fit."
            )

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        dm = trainer.datamodule  # type: ignore[attr-defined]
        every = self.every_env_steps or dm.eval_every
        if self._next_save is None:
            self._next_save = (dm.env_steps // every + 1) * every
        due = trainer.strategy.reduce_boolean_decision(dm.env_steps >= self._next_save, all=False)
        if due and not trainer.should_stop:  # the final save happens at the end of training
            self._next_save = (dm.env_steps // every + 1) * every
            self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the epoch (an endless stream of iterations) ends only when training stops
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.save(trainer)

    def save(self, trainer: L.Trainer) -> None:
        """Write the checkpoint atomically (every rank takes part; rank 0 renames it into place)."""
        env_steps = trainer.datamodule.env_steps  # type: ignore[attr-defined]
        if env_steps == self._saved_at:
            return
        assert self.dirpath is not None, "set in setup"
        path = os.path.join(self.dirpath, self.FILENAME)
        tmp = path + ".tmp"
        trainer.save_checkpoint(tmp, self.save_weights_only)
        if trainer.is_global_zero:
            os.replace(tmp, path)
        trainer.strategy.barrier("EnvStepCheckpoint")
        self._saved_at = env_steps

    def state_dict(self) -> dict[str, Any]:
        return {"next_save": self._next_save, "dirpath": self.dirpath}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._next_save = state_dict.get("next_save")


# ---------------------------------------------------------------------------- checks before resuming
LIGHTNING_KEYWORDS = ("last", "best", "hpc", "registry")  # --ckpt_path values that Lightning resolves itself


def resolve_ckpt_path(ckpt_path: str, run_dir: str | None) -> str | None:
    """The file a ``--ckpt_path`` value names: ``last`` is ``<run_dir>/checkpoints/last.ckpt`` (None when there
    is none yet: the run then starts fresh, which is how a requeued cluster job resumes); Lightning's other
    keywords are left to Lightning (None)."""
    if ckpt_path == "last":
        if run_dir is None:
            return None
        path = os.path.join(run_dir, "checkpoints", "last.ckpt")
        return path if os.path.isfile(path) else None
    if ckpt_path in LIGHTNING_KEYWORDS:
        return None
    return ckpt_path


def read_checkpoint(path: str) -> dict[str, Any]:
    """Open a checkpoint file (memory-mapped: nothing large is read) or raise a UserError that says why not."""
    import torch

    if not os.path.exists(path):
        raise UserError(
            f"Checkpoint file '{path}' does not exist. Give the path of a checkpoint written by a run (its "
            f"'checkpoints/last.ckpt'), or '--ckpt_path last' with that run's --run_dir."
        )
    if os.path.isdir(path):
        raise UserError(f"--ckpt_path '{path}' is a directory; give the checkpoint file inside it (e.g. last.ckpt).")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # no pickled code runs
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = text.split(". ")[0].rstrip(".")  # torch's first sentence says what failed
        raise UserError(
            f"Checkpoint file '{path}' cannot be read ({first[:160]}): it is truncated, corrupt or not a PyTorch "
            f"file. Checkpoints are written atomically, so a run that was killed keeps its previous complete "
            f"one: use the run's checkpoints/last.ckpt, or start a new run without --ckpt_path."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise UserError(
            f"'{path}' is a PyTorch file but not a lightning-meta-rl checkpoint (no state_dict and "
            f"hyper_parameters); give a checkpoints/last.ckpt written by this trainer."
        )
    return checkpoint


def _value(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def _saved_env_id(checkpoint: dict[str, Any]) -> str | None:
    data_state = data_module_state(checkpoint)
    return (data_state.get("per_rank") or [data_state])[0].get("env_id")


def data_module_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The data module's entry of a checkpoint (a single run's or a population's; Lightning keys it by class)."""
    return checkpoint.get("RolloutDataModule") or checkpoint.get("PopulationDataModule") or {}


def mismatches(checkpoint: dict[str, Any], env_id: str, model: Any) -> list[str]:
    """What differs between a checkpoint and the run about to load it, in words (empty when they fit).
    ``model`` is the run's ``model`` config as given (``student.hidden``, ``teacher.kind``, ``teacher.hidden``)."""
    hp = checkpoint["hyper_parameters"]
    out: list[str] = []
    saved_env = _saved_env_id(checkpoint)
    if saved_env is not None and saved_env != env_id:
        out.append(f"environment: checkpoint '{saved_env}', this run '{env_id}' (--data.env_id)")
    for group, key, flag in (
        ("student", "hidden", "model.student.hidden"),
        ("teacher", "kind", "model.teacher.kind"),
        ("teacher", "hidden", "model.teacher.hidden"),
        ("student", "layer_norm", "model.student.layer_norm"),
        ("teacher", "learn_std", "model.teacher.learn_std"),
    ):
        saved, wanted = _norm(_value(hp.get(group), key)), _norm(_value(_value(model, group), key))
        if saved is not None and wanted is not None and saved != wanted:
            out.append(f"{flag}: checkpoint {saved}, this run {wanted}")
    return out


def space_mismatches(checkpoint: dict[str, Any], env_id: str, obs_dim: int, act_dim: int) -> list[str]:
    """The checkpoint's observation/action sizes against the environment's (checkpoints that predate the
    stored environment id are caught here)."""
    hp = checkpoint["hyper_parameters"]
    dims = (hp.get("obs_dim"), hp.get("act_dim"))
    if dims == (obs_dim, act_dim):
        return []
    return [
        f"environment spaces: checkpoint observation/action sizes {dims[0]}/{dims[1]}, '{env_id}' has {obs_dim}/{act_dim}"
    ]


def data_mismatches(checkpoint: dict[str, Any], data: Any, world_size: int) -> list[str]:
    """Data settings a resumed run's state depends on: processes, training environments, buffer capacity."""
    state = data_module_state(checkpoint)
    per_rank = state.get("per_rank") or [state]
    out: list[str] = []
    if len(per_rank) != world_size:
        out.append(f"training processes: checkpoint {len(per_rank)}, this run {world_size} (--trainer.devices)")
    first = per_rank[0]
    runners = ((first.get("collectors") or {}).get("train_collector") or {}).get("runners")
    if runners is not None and len(runners) != data.num_envs:
        out.append(f"data.num_envs: checkpoint {len(runners)}, this run {data.num_envs}")
    capacity = (first.get("buffer") or {}).get("capacity")
    if capacity is not None and int(capacity) != data.buffer_size:
        out.append(f"data.buffer_size: checkpoint {int(capacity)}, this run {data.buffer_size}")
    return out


def upgrade_module_state(state: dict[str, Any], checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint written before the state was kept by its parts (flat fields): the same state, by part."""
    if "credit" in state:
        return state
    m_count, m_mean, m_m2 = state.get("meta_reward_welford", (0, 0.0, 0.0))
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress", {})
    return {
        "credit": {"steps_credited": state["steps_credited"], "credit": state["update_credit"]},
        "meta_reward": dict(zip(("mean", "var"), state["m_stats"], strict=True))
        | {"count": m_count, "raw_mean": m_mean, "raw_m2": m_m2},
        "evaluation": {"history": state["history"], "next_eval": state["next_eval"]},
        "r_pi": state["r_pi"],
        "iteration": int(progress.get("total", {}).get("completed", 0)),
        "teacher_steps": int(state.get("teacher_steps", 0)),
        "exploration": state.get("teacher_features") or state.get("exploration_state"),
    }
