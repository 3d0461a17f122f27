"""Reporting evaluation: when it runs, its history (in memory, in checkpoints, appended to ``metrics.csv``)
and the run's one final score."""

from __future__ import annotations

import csv
import math
import os
import time
from typing import Any

FIELDS = ("env_steps", "iteration", "eval/return", "r_pi", "wall_time_s")


INT_FIELDS = ("env_steps", "iteration")  # counts: written as integers (kept as floats in memory and checkpoints)


def _csv_row(row: dict[str, float]) -> dict[str, Any]:
    return {k: int(v) if k in INT_FIELDS and math.isfinite(v) else v for k, v in row.items()}


class EvalHistory:
    """One row per reporting evaluation; ``path`` (if set) receives each row as it is recorded."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self.path: str | None = None

    def rewrite(self) -> None:
        """Write ``path`` anew from the rows in memory (after a resume, drops rows past the checkpoint)."""
        if self.path is None:
            return
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(map(_csv_row, self.rows))
        os.replace(tmp, self.path)

    def record(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        if self.path is None:
            return
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        new = not os.path.exists(self.path)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(_csv_row(row))

    def final_score(self) -> float:
        """Mean eval/return over the last 10% of evaluation points (at least one), SPEC section 3."""
        if not self.rows:
            return math.nan
        k = max(1, math.ceil(0.1 * len(self.rows)))
        tail = [r["eval/return"] for r in self.rows[-k:]]
        return sum(tail) / len(tail)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(r) for r in self.rows]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = [dict(r) for r in state["rows"]]


class Evaluation:
    """The evaluation schedule (every ``eval_every`` environment steps and at the end of training) and the
    history it fills, with the run's wall clock (which continues across a resume)."""

    def __init__(self) -> None:
        self.history = EvalHistory()
        self.next_at = 0
        self._t0 = time.perf_counter()

    def start(self, path: str | None, env_steps: int, eval_every: int) -> None:
        """At the start of training (``env_steps`` > 0: resumed): where rows go, and the clock."""
        self.history.path = path
        self._t0 = time.perf_counter() - (self.history.rows[-1]["wall_time_s"] if self.history.rows else 0.0)
        self.history.rewrite()  # resumed: drops rows past the checkpoint; fresh: never appends to an old file
        if env_steps == 0:
            self.next_at = eval_every

    def due(self, env_steps: int, last: bool) -> bool:
        return env_steps >= self.next_at or last

    def record(self, env_steps: int, eval_every: int, iteration: int, eval_return: float, r_pi: float) -> None:
        """One evaluation's row; the next evaluation is at the next multiple of ``eval_every``."""
        row = {
            "env_steps": float(env_steps),
            "iteration": float(iteration),
            "eval/return": eval_return,
            "r_pi": r_pi,
            "wall_time_s": time.perf_counter() - self._t0,
        }
        self.history.record(row)
        self.next_at = (env_steps // eval_every + 1) * eval_every

    @staticmethod
    def publish(loggers: list[Any], metrics: dict[str, float], step: int) -> None:
        """Every evaluation reaches the loggers at once (not at Lightning's logging cadence)."""
        for logger in loggers:
            logger.log_metrics(metrics, step=step)
            logger.save()

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history.state_dict(), "next_eval": self.next_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history.load_state_dict(state["history"])
        self.next_at = int(state["next_eval"])
