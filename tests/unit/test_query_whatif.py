"""What-if: past queries replayed under a proposed SLA policy, compared per priority."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time

import pytest

from contracts import EventData
from contracts.queries import QueryRaised
from contracts.sla import BusinessCalendar, Priority, ResponseTarget, SLAPolicy, WorkingPeriod
from services.queries.domain import Query
from services.queries.whatif import Verdict, judge, replay_under, what_if
from tests.unit.test_query_domain import AGREEMENT, CALENDAR, CLIENT, POLICY, PROVIDER, at

AS_OF = at(30, 12)


def query_id(events: list[EventData]) -> uuid.UUID:
    raised = events[0]
    assert isinstance(raised, QueryRaised)
    return raised.query_id


def policy(first_response_minutes: int, resolution_minutes: int = 24 * 60, calendar: BusinessCalendar = CALENDAR,
           priority: Priority = "normal") -> SLAPolicy:
    return SLAPolicy(calendar=calendar, targets=[ResponseTarget(
        priority=priority, first_response_minutes=first_response_minutes, resolution_minutes=resolution_minutes)])


def history(raised_at: datetime, answered_at: datetime | None = None, closed_at: datetime | None = None, *,
            priority: Priority = "normal", terms: SLAPolicy = POLICY, withdrawn_at: datetime | None = None,
            ) -> list[EventData]:
    query = Query(uuid.uuid4())
    query.raise_query(agreement_id=AGREEMENT, client_organisation_id=CLIENT, provider_organisation_id=PROVIDER,
                      by_organisation_id=CLIENT, priority=priority, subject="s", body="b", policy=terms, at=raised_at)
    if answered_at:
        query.answer(by_organisation_id=PROVIDER, answer="a", at=answered_at)
    if closed_at:
        query.close(by_organisation_id=CLIENT, at=closed_at)
    if withdrawn_at:
        query.withdraw(by_organisation_id=CLIENT, at=withdrawn_at)
    return query.pending


def test_tighter_and_looser_targets_move_the_verdicts() -> None:
    in_three_hours = history(at(7, 10), at(7, 14), at(7, 16))  # 10-12, 13-14
    in_one_hour = history(at(8, 10), at(8, 11), at(8, 12))
    in_six_hours = history(at(9, 10), at(9, 17), at(10, 9))
    histories = [in_three_hours, in_one_hour, in_six_hours]

    tighter = what_if(histories, policy(first_response_minutes=120), AS_OF)
    [normal] = tighter.priorities
    assert (normal.priority, normal.count) == ("normal", 3)
    assert (normal.current_met, normal.current_missed) == (2, 1)
    assert (normal.proposed_met, normal.proposed_missed) == (1, 2)
    [change] = normal.changed
    assert change.query_id == query_id(in_three_hours)
    assert change.current == Verdict("met", "met") and change.proposed == Verdict("missed", "met")

    looser = what_if(histories, policy(first_response_minutes=6 * 60), AS_OF)
    assert (looser.priorities[0].proposed_met, looser.priorities[0].proposed_missed) == (3, 0)
    assert [c.query_id for c in looser.changed] == [query_id(in_six_hours)]


def test_a_proposed_calendar_counts_too() -> None:
    # Answered on Monday 14 April at 10:00, four business hours after Friday 11 April 15:00...
    late_friday = history(at(11, 15), at(14, 10), at(14, 11))
    assert judge(replay_under(late_friday, None), AS_OF) == Verdict("met", "met")
    # ...but seven under a calendar that also works Saturdays 09-12.
    saturdays = CALENDAR.model_copy(update={"working_periods": [
        *CALENDAR.working_periods, WorkingPeriod(weekday=5, start=time(9), end=time(12))]})
    report = what_if([late_friday], policy(4 * 60, calendar=saturdays), AS_OF)
    assert report.changed[0].proposed == Verdict("missed", "met")
    # A holiday on that Monday, the other way round: only Friday's two hours count.
    monday_off = CALENDAR.model_copy(update={"holidays": [date(2025, 4, 14)]})
    assert what_if([late_friday], policy(4 * 60, calendar=monday_off), AS_OF).changed == ()


def test_running_withdrawn_and_untargeted_queries() -> None:
    open_in_time = history(at(30, 9))  # as of 12:00, three business hours of four
    open_overdue = history(at(29, 9))
    withdrawn = history(at(28, 9), withdrawn_at=at(28, 10))
    urgent = history(at(28, 9), at(28, 10), at(28, 11), priority="urgent", terms=policy(60, priority="urgent"))
    report = what_if([open_in_time, open_overdue, withdrawn, urgent], policy(4 * 60), AS_OF)
    normal, urgent_row = report.priorities
    assert (normal.count, normal.current_met, normal.current_missed) == (3, 0, 1)  # one pending, one withdrawn
    assert judge(replay_under(open_in_time, None), AS_OF) == Verdict("pending", "pending")
    assert judge(replay_under(withdrawn, None), AS_OF) == Verdict("not_applicable", "not_applicable")
    # The proposed policy has no urgent target: that query would have had no clocks.
    assert (urgent_row.current_met, urgent_row.proposed_met) == (1, 0)
    assert urgent_row.changed[0].proposed == Verdict("not_applicable", "not_applicable")


def test_the_current_verdict_agrees_with_the_recorded_breaches() -> None:
    histories = [history(at(7, 10), at(8, 10), at(8, 11)), history(at(9, 10), at(9, 11), at(9, 12))]
    for events in histories:
        query = replay_under(events, None)
        verdict = judge(query, AS_OF)
        assert (verdict.first_response == "missed") == any(b.clock == "first_response" for b in query.breaches)


def test_a_history_must_start_with_the_raise() -> None:
    with pytest.raises(ValueError, match="starts with QueryRaised"):
        replay_under(history(at(7, 10), at(7, 11))[1:], None)
