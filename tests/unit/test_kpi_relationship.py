"""Relationship KPIs folded from events: per side, live and for a past period."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.agreements import (
    BreakdownReported,
    BreakdownResolved,
    CheckInHeld,
    RequirementClarificationRequested,
    ScopeChangeApproved,
    ScopeChangeRequested,
    StatusUpdateOverdue,
    StatusUpdatePosted,
)
from contracts.kpi import KPIReportAcknowledged, KPIReportPublished
from contracts.queries import QueryAnswered, QueryClosed, QueryOverdue, QueryRaised
from contracts.sla import BusinessCalendar, ResponseTarget, WorkingPeriod
from services.kpi.relationship import METRICS, Occurrence, RelationshipFold, percentile, relationship_kpis

A = uuid.uuid4()
MONDAY = datetime(2026, 3, 2, 9, tzinfo=UTC)
CALENDAR = BusinessCalendar(timezone="UTC", working_periods=[
    WorkingPeriod(weekday=d, start=time(9), end=time(17)) for d in range(5)])
TARGET = ResponseTarget(priority="normal", first_response_minutes=240, resolution_minutes=2400)


def raised(at: datetime, to: str = "provider", calendar: bool = True) -> tuple[uuid.UUID, Occurrence]:
    query_id = uuid.uuid4()
    event = QueryRaised(query_id=query_id, agreement_id=A, raised_by_side="client" if to == "provider" else "provider",
                        addressed_to_side=to, priority="normal", subject="s", body="b", raised_at=at,  # type: ignore[arg-type]
                        sla_calendar=CALENDAR if calendar else None, sla_target=TARGET if calendar else None)
    return query_id, Occurrence(at, event)


def answered(query_id: uuid.UUID, at: datetime, late: int = 0, by: str = "provider") -> Occurrence:
    return Occurrence(at, QueryAnswered(query_id=query_id, agreement_id=A, answered_by_side=by, answer="a",  # type: ignore[arg-type]
                                        late_by_seconds=late, answered_at=at))


def test_query_response_times_are_business_time_per_side() -> None:
    events = []
    for hours in (1, 2, 3, 10):  # the 10-hour answer comes Tuesday 11:00: 10 business hours later
        query_id, raise_ = raised(MONDAY)
        answer_at = MONDAY + timedelta(hours=hours) if hours < 8 else MONDAY + timedelta(days=1, hours=2)
        events += [raise_, answered(query_id, answer_at, late=0 if hours < 4 else 6 * 3600)]
    query_id, raise_ = raised(MONDAY, to="client", calendar=False)
    events += [raise_, answered(query_id, MONDAY + timedelta(minutes=30), by="client")]
    kpis = relationship_kpis(events)
    assert kpis.provider.queries_answered == 4
    assert kpis.provider.query_response_p50_seconds == 2 * 3600
    assert kpis.provider.query_response_p90_seconds == 10 * 3600
    assert kpis.provider.answered_within_sla_share == 0.75
    assert kpis.client.query_response_p50_seconds == 1800 and kpis.client.answered_within_sla_share is None
    assert kpis.sla_attainment() == 0.75


def test_overdue_queries_are_open_until_answered() -> None:
    query_id, raise_ = raised(MONDAY)
    overdue = Occurrence(MONDAY + timedelta(hours=4), QueryOverdue(
        query_id=query_id, agreement_id=A, clock="first_response", priority="normal", addressed_to_side="provider",
        due_at=MONDAY + timedelta(hours=4)))
    assert relationship_kpis([raise_, overdue]).provider.queries_overdue_open == 1
    assert relationship_kpis([raise_, overdue, answered(query_id, MONDAY + timedelta(hours=5), late=3600)]
                             ).provider.queries_overdue_open == 0


def test_the_other_relationship_kpis_and_a_past_period() -> None:
    change, breakdown, report = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    day = timedelta(days=1)
    events = [
        Occurrence(MONDAY, ScopeChangeRequested(agreement_id=A, change_id=change, requested_by_side="client",
                                                title="t", what="w", why="y")),
        Occurrence(MONDAY + 2 * day, ScopeChangeApproved(agreement_id=A, change_id=change)),
        Occurrence(MONDAY, RequirementClarificationRequested(agreement_id=A, requirement_id=uuid.uuid4(),
                                                             query_id=uuid.uuid4(), question="q")),
        Occurrence(MONDAY, StatusUpdatePosted(agreement_id=A, update_id=uuid.uuid4(), summary="s", posted_at=MONDAY)),
        Occurrence(MONDAY + 8 * day, StatusUpdateOverdue(agreement_id=A, due_at=MONDAY + 8 * day,
                                                         cadence_seconds=604800)),
        Occurrence(MONDAY, BreakdownReported(agreement_id=A, breakdown_id=breakdown, procedure_id=uuid.uuid4(),
                                             step_id=uuid.uuid4(), reported_by_side="provider", what_broke="w",
                                             impact="i")),
        Occurrence(MONDAY + 9 * day, BreakdownResolved(agreement_id=A, breakdown_id=breakdown,
                                                       resolved_by_side="client", fix="f")),
        Occurrence(MONDAY, KPIReportPublished(agreement_id=A, report_id=report, title="t", period_start=MONDAY,
                                              period_end=MONDAY + day, narrative="n", kpis=[], published_at=MONDAY,
                                              review_due_at=MONDAY + day)),
        Occurrence(MONDAY + 3 * day, KPIReportAcknowledged(agreement_id=A, report_id=report,
                                                           acknowledged_at=MONDAY + 3 * day,
                                                           delay_seconds=3 * 86400, late=True)),
        Occurrence(MONDAY, CheckInHeld(agreement_id=A, checkin_id=uuid.uuid4(), held_on=date(2026, 3, 2),
                                       client_score=4, provider_score=6, client_sentiment="negative",
                                       provider_sentiment="neutral")),
    ]
    now = relationship_kpis(events)
    assert (now.client.scope_changes_decided, now.client.scope_change_turnaround_p50_seconds) == (1, 2 * 86400)
    assert now.client.clarification_rounds == 1
    assert (now.provider.status_updates_posted, now.provider.status_updates_overdue) == (1, 1)
    assert now.provider.status_update_punctuality == 0.5
    assert now.provider.breakdowns_reported == 1 and now.open_breakdowns == 0
    assert now.client.report_ack_delay_p50_seconds == 3 * 86400 and now.client.reports_unacknowledged == 0
    assert now.latest_checkin is not None and now.latest_checkin.client_score == 4

    first_day = relationship_kpis(events, MONDAY, MONDAY + day)  # the first day only, as of its end
    assert first_day.open_breakdowns == 1 and first_day.client.reports_unacknowledged == 1
    assert first_day.client.scope_changes_decided == 0 and first_day.provider.status_updates_overdue == 0
    later = relationship_kpis(events, MONDAY + day, MONDAY + 10 * day)
    assert later.provider.breakdowns_reported == 0 and later.provider.status_updates_overdue == 1
    assert later.client.scope_changes_decided == 1
    assert now.metric("provider.status_update_punctuality") == 0.5 and now.metric("open_breakdowns") == 0
    assert now.metric("client.nonsense") is None and "provider.answered_within_sla_share" in METRICS


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5, 1, 3], 0.5) == 3 and percentile(list(range(1, 11)), 0.9) == 9


def _history(kinds: list[int]) -> list[Occurrence]:
    """Queries raised, answered (on time or late), overdue, closed, and breakdowns reported and
    resolved, one every ten minutes, chosen by `kinds`."""
    occurrences: list[Occurrence] = []
    open_queries: list[uuid.UUID] = []
    breakdowns: list[uuid.UUID] = []
    for n, kind in enumerate(kinds):
        at = MONDAY + timedelta(minutes=10 * n)
        if kind == 0 or not open_queries:
            query_id, raise_ = raised(at, to="provider" if n % 3 else "client", calendar=bool(n % 2))
            open_queries.append(query_id)
            occurrences.append(raise_)
        elif kind == 1:
            occurrences.append(answered(open_queries[0], at, late=600 * (n % 2), by="provider"))
        elif kind == 2:
            occurrences.append(Occurrence(at, QueryOverdue(
                query_id=open_queries[-1], agreement_id=A, clock="first_response", priority="normal",
                addressed_to_side="provider", due_at=at)))
        elif kind == 3:
            occurrences.append(Occurrence(at, QueryClosed(query_id=open_queries.pop(0), agreement_id=A,
                                                          closed_by_side="client", closed_at=at)))
        elif kind == 4:
            breakdowns.append(uuid.uuid4())
            occurrences.append(Occurrence(at, BreakdownReported(
                agreement_id=A, breakdown_id=breakdowns[-1], procedure_id=A, step_id=A, reported_by_side="client",
                what_broke="w", impact="i")))
        elif breakdowns:
            occurrences.append(Occurrence(at, BreakdownResolved(agreement_id=A, breakdown_id=breakdowns.pop(),
                                                                resolved_by_side="provider", fix="f")))
    return occurrences


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=60), st.lists(st.integers(1, 10), max_size=8))
def test_a_fold_continued_in_time_order_equals_one_fold_of_everything(kinds: list[int], cuts: list[int]) -> None:
    occurrences = _history(kinds)
    fold, at = RelationshipFold(), 0
    for cut in [*cuts, len(occurrences)]:  # folded in chunks, the KPIs read between them
        chunk, at = occurrences[at:at + cut], at + cut
        fold.add(reversed(chunk))  # any order within a chunk
        assert fold.kpis() == relationship_kpis(occurrences[:at])
        if at >= len(occurrences):
            break
    assert fold.kpis() == relationship_kpis(occurrences)
    with pytest.raises(ValueError, match="earlier than the last folded"):
        fold.add([Occurrence(MONDAY - timedelta(days=1), occurrences[0].event)])
