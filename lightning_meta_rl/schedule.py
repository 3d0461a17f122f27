"""When things happen: the student's updates (the update-to-data rule shared by both arms) and which
iterations' metrics reach the loggers."""

from __future__ import annotations

import math

from lightning_meta_rl.errors import ConfigError


class UpdateCredit:
    """``utd_ratio`` student updates per environment step collected, the same rule in both arms: each
    collection adds credit, whole updates are spent, the fraction carries over."""

    def __init__(self, utd_ratio: float) -> None:
        if not utd_ratio > 0:
            raise ConfigError(f"model.utd_ratio must be positive, got {utd_ratio}")
        self.utd_ratio = utd_ratio
        self.steps_credited = 0
        self.credit = 0.0

    def due(self, env_steps: int) -> int:
        """The whole updates earned by the steps collected since the last call (spend them with ``spend``)."""
        self.credit += self.utd_ratio * (env_steps - self.steps_credited)
        self.steps_credited = env_steps
        return int(self.credit)

    def spend(self, n: int) -> None:
        self.credit -= n

    def state_dict(self) -> dict[str, float]:
        return {"steps_credited": self.steps_credited, "credit": self.credit}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.steps_credited, self.credit = int(state["steps_credited"]), float(state["credit"])


class LogCadence:
    """Lightning writes step metrics every ``log_every_n_steps`` iterations and on the last one; it writes a
    key's last value again on steps that do not log it, so a metric not measured in an iteration (no episode
    ended in D0, no update, no action gap) is given as NaN instead."""

    def __init__(self) -> None:
        self.pending: dict[str, float] = {}  # the last iteration's metrics, until logged
        self.keys: set[str] = set()

    @staticmethod
    def written(iteration: int, every: int, last: bool) -> bool:
        """Whether iteration ``iteration`` (counted from 1) reaches the loggers."""
        return every > 0 and (iteration % every == 0 or last)

    def take(self) -> dict[str, float]:
        """The pending metrics, with NaN for every key logged before but not measured now."""
        metrics = dict.fromkeys(self.keys, math.nan) | self.pending
        self.keys.update(metrics)
        return metrics
