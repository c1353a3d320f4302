"""Where a KPI value falls between its thresholds, and which crossing event a status change makes.

Direction-aware: "at least as good as" means ≥ when higher is better and ≤ when lower is better,
so a value exactly on a threshold counts as meeting it.
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.kpi import Direction, KpiStatus

_RANK: dict[KpiStatus, int] = {"on_target": 0, "at_risk": 1, "breached": 2}


@dataclass(frozen=True)
class Thresholds:
    direction: Direction
    target: float
    warning: float
    breach: float

    def check(self) -> str | None:
        """Why the thresholds are inconsistent, or None if they are ordered by the direction."""
        if self.direction == "higher_is_better" and not self.breach <= self.warning <= self.target:
            return "when higher is better, thresholds must be ordered breach ≤ warning ≤ target"
        if self.direction == "lower_is_better" and not self.target <= self.warning <= self.breach:
            return "when lower is better, thresholds must be ordered target ≤ warning ≤ breach"
        return None

    def at_least(self, value: float, threshold: float) -> bool:
        """Whether `value` is at least as good as `threshold`."""
        return value >= threshold if self.direction == "higher_is_better" else value <= threshold

    def status(self, value: float) -> KpiStatus:
        if self.at_least(value, self.warning):
            return "on_target"
        if self.at_least(value, self.breach):
            return "at_risk"
        return "breached"

    def attainment(self, value: float) -> float:
        """The value relative to the target, 1.0 = on target, better is more (capped at 2)."""
        if self.direction == "higher_is_better":
            ratio = value / self.target if self.target else (1.0 if value >= 0 else 0.0)
        else:
            ratio = self.target / value if value else (1.0 if self.target >= 0 else 0.0)
        return max(0.0, min(2.0, ratio))


def worse(a: KpiStatus, b: KpiStatus) -> bool:
    """Whether status `a` is worse than `b`."""
    return _RANK[a] > _RANK[b]
