"""LightningCLI entry point: ``python -m lightning_meta_rl fit --config conf/hopper.yaml``.

Links environment facts from the DataModule into the model, gives every run its own directory,
defaults to W&B (offline when no account is configured) and turns user errors into one-paragraph
messages with a non-zero exit status.
"""

from __future__ import annotations

import math
import os
import shlex
import signal
import sys
import traceback
from typing import Any

import yaml
from jsonargparse import ActionYesNo, ArgumentError
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback

from lightning_meta_rl.checkpoint import (
    EnvStepCheckpoint,
)
from lightning_meta_rl.datamodule import RolloutDataModule
from lightning_meta_rl.errors import UserError
from lightning_meta_rl.logger import previous_run_id
from lightning_meta_rl.module import MetaRLModule
from lightning_meta_rl.population import PopulationModule
from lightning_meta_rl.population_args import requested_population
from lightning_meta_rl.population_data import PopulationDataModule
from lightning_meta_rl.preemption import GracefulStop, resume_args
from lightning_meta_rl.resume import check_ckpt_path, check_spaces, refuse_unknown_empty_sections
from lightning_meta_rl.rundir import RUN_DIR_ENV, RunDir
from lightning_meta_rl.runtime import (
    check_accelerator,
    default_wandb_mode,
    finish_wandb,
    quiet_console,
    set_flush_denormal,
    set_torch_threads,
    wandb_has_credentials,
)

__all__ = ["RUN_DIR_ENV", "MetaRLCLI", "cli", "main", "wandb_has_credentials"]

EXIT_REFUSED = 2  # a UserError: refused at start (nothing left behind) or stopped with a message
EXIT_RETIRED = 3  # a population finished, but some of its seeds were retired (diverged)
EXIT_SIGNAL_BASE = 128  # stopped by signal N with a checkpoint saved: 128 + N, as a shell reports a signal
PROG = "python -m lightning_meta_rl"  # the program name in usage and errors (not __main__.py)


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
        if not os.path.exists(path):  # a resumed or tested run keeps the config.yaml it was started with
            self.parser.save(self.config, path, skip_none=False, overwrite=True, multifile=self.multifile)
        if trainer.logger is not None:
            config = self.parser.dump(self.config, skip_none=False, format="yaml")
            trainer.logger.log_hyperparams(yaml.safe_load(config))


