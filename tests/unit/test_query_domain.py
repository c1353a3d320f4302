"""The query aggregate: its lifecycle rules, SLA clocks (pauses, warnings, breaches), the
policy-in-force rule, and that replaying its events rebuilds its state."""

from __future__ import annotations

import json
import uuid
from copy import deepcopy
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import hypothesis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from business_time import business_time_between
from contracts import REGISTRY, EventData
from contracts.queries import (
    QueryAnswered,
    QueryAtRisk,
    QueryBreached,
    QueryInformationProvided,
    QueryOverdue,
    QueryRaised,
    QueryReopened,
)
from contracts.sla import BusinessCalendar, Priority, ResponseTarget, SLAPolicy, WorkingPeriod
from services.queries.clock import CLOCKS, Deadline
from services.queries.domain import (
    ANSWERED_PAUSE_REASON,
    InvalidCommand,
    InvalidTransition,
    NotAParty,
    Query,
    WrongSide,
)
from services.queries.policy import policy_in_force

BERLIN = ZoneInfo("Europe/Berlin")
CLIENT, PROVIDER, STRANGER = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
AGREEMENT = uuid.uuid4()
HOUR = timedelta(hours=1)

# Monday to Friday, 09:00-12:00 and 13:00-17:00 in Berlin: seven business hours a day.
CALENDAR = BusinessCalendar(timezone="Europe/Berlin", holidays=[date(2025, 4, 18)], working_periods=[
    WorkingPeriod(weekday=day, start=start, end=end)
    for day in range(5) for start, end in ((time(9), time(12)), (time(13), time(17)))])
NORMAL = ResponseTarget(priority="normal", first_response_minutes=4 * 60, resolution_minutes=24 * 60)
POLICY = SLAPolicy(calendar=CALENDAR, targets=[NORMAL])


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """Days of April 2025 in Berlin: the 7th is a Monday."""
    return datetime(2025, 4, day, hour, minute, tzinfo=BERLIN)


MONDAY_10 = at(7, 10)


def raised(when: datetime = MONDAY_10, policy: SLAPolicy | None = POLICY, priority: Priority = "normal") -> Query:
    query = Query(uuid.uuid4())
    query.raise_query(agreement_id=AGREEMENT, client_organisation_id=CLIENT, provider_organisation_id=PROVIDER,
                      by_organisation_id=CLIENT, priority=priority, subject="Invoices", body="Where is March's?",
                      policy=policy, at=when)
    return query


def names(events: list[EventData]) -> list[str]:
    return [type(event).__name__ for event in events]


def same_instant(a: datetime | None, b: datetime | None) -> bool:
    return a is not None and b is not None and a.astimezone(UTC) == b.astimezone(UTC)


# --- lifecycle --------------------------------------------------------------------------------------


def test_raise_answer_close() -> None:
    query = raised()
    query.comment(by_organisation_id=PROVIDER, body="Looking into it", at=at(7, 11))
    query.answer(by_organisation_id=PROVIDER, answer="Sent today", at=at(7, 14))
    query.close(by_organisation_id=CLIENT, at=at(8, 9))
    assert query.status == "closed"
    assert names(query.pending) == ["QueryRaised", "QueryCommented", "QueryAnswered", "QueryClosed"]
    assert [entry.kind for entry in query.thread] == ["question", "comment", "answer"]
    assert query.asker == "client" and query.responder == "provider"
    assert query.breaches == []


def test_reopen_then_answer_again() -> None:
    query = raised()
    query.answer(by_organisation_id=PROVIDER, answer="Sent", at=at(7, 11))
    query.reopen(by_organisation_id=CLIENT, reason="Not received", at=at(7, 14))
    assert query.status == "open"
    query.answer(by_organisation_id=PROVIDER, answer="Resent", at=at(7, 15))
    query.close(by_organisation_id=CLIENT, at=at(7, 16))
    assert names(query.pending)[1:] == ["QueryAnswered", "QueryReopened", "QueryAnswered", "QueryClosed"]
    assert query.answers == 2


