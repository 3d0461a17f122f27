"""LightningCLI entry point: ``python -m lightning_meta_rl fit --config conf/hopper.yaml``.

Links environment facts from the DataModule into the model, gives every run its own directory,
defaults to W&B (offline when no account is configured) and turns user errors into one-paragraph
messages with a non-zero exit status.
"""

from __future__ import annotations

import datetime
import math
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback

from lightning_meta_rl.checkpoint import EnvStepCheckpoint
from lightning_meta_rl.datamodule import RolloutDataModule
from lightning_meta_rl.errors import UserError
from lightning_meta_rl.module import MetaRLModule

RUN_DIR_ENV = "LIGHTNING_META_RL_RUN_DIR"  # lets DDP's re-launched ranks reuse rank 0's run directory


def wandb_has_credentials() -> bool:
    """True when W&B could log online: an API key in the environment or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def _int_seed(seed: int | bool | None) -> int:
    """The environments' base seed: the given int, else what Lightning (>= 2.2) seeds with (PL_GLOBAL_SEED or 0)."""
    if isinstance(seed, int) and not isinstance(seed, bool):
        return seed
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class SaveConfigToRun(SaveConfigCallback):
    """Writes the resolved config.yaml into the run directory and stores it with the logger's run (W&B)."""

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:  # called on rank 0 only
        # the run directory, whatever logger is used (Lightning's default is the logger's own directory,
        # which for a CSV or TensorBoard logger is a version folder inside it)
        os.makedirs(trainer.default_root_dir, exist_ok=True)
        path = os.path.join(trainer.default_root_dir, self.config_filename)
        self.parser.save(self.config, path, skip_none=False, overwrite=True, multifile=self.multifile)
        if trainer.logger is not None:
            config = self.parser.dump(self.config, skip_none=False, format="yaml")
            trainer.logger.log_hyperparams(yaml.safe_load(config))


class MetaRLCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--run_dir",
            type=str | None,
            default=None,
            help="Directory of this run (config.yaml, checkpoints/, metrics.csv, wandb/). "
            "Default: runs/<env>_<teacher>_seed<seed>_<time> under the working directory.",
        )
        for attr in ("obs_dim", "act_dim", "action_low", "action_high"):
            parser.link_arguments(f"data.{attr}", f"model.{attr}", apply_on="instantiate")
        parser.link_arguments("seed_everything", "data.seed", apply_on="parse", compute_fn=_int_seed)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        run_dir = self._run_dir(config)
        config.run_dir = run_dir
        config.trainer.default_root_dir = run_dir
        if config.trainer.enable_checkpointing is False:
            self.trainer_defaults["callbacks"] = []  # the default EnvStepCheckpoint would clash with the flag
        if config.trainer.enable_progress_bar is False and config.trainer.callbacks:
            # a config's custom progress bar would otherwise clash with --trainer.enable_progress_bar=false
            config.trainer.callbacks = [
                cb for cb in config.trainer.callbacks if "ProgressBar" not in str(getattr(cb, "class_path", ""))
            ]
        logger = config.trainer.logger
        init_args = getattr(logger, "init_args", None)
        if init_args is not None and "save_dir" in init_args and init_args.save_dir in (None, "."):
            init_args.save_dir = run_dir

    def _run_dir(self, config: Any) -> str:
        inherited = os.environ.get(RUN_DIR_ENV)
        if inherited and os.environ.get("LOCAL_RANK", "0") != "0":  # a rank that Lightning's DDP launcher started
            return inherited
        if config.run_dir is None:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            teacher = config.model.teacher.kind
            env = str(config.data.env_id).replace("/", "_")
            run_dir = os.path.join(
                "runs", f"{env}_{teacher}_seed{config.seed_everything}_{stamp}_{os.urandom(2).hex()}"
            )
        else:
            run_dir = str(config.run_dir)
        if (
            self.subcommand == "fit"
            and config.get("ckpt_path") is None
            and os.path.isdir(run_dir)
            and os.listdir(run_dir)
        ):
            raise UserError(
                f"Run directory '{run_dir}' already exists and is not empty; a new run never overwrites an earlier "
                f"one. Choose another --run_dir, delete that directory, or resume it with --ckpt_path."
            )
        os.environ[RUN_DIR_ENV] = run_dir
        return run_dir

    def before_fit(self) -> None:
        if isinstance(self.model, MetaRLModule) and isinstance(self.datamodule, RolloutDataModule):
            self.model.check_data(self.datamodule)
        for cb in self.trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                cb.dirpath = os.path.realpath(os.path.join(self.trainer.default_root_dir, "checkpoints"))

    def after_fit(self) -> None:
        model, data = self.model, self.datamodule
        if not self.trainer.is_global_zero or not isinstance(model, MetaRLModule):
            return
        score = model.history.final_score()
        n = len(model.history.rows)
        shown = f"{score:.2f}" if math.isfinite(score) else "n/a"
        env_steps = data.env_steps if isinstance(data, RolloutDataModule) else "?"
        print(
            f"lightning-meta-rl: final eval/return {shown} (mean of the last 10% of {n} evaluations) after "
            f"{env_steps} env steps; run directory: {self.trainer.default_root_dir}",
            flush=True,
        )


def trainer_defaults() -> dict[str, Any]:
    return {
        "max_epochs": -1,  # the environment-step budget ends the run (data.total_env_steps)
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 5,  # one training step is a whole iteration (d0_steps env steps): log every 5th
        "logger": {
            "class_path": "lightning_meta_rl.logger.WandbLogger",
            "init_args": {"project": os.environ.get("WANDB_PROJECT", "lightning-meta-rl"), "save_dir": None},
        },
        "callbacks": [EnvStepCheckpoint()],
    }


def cli(args: ArgsType = None, run: bool = True) -> MetaRLCLI:
    """Build (and by default run) the CLI; tests call this in-process."""
    if not os.environ.get("WANDB_MODE") and not wandb_has_credentials():
        os.environ["WANDB_MODE"] = "offline"  # works out of the box; `wandb sync` uploads later
    os.environ.setdefault("WANDB_SILENT", "true")
    return MetaRLCLI(
        MetaRLModule,
        RolloutDataModule,
        args=args,
        run=run,
        trainer_defaults=trainer_defaults(),
        save_config_callback=SaveConfigToRun,
        save_config_kwargs={"overwrite": True, "save_to_log_dir": False},  # SaveConfigToRun writes it
        parser_kwargs={"parser_mode": "omegaconf"},
        auto_configure_optimizers=False,
    )


def main(args: ArgsType = None) -> None:
    """Console entry point: user errors become one paragraph on stderr and exit status 2."""
    code = 1  # an unexpected exception, until cli() returns
    try:
        cli(args)
        code = 0
    except UserError as exc:
        print(f"lightning-meta-rl: error: {exc}", file=sys.stderr)
        code = 2
        sys.exit(2)
    finally:
        _finish_wandb(code)


def _finish_wandb(exit_code: int = 0) -> None:
    """Close the W&B run (Lightning does not), so the offline directory is complete; W&B marks a run with
    a non-zero exit code as failed."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)
