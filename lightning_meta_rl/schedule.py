"""When the student learns: the update-to-data rule shared by both arms."""

from __future__ import annotations


class UpdateCredit:
    """``utd_ratio`` student updates per environment step collected, the same rule in both arms: each
    collection adds credit, whole updates are spent, the fraction carries over."""

    def __init__(self, utd_ratio: float) -> None:
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
