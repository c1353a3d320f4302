"""A query's SLA clocks: business time that runs, pauses and stops, and what it owes.

A clock counts business time on the calendar the query was raised under, from the raise until it
stops; pauses (waiting for the asker) do not count. Every instant a clock owes something at — a
warning point, its due time — is where its running business time reaches that fraction of the
target, so a pause moves the instants after it and none before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from business_time import add_business_time, business_time_between
from contracts.queries import Clock
from contracts.sla import BusinessCalendar, Priority, ResponseTarget, SLAPolicy

ZERO = timedelta(0)
CLOCKS: tuple[Clock, Clock] = ("first_response", "resolution")
OVERDUE = 1.0  # the threshold at which a clock is due

StopReason = Literal["answered", "closed", "withdrawn"]
Outcome = Literal["met", "missed", "pending", "not_applicable"]


@dataclass(frozen=True)
class SLATerms:
    """The terms a query is judged by: fixed when it is raised, whatever the policy becomes later."""

    calendar: BusinessCalendar
    target: ResponseTarget

    @classmethod
    def from_policy(cls, policy: SLAPolicy | None, priority: Priority) -> SLATerms | None:
        target = policy.target(priority) if policy is not None else None
        return None if policy is None or target is None else cls(policy.calendar, target)

    def target_of(self, clock: Clock) -> timedelta:
        minutes = self.target.first_response_minutes if clock == "first_response" else self.target.resolution_minutes
        return timedelta(minutes=minutes)

    @property
    def thresholds(self) -> tuple[float, ...]:
        """The warning fractions, then 1.0 (due)."""
        return (*sorted(set(self.target.warn_at)), OVERDUE)


@dataclass(frozen=True)
class Deadline:
    """An instant the service must wake at: `clock` reaches `threshold` of its target (1.0: due)."""

    at: datetime
    clock: Clock
    threshold: float


def business_seconds(duration: timedelta) -> int:
    """Whole business seconds, rounded up: any lateness at all counts as at least a second."""
    return math.ceil(duration / timedelta(seconds=1))


@dataclass
class SLAClock:
    name: Clock
    calendar: BusinessCalendar
    target: timedelta
    started_at: datetime
    pauses: list[tuple[datetime, datetime]] = field(default_factory=list)  # completed, in order
    paused_since: datetime | None = None
    stopped_at: datetime | None = None
    stop_reason: StopReason | None = None

    @property
    def is_running(self) -> bool:
        return self.paused_since is None and self.stopped_at is None

    @property
    def is_stopped(self) -> bool:
        return self.stopped_at is not None

    def pause(self, at: datetime) -> None:
        if self.is_running:
            self.paused_since = at

    def resume(self, at: datetime) -> None:
        if self.paused_since is not None and self.stopped_at is None:
            self.pauses.append((self.paused_since, at))
            self.paused_since = None

    def stop(self, at: datetime, reason: StopReason) -> None:
        """Stop for good; a clock stopped while paused keeps the running time it had at the pause."""
        if self.stopped_at is None:
            self.stopped_at, self.stop_reason = at, reason

    def _runs(self, until: datetime | None = None) -> list[tuple[datetime, datetime | None]]:
        """The stretches the clock ran, in order; the last is open (None) while it still runs."""
        runs: list[tuple[datetime, datetime | None]] = []
        start = self.started_at
        for pause_start, pause_end in self.pauses:
            runs.append((start, pause_start))
            start = pause_end
        end = self.paused_since or self.stopped_at
        runs.append((start, end))
        if until is not None:
            runs = [(low, until if high is None else min(high, until)) for low, high in runs if low < until]
        return runs

    def elapsed(self, at: datetime) -> timedelta:
        """The business time the clock has run by `at`."""
        return sum((business_time_between(low, high, self.calendar)
                    for low, high in self._runs(until=at) if high is not None and low < high), ZERO)

    def reaches(self, fraction: float) -> datetime | None:
        """When the clock's running time reaches `fraction` of the target; None while a pause leaves
        it open. For a clock stopped short of it: when it would have, had it kept running (so a clock
        answered in time still shows the due time it had)."""
        remaining = self.target * fraction
        for low, high in self._runs():
            if high is None:
                return add_business_time(low, remaining, self.calendar)
            ran = business_time_between(low, high, self.calendar)
            if ran >= remaining:
                return add_business_time(low, remaining, self.calendar)
            remaining -= ran
        if self.stopped_at is not None and self.paused_since is None:
            return add_business_time(self.stopped_at, remaining, self.calendar)
        return None

    @property
    def due_at(self) -> datetime | None:
        return self.reaches(OVERDUE)

    def late_by(self, at: datetime) -> timedelta:
        """How much business time past the target the clock has run by `at` (zero if within it)."""
        return max(ZERO, self.elapsed(at) - self.target)

    def outcome(self, as_of: datetime) -> Outcome:
        """Met or missed once stopped; missed as soon as it overran; not applicable if withdrawn in time."""
        at = self.stopped_at or as_of
        if self.late_by(at) > ZERO:
            return "missed"
        if self.stop_reason == "withdrawn":
            return "not_applicable"
        return "met" if self.is_stopped else "pending"
