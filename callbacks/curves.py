"""Learning curve: eval/return against environment steps, drawn at the end of a run.

Each point is the mean over one evaluation's episodes; the band around it spans those episodes' returns
(lowest to highest). The history rows hold only the mean, so the callback collects the per-episode returns
itself, from the evaluation rollout the module leaves on ``last_iteration``, and keeps them in its
checkpointed state (a resumed run draws the band over its whole length). In the Meta arm the figure also
shows R(pi), the student's deterministic return that the algorithm measures itself (the ``r_pi`` column).
A population (``--population``) gets one line per seed.
"""

from __future__ import annotations

import math
import os
from typing import Any

import lightning as L
import numpy as np
from matplotlib.figure import Figure

from callbacks.media import log_image
from lightning_meta_rl.module import MetaRLModule
from lightning_meta_rl.population import PopulationModule

Rows = list[dict[str, float]]


def draw_curve(runs: dict[str, Rows], episodes: dict[float, list[float]], title: str) -> Figure:
    """The figure: one line per entry of ``runs`` (label -> history rows), a band wherever ``episodes``
    (env steps -> that evaluation's episode returns) has the evaluation, and R(pi) where a run has it."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    r_pi_shown = False
    for label, rows in runs.items():
        steps = np.array([r["env_steps"] for r in rows])
        line = ax.plot(steps, [r["eval/return"] for r in rows], marker="o", markersize=3, label=label)[0]
        spread = [episodes.get(s, []) for s in steps]
        have = np.array([len(e) > 1 for e in spread])  # one episode has no spread to show
        if have.any():
            lo = np.array([min(e) if e else np.nan for e in spread])
            hi = np.array([max(e) if e else np.nan for e in spread])
            n = max(len(e) for e in spread)
            ax.fill_between(
                steps, lo, hi, where=have, color=line.get_color(), alpha=0.2, label=f"min-max over {n} episodes"
            )
        r_pi = np.array([r.get("r_pi", math.nan) for r in rows])
        finite = np.isfinite(r_pi)
        if finite.any():  # dashed, in its run's color; one legend entry however many runs have it
            text = "_nolegend_" if r_pi_shown else "R(pi), measured by the algorithm (dashed)"
            ax.plot(steps[finite], r_pi[finite], linestyle="--", color=line.get_color(), alpha=0.8, label=text)
            r_pi_shown = True
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return (deterministic student)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


class LearningCurve(L.Callback):
    """Saves ``<run_dir>/<filename>`` (eval/return vs env steps) at the end of training and logs it to W&B."""

    def __init__(self, filename: str = "learning_curve.png") -> None:
        self.filename = filename
        self.episodes: dict[float, list[float]] = {}  # env steps of an evaluation -> its episode returns

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not trainer.is_global_zero or not isinstance(pl_module, MetaRLModule) or pl_module.last_iteration is None:
            return
        rollout, rows = pl_module.last_iteration.evaluation, pl_module.history.rows
        # the rollout is set only in an iteration that evaluated; its row is then the newest one
        if rollout is not None and rows and rows[-1]["iteration"] == pl_module.iteration:
            self.episodes[rows[-1]["env_steps"]] = [float(x) for x in rollout.episode_returns]

    def state_dict(self) -> dict[str, Any]:
        return {"steps": list(self.episodes), "returns": list(self.episodes.values())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.episodes = dict(zip(state.get("steps", []), state.get("returns", []), strict=True))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not isinstance(pl_module, MetaRLModule):
            return
        import matplotlib.pyplot as plt

        env_id, kind = trainer.datamodule.env_id, pl_module.teacher_cfg.kind  # type: ignore[attr-defined]
        if isinstance(pl_module, PopulationModule):  # each seed's own history
            seeds = pl_module.seeds
            runs = {f"seed {s}": e.history.rows for s, e in zip(seeds, pl_module.evaluations, strict=True)}
            title, episodes = f"{env_id}: {kind}, {len(seeds)} seeds", {}  # the episodes collected are one run's
        else:
            runs, title, episodes = {"eval/return": pl_module.history.rows}, f"{env_id}: {kind}", self.episodes
        runs = {k: v for k, v in runs.items() if v}  # a seed retired before its first evaluation has no line
        if not runs:
            return
        fig = draw_curve(runs, episodes, title)
        path = os.path.join(trainer.default_root_dir, self.filename)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        log_image(trainer, "learning_curve", path)
