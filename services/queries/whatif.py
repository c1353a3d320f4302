"""What-if: how an agreement's past queries would have fared under a proposed SLA policy.

Each query's history is replayed twice: as recorded (under the terms in force when it was raised)
and with the proposed policy's calendar and target for its priority put in the place of those terms.
The instants of raising, pausing, answering and closing stay as they happened; only the due times and
the verdicts move. Pure: the caller loads the histories.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from contracts import EventData
from contracts.queries import QueryRaised
from contracts.sla import PRIORITIES, Priority, SLAPolicy
from services.queries.clock import Outcome
from services.queries.domain import Query


@dataclass(frozen=True)
class Verdict:
    """A query's outcome on each clock, and overall: missed if either clock missed, pending if
    either is still running in time, met if a clock was met, otherwise not applicable."""

    first_response: Outcome
    resolution: Outcome

    @property
    def overall(self) -> Outcome:
        clocks = (self.first_response, self.resolution)
        if "missed" in clocks:
            return "missed"
        if "pending" in clocks:
            return "pending"
        return "met" if "met" in clocks else "not_applicable"


@dataclass(frozen=True)
class ChangedQuery:
    query_id: UUID
    priority: Priority
    current: Verdict
    proposed: Verdict


@dataclass(frozen=True)
class PriorityComparison:
    priority: Priority
    count: int
    current_met: int
    current_missed: int
    proposed_met: int
    proposed_missed: int
    changed: tuple[ChangedQuery, ...]  # the queries whose overall outcome differs


@dataclass(frozen=True)
class WhatIfReport:
    as_of: datetime
    priorities: tuple[PriorityComparison, ...]  # in PRIORITIES order, only those with queries

    @property
    def changed(self) -> tuple[ChangedQuery, ...]:
        return tuple(change for comparison in self.priorities for change in comparison.changed)


def judge(query: Query, as_of: datetime) -> Verdict:
    """The query's verdict as of `as_of` (which decides clocks still running)."""
    first, resolution = (query.clocks.get(name) for name in ("first_response", "resolution"))
    return Verdict(first.outcome(as_of) if first else "not_applicable",
                   resolution.outcome(as_of) if resolution else "not_applicable")


def replay_under(history: Sequence[EventData], policy: SLAPolicy | None) -> Query:
    """Replay a query's history with `policy`'s terms in place of those it was raised under
    (None: as recorded)."""
    raised = history[0] if history else None
    if not isinstance(raised, QueryRaised):
        raise ValueError("a query's history starts with QueryRaised")
    if policy is not None:
        target = policy.target(raised.priority)
        raised = raised.model_copy(update={"sla_calendar": policy.calendar if target else None,
                                           "sla_target": target})
    return Query.replay(raised.query_id, [raised, *history[1:]])


def what_if(histories: Iterable[Sequence[EventData]], proposed: SLAPolicy, as_of: datetime) -> WhatIfReport:
    """Compare each query's verdict under its own terms with its verdict under `proposed`."""
    verdicts: dict[Priority, list[tuple[UUID, Verdict, Verdict]]] = {}
    for history in histories:
        current = replay_under(history, None)
        verdicts.setdefault(current.priority, []).append(
            (current.query_id, judge(current, as_of), judge(replay_under(history, proposed), as_of)))
    comparisons = []
    for priority in PRIORITIES:
        rows = verdicts.get(priority, [])
        if not rows:
            continue
        comparisons.append(PriorityComparison(
            priority=priority, count=len(rows),
            current_met=sum(now.overall == "met" for _, now, _ in rows),
            current_missed=sum(now.overall == "missed" for _, now, _ in rows),
            proposed_met=sum(then.overall == "met" for _, _, then in rows),
            proposed_missed=sum(then.overall == "missed" for _, _, then in rows),
            changed=tuple(ChangedQuery(query_id, priority, now, then)
                          for query_id, now, then in rows if now.overall != then.overall)))
    return WhatIfReport(as_of, tuple(comparisons))
