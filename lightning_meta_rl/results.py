"""Evaluation history of a run: kept in memory (and in checkpoints) and appended to ``metrics.csv``."""

from __future__ import annotations

import csv
import math
import os
from typing import Any

FIELDS = ("env_steps", "iteration", "eval/return", "r_pi", "wall_time_s")


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
            writer.writerows(self.rows)
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
            writer.writerow(row)

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
