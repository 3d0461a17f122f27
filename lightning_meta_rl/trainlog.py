"""Every training metric a run logs, also written locally: ``<run_dir>/train_metrics.csv``, one row per metric
and logged iteration (``iteration, env_steps, metric, value``), so that nothing needs W&B to be read back.

The rows are those the loggers get (Lightning's cadence, ``--trainer.log_every_n_steps``); a metric not
measured in an iteration has no row. A resumed run first drops the rows past its checkpoint."""

from __future__ import annotations

import csv
import math
import os

FIELDS = ("iteration", "env_steps", "metric", "value")


class TrainLog:
    def __init__(self) -> None:
        self.path: str | None = None

    def start(self, run_dir: str | None, iteration: int) -> None:
        """Rows go to ``<run_dir>/train_metrics.csv`` (None: nowhere, e.g. ranks other than 0); a file already
        there keeps its rows up to ``iteration`` (the checkpoint's)."""
        path = self.path = None if run_dir is None else os.path.join(run_dir, "train_metrics.csv")
        if path is None or not os.path.exists(path):
            return
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["iteration"]) <= iteration]
        tmp = path + ".tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)

    def append(self, iteration: int, metrics: dict[str, float]) -> None:
        if self.path is None:
            return
        env_steps = metrics.get("env_steps", math.nan)
        steps = int(env_steps) if math.isfinite(env_steps) else ""
        new = not os.path.exists(self.path)
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(FIELDS)
            for name, value in metrics.items():
                if name != "env_steps" and math.isfinite(value):
                    writer.writerow((iteration, steps, name, repr(float(value))))