@pytest.mark.parametrize(("command", "error", "message"), [
    (lambda q: q.close(by_organisation_id=CLIENT, at=MONDAY_10), InvalidTransition, "cannot close the query: it is"),
    (lambda q: q.reopen(by_organisation_id=CLIENT, reason="x", at=MONDAY_10), InvalidTransition, "reopen"),
    (lambda q: q.provide_information(by_organisation_id=CLIENT, body="x", at=MONDAY_10), InvalidTransition,
     "provide information"),
    (lambda q: q.answer(by_organisation_id=CLIENT, answer="x", at=MONDAY_10), WrongSide, "answering side"),
    (lambda q: q.request_information(by_organisation_id=CLIENT, reason="x", at=MONDAY_10), WrongSide,
     "answering side"),
    (lambda q: q.withdraw(by_organisation_id=PROVIDER, at=MONDAY_10), WrongSide, "asking side"),
    (lambda q: q.comment(by_organisation_id=STRANGER, body="x", at=MONDAY_10), NotAParty, "not a party"),
    (lambda q: q.raise_query(agreement_id=AGREEMENT, client_organisation_id=CLIENT,
                             provider_organisation_id=PROVIDER, by_organisation_id=CLIENT, priority="normal",
                             subject="s", body="b", policy=POLICY, at=MONDAY_10), InvalidTransition, "already"),
    (lambda q: q.comment(by_organisation_id=CLIENT, body="   ", at=MONDAY_10), InvalidCommand, "body"),
    (lambda q: q.comment(by_organisation_id=CLIENT, body="x", at=datetime(2025, 4, 7)), InvalidCommand, "aware"),
])
def test_rules_are_enforced_and_leave_no_trace(command: object, error: type[Exception], message: str) -> None:
    query = raised()
    before = deepcopy(query)
    with pytest.raises(error, match=message):
        command(query)  # type: ignore[operator]
    assert query == before and query.pending == before.pending


def test_finished_queries_take_nothing_more() -> None:
    closed = raised()
    closed.answer(by_organisation_id=PROVIDER, answer="a", at=at(7, 11))
    closed.close(by_organisation_id=CLIENT, at=at(7, 12))
    with pytest.raises(InvalidTransition, match="it is closed"):
        closed.comment(by_organisation_id=CLIENT, body="thanks", at=at(7, 13))
    with pytest.raises(InvalidTransition, match="it is closed"):
        closed.withdraw(by_organisation_id=CLIENT, at=at(7, 13))
    withdrawn = raised()
    withdrawn.withdraw(by_organisation_id=CLIENT, at=at(7, 11), reason="Found it")
    with pytest.raises(InvalidTransition, match="it is withdrawn"):
        withdrawn.answer(by_organisation_id=PROVIDER, answer="a", at=at(7, 12))
    with pytest.raises(InvalidTransition, match="does not exist"):
        Query(uuid.uuid4()).comment(by_organisation_id=CLIENT, body="x", at=MONDAY_10)


def test_the_provider_can_ask_too() -> None:
    query = Query(uuid.uuid4())
    query.raise_query(agreement_id=AGREEMENT, client_organisation_id=CLIENT, provider_organisation_id=PROVIDER,
                      by_organisation_id=PROVIDER, priority="normal", subject="Access", body="VPN details?",
                      policy=POLICY, at=MONDAY_10, addressee_role="IT")
    assert (query.asker, query.responder, query.addressee_role) == ("provider", "client", "IT")
    query.answer(by_organisation_id=CLIENT, answer="Sent", at=at(7, 11))
    with pytest.raises(WrongSide):
        query.close(by_organisation_id=CLIENT, at=at(7, 12))


# --- due times, pauses and breaches -----------------------------------------------------------------


def test_due_times_count_business_time_around_the_lunch_break() -> None:
    query = raised()
    event = query.pending[0]
    assert isinstance(event, QueryRaised)
    assert event.first_response_due_at == at(7, 15)  # 10-12 and 13-15
    assert event.resolution_due_at == at(10, 14)  # 24 h: 6 on Monday, 7 + 7, then 09-12 and 13-14 on Thursday
    assert query.due_at("first_response") == at(7, 15)
    assert query.terms is not None and query.terms.target == NORMAL


def test_an_information_request_pauses_both_clocks_and_shifts_them_by_business_time() -> None:
    query = raised()
    query.request_information(by_organisation_id=PROVIDER, reason="Which customer number?", at=at(7, 11))
    assert query.status == "awaiting_information"
    assert query.due_at("first_response") is None and query.deadlines() == []
    query.comment(by_organisation_id=CLIENT, body="Checking", at=at(7, 16))  # a comment does not resume
    assert query.status == "awaiting_information"
    query.provide_information(by_organisation_id=CLIENT, body="4711", at=at(8, 11))
    provided = query.pending[-1]
    assert isinstance(provided, QueryInformationProvided)
    # Paused Monday 11-12, 13-17 and Tuesday 09-11: seven business hours; three were left.
    assert provided.paused_business_seconds == 7 * 3600
    assert provided.first_response_due_at == at(8, 15)
    assert provided.resolution_due_at == at(11, 14)  # Thursday is the 10th; Good Friday the 18th is later
    [pause] = query.pauses
    assert (pause.kind, pause.reason, pause.actor_side, pause.clocks) == (
        "information_requested", "Which customer number?", "provider", ("first_response", "resolution"))
    assert (pause.started_at, pause.ended_at) == (at(7, 11), at(8, 11))
    assert pause.business_duration == 7 * HOUR and pause.duration == 24 * HOUR


