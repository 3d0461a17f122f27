"""One W&B run per seed of a population (``--population``), beside the population's own run.

The population's run (the trainer's WandbLogger) gets the members' mean metrics. Each member also gets an
ordinary W&B run of its own, in the same project and mode, grouped under the population's run name: its
config (the population's, with ``seed_everything`` set to the member's seed), every evaluation
(``eval/return``, ``r_pi`` and ``env_steps``, the chart's x-axis) and its final score in the summary, so that a
W&B report or sweep sees the seeds of a population as it sees single runs. A member's run id is the
population's with ``-seed<s>`` added, so a resumed population continues its members' runs too; its files
are under ``<run_dir>/seed_<s>/wandb``.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

from lightning_meta_rl.logger import STEP_METRIC, WandbLogger


class SeedRuns:
    """The members' W&B runs (none when the trainer has no WandbLogger, or W&B is disabled)."""

    def __init__(self) -> None:
        self.runs: dict[int, Any] = {}

    def start(self, loggers: list[Any], seeds: list[int], root: str) -> None:
        main = next((lg for lg in loggers if isinstance(lg, WandbLogger)), None)
        if main is None:
            return
        parent = main.experiment
        mode = getattr(getattr(parent, "settings", None), "mode", None)
        if mode is None or mode == "disabled" or not getattr(parent, "id", None):
            return
        import wandb

        config = dict(parent.config)
        for seed in seeds:
            directory = os.path.join(root, f"seed_{seed}")
            os.makedirs(directory, exist_ok=True)
            try:
                run = wandb.init(
                    project=parent.project,
                    entity=getattr(parent, "entity", None) or None,
                    group=parent.name or parent.id,
                    job_type="seed",
                    name=f"{parent.name or parent.id}-seed{seed}",
                    id=f"{parent.id}-seed{seed}",
                    resume="allow",
                    dir=directory,
                    mode=mode,
                    config={**config, "seed_everything": seed, "population_seed": seed},
                    reinit="create_new",
                )
            except Exception as exc:  # W&B trouble never stops training (as for the population's run)
                warnings.warn(f"W&B could not start the run of seed {seed} ({exc}); training continues", stacklevel=2)
                continue
            run.define_metric(STEP_METRIC)
            run.define_metric("*", step_metric=STEP_METRIC, step_sync=True)
            self.runs[seed] = run

    def log(self, seed: int, env_steps: int, ret: float, r_pi: float) -> None:
        run = self.runs.get(seed)
        if run is not None:
            metrics = {"eval/return": ret, STEP_METRIC: float(env_steps)}
            if not math.isnan(r_pi):
                metrics["r_pi"] = r_pi
            run.log(metrics)

    def finish(self, final_scores: dict[int, float], retired: set[int], exit_code: int = 0) -> None:
        """Each member's final score into its run's summary, then the runs closed (a retired member's run is
        marked failed)."""
        for seed, run in self.runs.items():
            score = final_scores.get(seed, math.nan)
            if not math.isnan(score):
                run.summary["final_score"] = score
            run.finish(exit_code=1 if seed in retired else exit_code)
        self.runs = {}
