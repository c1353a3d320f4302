"""Relationship KPIs: how each side of an agreement is doing its part, computed from events alone.

One pure fold over an agreement's events (the agreements and queries events the service received,
plus its own report events) serves both uses: the live values (fold everything) and any past
period (fold the events before the period's end, count what completed within it). Per side:

* queries addressed to the side: response time to the first answer (p50/p90, in business seconds
  on the SLA calendar the query was raised under; wall-clock seconds when it had none), the share
  answered within the SLA (of the answered queries that had a target), breaches, and queries
  overdue and still unanswered (or unresolved) at the period's end;
* requirement clarification rounds (requested of the client, who documents requirements) and the
  requirements clarified;
* scope-change turnaround: request to decision (approval or rejection), counted for the side that
  requested the change — it includes the provider's assessment and the client's decision;
* KPI report acknowledgement delay (the client's) and reports still unacknowledged;
* status-update punctuality (the provider's): updates posted / (posted + overdue);
* process breakdowns reported by the side; breakdowns open at the period's end (the agreement's).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from business_time import business_time_between
from contracts import EventData
from contracts.agreements import (
    BreakdownReported,
    BreakdownResolved,
    CheckInHeld,
    RequirementClarificationRequested,
    RequirementClarified,
    ScopeChangeApproved,
    ScopeChangeRejected,
    ScopeChangeRequested,
    Sentiment,
    Side,
    StatusUpdateOverdue,
    StatusUpdatePosted,
)
from contracts.kpi import KPIReportAcknowledged, KPIReportPublished
from contracts.queries import QueryAnswered, QueryBreached, QueryClosed, QueryOverdue, QueryRaised, QueryWithdrawn

#: The event types the fold reads (the kpi service subscribes to the foreign ones).
FOLDED: tuple[type[EventData], ...] = (
    QueryRaised, QueryAnswered, QueryBreached, QueryOverdue, QueryClosed, QueryWithdrawn,
    RequirementClarificationRequested, RequirementClarified, ScopeChangeRequested, ScopeChangeApproved,
    ScopeChangeRejected, StatusUpdatePosted, StatusUpdateOverdue, BreakdownReported, BreakdownResolved,
    CheckInHeld, KPIReportPublished, KPIReportAcknowledged,
)
_OWN_TIME = ("raised_at", "answered_at", "closed_at", "withdrawn_at", "stopped_at", "posted_at",
             "acknowledged_at", "published_at")


@dataclass(frozen=True)
class Occurrence:
    """An event and when it happened."""

    at: datetime
    event: EventData


def occurred_at(envelope_time: datetime, data: EventData) -> datetime:
    """When the event happened: its own ``*_at`` if it carries one, else when it was recorded."""
    for name in _OWN_TIME:
        value = getattr(data, name, None)
        if isinstance(value, datetime):
            return value
    return envelope_time


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass
class SideKpis:
    queries_answered: int = 0
    query_response_p50_seconds: float | None = None
    query_response_p90_seconds: float | None = None
    answered_within_sla_share: float | None = None
    queries_breached: int = 0
    queries_overdue_open: int = 0
    clarification_rounds: int = 0
    requirements_clarified: int = 0
    scope_changes_decided: int = 0
    scope_change_turnaround_p50_seconds: float | None = None
    reports_acknowledged: int = 0
    report_ack_delay_p50_seconds: float | None = None
    reports_unacknowledged: int = 0
    status_updates_posted: int = 0
    status_updates_overdue: int = 0
    status_update_punctuality: float | None = None
    breakdowns_reported: int = 0


@dataclass(frozen=True)
class LatestCheckIn:
    held_on: str
    client_score: int
    provider_score: int
    client_sentiment: Sentiment
    provider_sentiment: Sentiment


@dataclass
class RelationshipKpis:
    period_start: datetime | None
    period_end: datetime | None
    client: SideKpis = field(default_factory=SideKpis)
    provider: SideKpis = field(default_factory=SideKpis)
    open_breakdowns: int = 0
    answered_with_sla_target: int = 0  # both sides together
    answered_on_time: int = 0
    latest_checkin: LatestCheckIn | None = None

    def side(self, side: Side) -> SideKpis:
        return self.client if side == "client" else self.provider

    def sla_attainment(self) -> float | None:
        """Share of answered queries (with a target) answered within SLA, both sides together."""
        total = self.answered_with_sla_target
        return self.answered_on_time / total if total else None

    def metric(self, name: str) -> float | None:
        """A value by name, ``<side>.<field>`` (e.g. ``provider.answered_within_sla_share``) or a
        field of the agreement (``open_breakdowns``): what KPIs computed by Accord measure."""
        side, _, key = name.rpartition(".")
        source: object = self.client if side == "client" else self.provider if side == "provider" else self
        value = getattr(source, key, None)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


METRICS: frozenset[str] = frozenset(
    [f"{side}.{name}" for side in ("client", "provider") for name in SideKpis.__dataclass_fields__]
    + ["open_breakdowns"])


@dataclass
class _Query:
    raised: QueryRaised
    raised_at: datetime
    answered_at: datetime | None = None
    closed: bool = False
    overdue: set[str] = field(default_factory=set)


@dataclass
class _Samples:
    response: dict[Side, list[float]] = field(default_factory=lambda: {"client": [], "provider": []})
    on_time: dict[Side, list[bool]] = field(default_factory=lambda: {"client": [], "provider": []})
    turnaround: dict[Side, list[float]] = field(default_factory=lambda: {"client": [], "provider": []})
    ack_delay: list[float] = field(default_factory=list)


def relationship_kpis(occurrences: Iterable[Occurrence], start: datetime | None = None,
                      end: datetime | None = None) -> RelationshipKpis:
    """Fold `occurrences` (any order) into the relationship KPIs of [start, end).

    Events at or after `end` are ignored; counts and samples only include what happened within
    the period; states (open breakdowns, overdue queries, the latest check-in) are as of `end`.
    """
    fold = RelationshipFold(start, end)
    fold.add(occurrences)
    return fold.kpis()


class RelationshipFold:
    """`relationship_kpis` as a fold that goes on: occurrences added later than all before them
    continue it, so the live values need not fold an agreement's whole history again."""

    def __init__(self, start: datetime | None = None, end: datetime | None = None) -> None:
        self._start, self._end = start, end
        self._result = RelationshipKpis(start, end)
        self._queries: dict[UUID, _Query] = {}
        self._scope: dict[UUID, tuple[Side, datetime]] = {}
        self._breakdowns: set[UUID] = set()
        self._reports: set[UUID] = set()
        self._samples = _Samples()
        self.last: datetime | None = None  # when the latest occurrence folded happened

    def add(self, occurrences: Iterable[Occurrence]) -> None:
        """Fold `occurrences` (any order among themselves, none earlier than `last`) in."""
        for o in sorted(occurrences, key=lambda o: o.at):
            if self.last is not None and o.at < self.last:
                raise ValueError(f"an occurrence at {o.at} is earlier than the last folded, {self.last}")
            if self._end is not None and o.at >= self._end:
                break
            inside = self._start is None or o.at >= self._start
            _fold(self._result, o, inside, self._queries, self._scope, self._breakdowns, self._reports,
                  self._samples)
            self.last = o.at

    def kpis(self) -> RelationshipKpis:
        """The KPIs of what was folded so far (the fold can go on)."""
        result, samples = copy.deepcopy(self._result), self._samples
        for query in self._queries.values():
            if not query.closed and (("first_response" in query.overdue and query.answered_at is None)
                                     or "resolution" in query.overdue):
                result.side(query.raised.addressed_to_side).queries_overdue_open += 1
        result.open_breakdowns = len(self._breakdowns)
        result.client.reports_unacknowledged = len(self._reports)
        sides: tuple[Side, Side] = ("client", "provider")
        for side in sides:
            kpis = result.side(side)
            kpis.query_response_p50_seconds = percentile(samples.response[side], 0.5)
            kpis.query_response_p90_seconds = percentile(samples.response[side], 0.9)
            on_time = samples.on_time[side]
            kpis.answered_within_sla_share = sum(on_time) / len(on_time) if on_time else None
            kpis.scope_change_turnaround_p50_seconds = percentile(samples.turnaround[side], 0.5)
            total = kpis.status_updates_posted + kpis.status_updates_overdue
            kpis.status_update_punctuality = kpis.status_updates_posted / total if total else None
        result.client.report_ack_delay_p50_seconds = percentile(samples.ack_delay, 0.5)
        every = samples.on_time["client"] + samples.on_time["provider"]
        result.answered_with_sla_target, result.answered_on_time = len(every), sum(every)
        return result