def test_a_pause_over_the_weekend_and_a_holiday_costs_only_business_time() -> None:
    query = raised(at(17, 16))  # Thursday before Good Friday (the 18th)
    query.request_information(by_organisation_id=PROVIDER, reason="Which?", at=at(17, 16, 30))
    query.provide_information(by_organisation_id=CLIENT, body="This", at=at(21, 9, 30))
    assert query.pauses[0].business_duration == timedelta(minutes=60)  # 16:30-17:00 and Monday 09:00-09:30
    # 30 minutes ran before the pause; 3.5 hours remain from Monday 09:30.
    assert query.due_at("first_response") == at(21, 14)


def test_a_late_first_answer_is_a_breach_in_business_seconds() -> None:
    query = raised()
    query.answer(by_organisation_id=PROVIDER, answer="Sorry", at=at(8, 10))
    answered, breach = query.pending[-2:]
    assert isinstance(answered, QueryAnswered) and isinstance(breach, QueryBreached)
    # Ran Monday 10-12, 13-17 and Tuesday 09-10: seven hours against four.
    assert answered.late_by_seconds == breach.late_by_seconds == 3 * 3600
    assert (breach.clock, breach.due_at, breach.stopped_at) == ("first_response", at(7, 15), at(8, 10))
    assert query.breaches == [breach]


def test_a_pause_after_the_due_time_does_not_move_it() -> None:
    query = raised()
    query.request_information(by_organisation_id=PROVIDER, reason="?", at=at(7, 16))  # an hour overdue
    query.provide_information(by_organisation_id=CLIENT, body="!", at=at(8, 16))
    query.answer(by_organisation_id=PROVIDER, answer="a", at=at(8, 16, 30))
    breach = query.pending[-1]
    assert isinstance(breach, QueryBreached)
    assert breach.due_at == at(7, 15) and breach.late_by_seconds == 90 * 60


def test_an_answer_pauses_resolution_until_the_asker_reopens() -> None:
    query = raised()
    query.answer(by_organisation_id=PROVIDER, answer="a", at=at(7, 11))
    assert query.clocks["first_response"].stop_reason == "answered"
    assert query.due_at("resolution") is None and query.pauses[-1].reason == ANSWERED_PAUSE_REASON
    query.reopen(by_organisation_id=CLIENT, reason="Wrong file", at=at(8, 11))
    reopened = query.pending[-1]
    assert isinstance(reopened, QueryReopened)
    assert reopened.resolution_due_at == at(11, 14)  # seven business hours later than at the raise
    # The asker taking a week to close is not the responder's lateness.
    query.answer(by_organisation_id=PROVIDER, answer="b", at=at(8, 12))
    query.close(by_organisation_id=CLIENT, at=at(16, 9))
    assert query.breaches == []
    assert query.clocks["resolution"].elapsed(at(30, 9)) == 2 * HOUR


def test_closing_after_a_late_resolution_records_the_breach() -> None:
    query = raised()
    query.answer(by_organisation_id=PROVIDER, answer="a", at=at(7, 11))
    query.reopen(by_organisation_id=CLIENT, reason="No", at=at(7, 11))
    query.answer(by_organisation_id=PROVIDER, answer="b", at=at(11, 10))  # resolution was due Thursday 14:00
    query.close(by_organisation_id=CLIENT, at=at(14, 9))
    breach = query.pending[-1]
    assert isinstance(breach, QueryBreached)
    # Thursday 14-17 and Friday 09-10 (the 11th is a working day): four hours late.
    assert (breach.clock, breach.late_by_seconds, breach.due_at) == ("resolution", 4 * 3600, at(10, 14))


def test_withdrawing_stops_the_clocks_and_keeps_an_overrun_as_a_breach() -> None:
    in_time = raised()
    in_time.request_information(by_organisation_id=PROVIDER, reason="?", at=at(7, 11))
    in_time.withdraw(by_organisation_id=CLIENT, at=at(7, 12))
    assert in_time.breaches == [] and all(c.stop_reason == "withdrawn" for c in in_time.clocks.values())
    assert in_time.pauses[-1].ended_at == at(7, 12)
    overrun = raised()
    overrun.withdraw(by_organisation_id=CLIENT, at=at(8, 10), reason="Too slow")
    assert [(b.clock, b.late_by_seconds) for b in overrun.breaches] == [("first_response", 3 * 3600)]