class MetaRLCLI(LightningCLI):
    """LightningCLI with the run directory, process set-up and the checks a ``--ckpt_path`` gets."""

    def __init__(self, *args: Any, run_dir: RunDir | None = None, **kwargs: Any) -> None:
        self.run_dir = run_dir or RunDir()
        self._checkpoint: dict[str, Any] | None = None
        self._checkpoint_path = ""
        given = kwargs.get("args")
        self.argv = [str(a) for a in given] if isinstance(given, list) else sys.argv[1:]  # for the resume line
        self.stopped_by: int | None = None  # the signal that stopped training, if one did
        self.retired: list[int] = []  # seeds of a population retired during training
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--population",
            type=int,
            default=1,
            help="Train this many seeds in one process (seed_everything, seed_everything + 1, ...), either arm, "
            "each with its own environments, buffer and results in <run_dir>/seed_<s>/. Default: 1, one run.",
        )
        if self.model_class is PopulationModule:
            parser.link_arguments("population", "model.population", apply_on="parse")
            parser.link_arguments("population", "data.population", apply_on="parse")
        parser.add_argument(
            "--run_dir",
            type=str | None,
            default=None,
            help="Directory of this run (config.yaml, checkpoints/, metrics.csv, wandb/). "
            "Default: runs/<env>_<teacher>_seed<seed>_<time> under the working directory.",
        )
        for attr in ("obs_dim", "act_dim", "action_low", "action_high"):
            parser.link_arguments(f"data.{attr}", f"model.{attr}", apply_on="instantiate")
        parser.add_argument(
            "--torch_threads",
            type=int | None,
            default=None,
            help="Torch's intra-op CPU threads for this process. Default: 1, unless OMP_NUM_THREADS is set (then "
            "torch follows it). The networks are small: one thread per process is what lets several runs share "
            "a machine (two runs with 2 threads each on 2 cores took 5x as long as with 1 each); a single "
            "large run alone on a machine may gain from more.",
        )
        parser.add_argument(
            "--flush_denormal",
            type=bool,
            default=True,
            help="Flush denormal floats (below 1.2e-38) to zero on the CPU (torch.set_flush_denormal). Without "
            "LayerNorm, dead ReLU units leave Adam moments and weights decaying into the denormal range, where "
            "x86 arithmetic is many times slower (docs/performance.md). Results are not bit-identical to IEEE "
            "runs (numpy and MuJoCo on this thread flush too); a run resumed with another setting than it "
            "started with changes mid-run. It covers the main thread, where every kernel runs with one torch "
            "thread; with --torch_threads above 1, worker threads may keep IEEE. false keeps IEEE denormals.",
        )
        parser.add_argument(
            "--traceback",
            action=ActionYesNo,
            default=False,
            help="On an error that stops the run (a refused setting, an environment that raised), print the full "
            "traceback after the one-paragraph message.",
        )
        parser.link_arguments("seed_everything", "data.seed", apply_on="parse", compute_fn=_int_seed)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        self._refuse_max_steps(config)
        check_accelerator(config.trainer.accelerator)
        self.threads_note = set_torch_threads(config.torch_threads) + set_flush_denormal(config.flush_denormal)
        trainer = config.trainer
        several = str(trainer.devices) not in ("1", "auto") or (trainer.num_nodes or 1) > 1
        if several and trainer.strategy == "auto":
            # each backward touches one of the three networks: DDP must be told that the others are unused
            trainer.strategy = "ddp_find_unused_parameters_true"
        run_dir = self.run_dir.choose(config, self.subcommand)
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
        wandb = "wandb" in str(getattr(logger, "class_path", "")).lower()
        resumed = self.subcommand == "fit" and self._checkpoint is not None
        if wandb and resumed and init_args is not None and init_args.get("id") is None:
            init_args.id = previous_run_id(init_args.save_dir or run_dir)  # one training, one W&B run

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except UserError:
            raise
        except (MisconfigurationException, ValueError) as exc:  # e.g. Lightning's word on devices, strategies
            raise UserError(f"Invalid setting, refused before the run started: {exc}") from None

    def _refuse_max_steps(self, config: Any) -> None:
        max_steps = config.trainer.get("max_steps")
        if self.subcommand == "fit" and max_steps not in (None, -1):
            raise UserError(
                f"--trainer.max_steps={max_steps} is refused: Lightning counts its optimizer steps (the teacher's, "
                f"one per iteration; none in the DDPG arm), not environment steps, so it would stop the run at an "
                f"arbitrary point or never. Set the budget with --data.total_env_steps (or --trainer.max_time for a "
                f"wall-clock limit)."
            )

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Then: a --ckpt_path that is missing, unreadable or from another set-up is refused, naming what
        differs, before any state is loaded and before the run writes anything. (Lightning then replaces the
        model's settings with the checkpoint's hyperparameters, so a resumed run continues as it started.)"""
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as exc:  # the parsers do not exit (exit_on_error=False): a short error, not the usage
            raise UserError(_usage_error(exc, args)) from None
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        refuse_unknown_empty_sections(config)
        self._checkpoint, self._checkpoint_path = check_ckpt_path(config, subcommand)

    def _check_spaces(self) -> None:
        if self._checkpoint is not None and isinstance(self.datamodule, RolloutDataModule):
            check_spaces(
                self._checkpoint, self._checkpoint_path, self.datamodule, self.subcommand, self.trainer.world_size
            )

    def _start_line(self) -> None:
        if self.trainer.is_global_zero and isinstance(self.datamodule, RolloutDataModule):
            teacher = self.model.teacher_cfg.kind if isinstance(self.model, MetaRLModule) else "?"
            print(
                f"lightning-meta-rl: {self.subcommand} {self.datamodule.env_id}, teacher {teacher}, "
                f"{self.threads_note}; run directory: {self.trainer.default_root_dir}",
                flush=True,
            )

    def before_validate(self) -> None:
        self._check_spaces()
        self._start_line()

    def before_test(self) -> None:
        self._check_spaces()
        self._start_line()

    def before_fit(self) -> None:
        if isinstance(self.model, MetaRLModule) and isinstance(self.datamodule, RolloutDataModule):
            self.model.check_data(self.datamodule)
        self._check_spaces()
        self._start_line()
        for cb in self.trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                cb.dirpath = os.path.realpath(os.path.join(self.trainer.default_root_dir, "checkpoints"))

    def after_fit(self) -> None:
        model, data = self.model, self.datamodule
        stop = next((cb for cb in self.trainer.callbacks if isinstance(cb, GracefulStop)), None)  # type: ignore[attr-defined]
        if stop is not None and stop.signal_received is not None:
            self.stopped_by = stop.signal_received
            if self.trainer.is_global_zero:
                self._resume_line(stop)
            return
        self.run_dir.release()
        if not self.trainer.is_global_zero or not isinstance(model, MetaRLModule):
            return
        if isinstance(model, PopulationModule):
            self.retired = [model.seeds[k] for k in model.retired]
            scores = ", ".join(
                f"seed {s}: {v:.2f}" + (" (retired)" if s in self.retired else "")
                for s, v in model.final_scores().items()
            )
            print(
                f"lightning-meta-rl: final eval/return by seed ({scores}) after {data.env_steps} env steps or more each; "
                f"run directory: {self.trainer.default_root_dir}",
                flush=True,
            )
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

    def _resume_line(self, stop: GracefulStop) -> None:
        """One line: which signal, where the run stopped, and the exact command that resumes it."""
        run_dir = str(self.trainer.default_root_dir)
        ckpt = next((cb for cb in self.trainer.checkpoint_callbacks if isinstance(cb, EnvStepCheckpoint)), None)
        saved = f"checkpoint {ckpt.dirpath}/{ckpt.FILENAME} saved" if ckpt is not None else "no checkpoint (disabled)"
        args = resume_args(self.argv, run_dir)
        name = signal.Signals(stop.signal_received).name if stop.signal_received is not None else "a signal"
        print(
            f"lightning-meta-rl: stopped by {name} after {stop.env_steps} env steps; {saved}. Resume with: "
            f"python -m lightning_meta_rl {shlex.join(args)}",
            flush=True,
        )


def _usage_error(exc: ArgumentError, args: ArgsType) -> str:
    """jsonargparse's message (the key and what was expected), in one paragraph, and where the full help is."""
    argv = [str(a) for a in args] if isinstance(args, list) else sys.argv[1:]
    subcommand = next((a for a in argv if a in LightningCLI.subcommands()), None)
    message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if "unrecognized arguments" in message and "data.env_threads" in message and requested_population(argv) == 1:
        message += "; data.env_threads steps a population's members at once: it needs --population=N"
    return f"{message} (all options: {PROG} {subcommand + ' ' if subcommand else ''}--help)"