def _fold(result: RelationshipKpis, o: Occurrence, inside: bool, queries: dict[UUID, _Query],
          scope: dict[UUID, tuple[Side, datetime]], breakdowns: set[UUID], reports: set[UUID],
          samples: _Samples) -> None:
    match o.event:
        case QueryRaised() as e:
            queries[e.query_id] = _Query(e, e.raised_at or o.at)
        case QueryAnswered() as e:
            query = queries.get(e.query_id)
            if query is None or query.answered_at is not None:
                return  # raised before our history began, or answered again after a reopening
            query.answered_at = o.at
            side = query.raised.addressed_to_side
            if inside:
                result.side(side).queries_answered += 1
                samples.response[side].append(_response_seconds(query, o.at))
                if query.raised.sla_target is not None:
                    samples.on_time[side].append(e.late_by_seconds == 0)
        case QueryBreached() as e:
            if inside:
                result.side(e.addressed_to_side).queries_breached += 1
        case QueryOverdue() as e:
            if e.query_id in queries:
                queries[e.query_id].overdue.add(e.clock)
        case QueryClosed() | QueryWithdrawn() as e:
            if e.query_id in queries:
                queries[e.query_id].closed = True
        case RequirementClarificationRequested():
            if inside:
                result.client.clarification_rounds += 1
        case RequirementClarified():
            if inside:
                result.client.requirements_clarified += 1
        case ScopeChangeRequested() as e:
            scope[e.change_id] = (e.requested_by_side, o.at)
        case ScopeChangeApproved() | ScopeChangeRejected() as e:
            requested = scope.pop(e.change_id, None)
            if requested is not None and inside:
                side, at = requested
                result.side(side).scope_changes_decided += 1
                samples.turnaround[side].append((o.at - at).total_seconds())
        case StatusUpdatePosted():
            if inside:
                result.provider.status_updates_posted += 1
        case StatusUpdateOverdue():
            if inside:
                result.provider.status_updates_overdue += 1
        case BreakdownReported() as e:
            breakdowns.add(e.breakdown_id)
            if inside:
                result.side(e.reported_by_side).breakdowns_reported += 1
        case BreakdownResolved() as e:
            breakdowns.discard(e.breakdown_id)
        case CheckInHeld() as e:
            result.latest_checkin = LatestCheckIn(e.held_on.isoformat(), e.client_score, e.provider_score,
                                                  e.client_sentiment, e.provider_sentiment)
        case KPIReportPublished() as e:
            reports.add(e.report_id)
        case KPIReportAcknowledged() as e:
            reports.discard(e.report_id)
            if inside:
                result.client.reports_acknowledged += 1
                samples.ack_delay.append(float(e.delay_seconds))


def _response_seconds(query: _Query, answered_at: datetime) -> float:
    calendar = query.raised.sla_calendar
    if calendar is None:
        return max(0.0, (answered_at - query.raised_at).total_seconds())
    if answered_at <= query.raised_at:
        return 0.0
    spent: timedelta = business_time_between(query.raised_at, answered_at, calendar)
    return spent.total_seconds()