# --- warning points ---------------------------------------------------------------------------------


def test_deadlines_cover_every_warning_point_and_due_time() -> None:
    query = raised()
    assert [(d.clock, d.threshold, d.at) for d in query.deadlines()] == [
        ("first_response", 0.5, at(7, 12)),  # two business hours: the morning ends exactly then
        ("first_response", 0.75, at(7, 14)),
        ("first_response", 1.0, at(7, 15)),
        ("resolution", 0.5, at(8, 16)),
        ("resolution", 0.75, at(9, 15)),
        ("resolution", 1.0, at(10, 14)),
    ]
    assert query.next_deadline() == Deadline(at(7, 12), "first_response", 0.5)


def test_check_clocks_announces_the_highest_point_reached_once() -> None:
    query = raised()
    query.check_clocks(at(7, 11))
    assert names(query.pending) == ["QueryRaised"]
    query.check_clocks(at(7, 12, 30))
    at_risk = query.pending[-1]
    assert isinstance(at_risk, QueryAtRisk)
    assert (at_risk.clock, at_risk.threshold, at_risk.due_at, at_risk.addressed_to_side) == (
        "first_response", 0.5, at(7, 15), "provider")
    query.check_clocks(at(7, 12, 30))
    assert len(query.pending) == 2  # idempotent
    query.check_clocks(at(7, 16))  # the timer for 0.75 was missed: only the overdue is announced
    overdue = query.pending[-1]
    assert isinstance(overdue, QueryOverdue) and overdue.clock == "first_response"
    assert [(d.clock, d.threshold) for d in query.deadlines()] == [
        ("resolution", 0.5), ("resolution", 0.75), ("resolution", 1.0)]


def test_a_stale_timer_after_a_pause_announces_nothing() -> None:
    query = raised()
    query.request_information(by_organisation_id=PROVIDER, reason="?", at=at(7, 11))
    query.check_clocks(at(7, 15))  # the old due time: the clock is paused
    query.provide_information(by_organisation_id=CLIENT, body="!", at=at(8, 9))
    query.check_clocks(at(8, 9, 30))
    assert names(query.pending)[-1] == "QueryInformationProvided"
    assert query.next_deadline() == Deadline(at(8, 10), "first_response", 0.5)


# --- terms in force ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyVersion:
    policy: SLAPolicy
    effective_from: datetime


def test_a_query_keeps_the_terms_it_was_raised_under() -> None:
    faster = SLAPolicy(calendar=CALENDAR.model_copy(update={"holidays": []}), targets=[
        ResponseTarget(priority="normal", first_response_minutes=60, resolution_minutes=120)])
    history = [PolicyVersion(POLICY, datetime(2025, 1, 1, tzinfo=UTC)),
               PolicyVersion(faster, at(8, 0))]
    before = raised(MONDAY_10, policy_in_force(history, MONDAY_10))
    after = raised(at(8, 10), policy_in_force(history, at(8, 10)))
    assert before.due_at("first_response") == at(7, 15)
    assert after.due_at("first_response") == at(8, 11)
    # The change takes effect from its date and never reaches back: not on replay either.
    assert Query.replay(before.query_id, before.pending).terms == before.terms
    before.answer(by_organisation_id=PROVIDER, answer="a", at=at(7, 14))
    assert before.breaches == []  # it would be late under the new terms
    assert policy_in_force(history, datetime(2024, 12, 31, tzinfo=UTC)) is None


def test_no_target_for_the_priority_means_no_clocks() -> None:
    query = raised(priority="urgent")
    assert query.terms is None and query.clocks == {} and query.deadlines() == []
    query.answer(by_organisation_id=PROVIDER, answer="a", at=at(30, 10))
    query.close(by_organisation_id=CLIENT, at=at(30, 11))
    assert query.breaches == [] and query.due_at("resolution") is None


def test_commands_dated_before_the_last_event_are_taken_at_its_time() -> None:
    query = raised()
    query.answer(by_organisation_id=PROVIDER, answer="a", at=at(7, 9))  # a clock behind the raise
    answered = query.pending[-1]
    assert isinstance(answered, QueryAnswered) and answered.answered_at == MONDAY_10


# --- replay, and random command sequences -----------------------------------------------------------


def through_the_wire(events: list[EventData]) -> list[EventData]:
    return [REGISTRY.decode(e.event_type(), json.loads(e.model_dump_json())) for e in events]