def trainer_defaults() -> dict[str, Any]:
    return {
        "max_epochs": -1,  # the environment-step budget ends the run (data.total_env_steps)
        "num_sanity_val_steps": 0,
        "enable_model_summary": False,  # a table of parameter counts before every run; --trainer.enable_model_summary=true
        "log_every_n_steps": 5,  # one training step is a whole iteration (d0_steps env steps): log every 5th
        "logger": {
            "class_path": "lightning_meta_rl.logger.WandbLogger",
            "init_args": {"project": os.environ.get("WANDB_PROJECT", "lightning-meta-rl"), "save_dir": None},
        },
        "callbacks": [EnvStepCheckpoint(), GracefulStop()],
    }


def cli(args: ArgsType = None, run: bool = True, run_dir: RunDir | None = None) -> MetaRLCLI:
    """Build (and by default run) the CLI; tests call this in-process."""
    default_wandb_mode()
    quiet_console()
    population = requested_population(sys.argv[1:] if args is None else args)
    return MetaRLCLI(
        PopulationModule if population > 1 else MetaRLModule,
        PopulationDataModule if population > 1 else RolloutDataModule,
        args=args,
        run=run,
        trainer_defaults=trainer_defaults(),
        save_config_callback=SaveConfigToRun,
        save_config_kwargs={"overwrite": True, "save_to_log_dir": False},  # SaveConfigToRun writes it
        parser_kwargs={"parser_mode": "omegaconf", "prog": PROG, "exit_on_error": False},
        auto_configure_optimizers=False,
        run_dir=run_dir,
    )


def main(args: ArgsType = None) -> None:
    """Console entry point. Exit statuses: 0 done (or already complete); 1 an unexpected error (a bug: a
    traceback); 2 a user error, in one paragraph (refused at start, leaving nothing behind, or stopped during
    training, keeping the run directory); 3 a population finished with some seeds retired (diverged); 128 + N
    stopped by signal N with a checkpoint saved."""
    run_dir = RunDir()  # only a directory this call begins may be removed
    code = 1  # an unexpected exception, until cli() returns
    argv = [str(a) for a in args] if isinstance(args, list) else sys.argv[1:]
    try:
        result = cli(args, run_dir=run_dir)
        code = 0 if result.stopped_by is None else EXIT_SIGNAL_BASE + result.stopped_by
        if code == 0 and result.retired:
            code = EXIT_RETIRED
    except UserError as exc:
        print(f"lightning-meta-rl: error: {exc}", file=sys.stderr)
        if _wants_traceback(argv):
            traceback.print_exception(exc, file=sys.stderr)
        code = EXIT_REFUSED
        run_dir.remove_if_refused(exc, before_removal=lambda: finish_wandb(code))  # W&B's files closed first
    finally:
        finish_wandb(code, preempted=code > EXIT_SIGNAL_BASE)
        run_dir.release()
    if code:
        sys.exit(code)


def _wants_traceback(argv: list[str]) -> bool:
    # read from the command line itself: the error may come before (or instead of) a parsed configuration
    return any(a in ("--traceback", "--traceback=true", "--traceback=True") for a in argv)