def test_events_survive_the_wire_and_replay_to_the_same_state() -> None:
    query = raised()
    query.request_information(by_organisation_id=PROVIDER, reason="?", at=at(7, 11))
    query.provide_information(by_organisation_id=CLIENT, body="!", at=at(8, 10))
    query.answer(by_organisation_id=PROVIDER, answer="a", at=at(9, 10))
    query.close(by_organisation_id=CLIENT, at=at(9, 11))
    assert Query.replay(query.query_id, through_the_wire(query.pending)) == replace(query, version=len(query.pending))


ORGANISATIONS = {"client": CLIENT, "provider": PROVIDER, "stranger": STRANGER}
# Who may issue each command on a query the client raised (None: either side, or the timer).
RIGHTFUL = {"comment": None, "request_information": "provider", "provide_information": "client", "answer": "provider",
            "reopen": "client", "close": "client", "withdraw": "client", "check_clocks": None}
# Mostly the rightful side, sometimes another; withdrawals rarer, so that sequences get somewhere.
step = st.tuples(
    st.sampled_from([*RIGHTFUL, *(c for c in RIGHTFUL if c != "withdraw")]),
    st.sampled_from(["rightful"] * 4 + ["client", "provider", "stranger"]),
    st.one_of(st.integers(0, 180), st.integers(0, 4 * 24 * 60)),  # minutes since the previous command
)


def run(query: Query, command: str, who: str, when: datetime) -> None:
    organisation = ORGANISATIONS[(RIGHTFUL[command] or "client") if who == "rightful" else who]
    match command:
        case "comment":
            query.comment(by_organisation_id=organisation, body="c", at=when)
        case "request_information":
            query.request_information(by_organisation_id=organisation, reason="r", at=when)
        case "provide_information":
            query.provide_information(by_organisation_id=organisation, body="i", at=when)
        case "answer":
            query.answer(by_organisation_id=organisation, answer="a", at=when)
        case "reopen":
            query.reopen(by_organisation_id=organisation, reason="r", at=when)
        case "close":
            query.close(by_organisation_id=organisation, at=when)
        case "withdraw":
            query.withdraw(by_organisation_id=organisation, at=when)
        case "check_clocks":
            query.check_clocks(when)


def check_invariants(query: Query, now: datetime) -> None:
    assert query.raised_at is not None and query.terms is not None
    open_pauses = [p for p in query.pauses if p.ended_at is None]
    assert len(open_pauses) == (1 if query.status in ("awaiting_information", "answered") else 0)
    assert all(p.ended_at is None or p.ended_at >= p.started_at for p in query.pauses)
    for name in CLOCKS:
        clock = query.clocks[name]
        end = clock.stopped_at or now
        # Running time and paused time add up to the business time since the raise.
        paused = sum((business_time_between(p.started_at, p.ended_at or end, CALENDAR)
                      for p in query.pauses if name in p.clocks), timedelta(0))
        assert all(p.business_duration == business_time_between(p.started_at, p.ended_at, CALENDAR)
                   for p in query.pauses if p.ended_at is not None)
        assert clock.elapsed(now) + paused == business_time_between(query.raised_at, end, CALENDAR)
        breaches = [b for b in query.breaches if b.clock == name]
        assert len(breaches) <= 1
        if clock.is_stopped:
            late = clock.late_by(end)
            assert bool(breaches) == (late > timedelta(0))
            for breach in breaches:
                assert breach.late_by_seconds == -(-late // timedelta(seconds=1))
                assert same_instant(breach.due_at, clock.due_at)
        else:
            assert not breaches
    assert (query.status == "closed") == (query.clocks["resolution"].stop_reason == "closed")
    assert (query.answers > 0) == (query.clocks["first_response"].stop_reason == "answered")
    deadlines = query.deadlines()
    assert deadlines == sorted(deadlines, key=lambda d: (d.at, d.threshold))
    assert all(query.clocks[d.clock].is_running for d in deadlines)


@settings(max_examples=200, deadline=None)
@given(st.lists(step, max_size=20))
def test_random_command_sequences_keep_the_invariants_and_replay(steps: list[tuple[str, str, int]]) -> None:
    query = raised()
    now = MONDAY_10
    for command, who, minutes in steps:
        now = now + timedelta(minutes=minutes)
        before = deepcopy(query)
        try:
            run(query, command, who, now)
        except (InvalidTransition, NotAParty, WrongSide):
            assert query == before and query.pending == before.pending
        check_invariants(query, now)
    assert Query.replay(query.query_id, through_the_wire(query.pending)) == replace(query, version=len(query.pending))
    hypothesis.event(f"{query.status}, breaches: {len(query.breaches)}, pauses: {len(query.pauses)}")
