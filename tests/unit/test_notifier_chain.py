"""The Escalation aggregate and its chain: one open chain per matter, a new occurrence once it is closed,
steps in order, and acknowledgement and resolution that stop it without undoing each other or reaching
past their occurrence."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from contracts import REGISTRY, EventData
from contracts.notifier import EscalationAcknowledged, EscalationResolved, EscalationStarted, Responsible
from services.notifier.domain import (
    Escalation,
    EscalationClosed,
    Step,
    UnknownEscalation,
    escalation_id,
    first_step,
    next_step,
)
from services.notifier.rules import Delay, Level, Target

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
MATTER = "query:q1:first_response"
ANN = Responsible(contact_id=uuid.uuid4(), side="provider", role="lead", name="Ann", email="ann@p.test",
                  escalation_level=1)


def started(levels: int = 2) -> Escalation:
    escalation = Escalation(MATTER)
    assert escalation.start(rule="late", agreement_id=uuid.uuid4(), levels=levels, trigger_event_id=uuid.uuid4(),
                            trigger_type="accord.queries.QueryOverdue.v1", trigger_data={}, now=NOW)
    return Escalation.replay(MATTER, escalation.pending)


def test_the_id_is_derived_from_the_matter() -> None:
    assert escalation_id(MATTER) == escalation_id(MATTER) == Escalation(MATTER).id
    assert escalation_id(MATTER) != escalation_id("query:q2:first_response")


def test_a_matter_has_one_open_chain_only() -> None:
    escalation = started()
    assert not escalation.start(rule="late", agreement_id=uuid.uuid4(), levels=1, trigger_event_id=uuid.uuid4(),
                                trigger_type="t", trigger_data={}, now=NOW)
    assert escalation.pending == []


def test_steps_fire_in_order_and_a_stale_or_repeated_timer_fires_nothing() -> None:
    escalation = started()
    assert not escalation.reach(Step(2, 0), [ANN], 1, NOW)  # not before level 1
    assert escalation.reach(Step(1, 0), [ANN], 1, NOW)
    assert not escalation.reach(Step(1, 0), [ANN], 1, NOW)  # the same step again
    assert escalation.expects(Step(1, 1)) and escalation.expects(Step(2, 0))
    assert escalation.reach(Step(2, 0), [], 0, NOW)
    assert not escalation.expects(Step(3, 0))  # past the chain's last level


def test_once_appended_the_next_decision_s_events_follow_in_the_stream() -> None:
    escalation = Escalation(MATTER)
    escalation.start(rule="late", agreement_id=uuid.uuid4(), levels=1, trigger_event_id=uuid.uuid4(),
                     trigger_type="accord.queries.QueryOverdue.v1", trigger_data={}, now=NOW)
    started_events = list(escalation.pending)
    escalation.appended()
    assert (escalation.version, escalation.pending) == (1, [])
    assert escalation.reach(Step(1, 0), [ANN], 1, NOW)
    assert escalation.version == 1 and len(escalation.pending) == 1  # appended at version 1, after the start
    assert Escalation.replay(MATTER, started_events + escalation.pending).reached == Step(1, 0)


def test_acknowledgement_stops_the_chain_and_a_second_one_is_refused() -> None:
    escalation = started()
    escalation.reach(Step(1, 0), [ANN], 1, NOW)
    escalation.acknowledge(escalation.id, by="user:u", via="api", cancelled=2, now=NOW)
    acknowledged = escalation.pending[-1]
    assert isinstance(acknowledged, EscalationAcknowledged) and acknowledged.level == 1
    assert not escalation.expects(Step(2, 0))
    with pytest.raises(EscalationClosed, match="already acknowledged"):
        escalation.acknowledge(escalation.id, by="user:v", via="link", cancelled=0, now=NOW)


def test_an_acknowledgement_after_the_resolution_is_refused_and_never_reopens_it() -> None:
    escalation = started()
    assert escalation.resolve(by_type="accord.queries.QueryAnswered.v1", by_event_id=uuid.uuid4(), cancelled=0,
                              now=NOW)
    with pytest.raises(EscalationClosed, match="already resolved"):
        escalation.acknowledge(escalation.id, by="user:u", via="api", cancelled=0, now=NOW)
    assert escalation.status == "resolved" and not escalation.expects(Step(1, 0))
    assert not escalation.resolve(by_type="t", by_event_id=uuid.uuid4(), cancelled=0, now=NOW)  # once only


def test_a_resolution_after_an_acknowledgement_is_recorded() -> None:
    escalation = started()
    escalation.acknowledge(escalation.id, by="user:u", via="api", cancelled=0, now=NOW)
    assert escalation.resolve(by_type="t", by_event_id=uuid.uuid4(), cancelled=0, now=NOW)
    assert isinstance(escalation.pending[-1], EscalationResolved) and escalation.status == "resolved"


def test_the_racing_loser_sees_the_winner_on_its_retry() -> None:
    """Both read the same version; the store lets one append; the other replays and decides again."""
    base = Escalation(MATTER)
    base.start(rule="late", agreement_id=uuid.uuid4(), levels=2, trigger_event_id=uuid.uuid4(), trigger_type="t",
               trigger_data={}, now=NOW)
    stream = list(base.pending)
    resolver = Escalation.replay(MATTER, stream)
    resolver.resolve(by_type="t", by_event_id=uuid.uuid4(), cancelled=0, now=NOW)
    stream += resolver.pending  # the resolution won the append
    retry = Escalation.replay(MATTER, stream)
    with pytest.raises(EscalationClosed):
        retry.acknowledge(retry.id, by="user:u", via="api", cancelled=0, now=NOW)


def level(repeat: int = 0, after: float = 0, every: float | None = None) -> Level:
    return Level(after=Delay(seconds=after), targets=[Target(role="r")], channels=["email"], repeat=repeat,
                 every=Delay(seconds=every) if every is not None else None)


def test_the_chain_runs_each_levels_reminders_then_the_next_level() -> None:
    chain = [level(after=0, repeat=2, every=60), level(after=600)]
    step, delay = first_step(chain)
    assert (step, delay.duration.total_seconds()) == (Step(1, 0), 0)
    plan = []
    while (following := next_step(chain, step)) is not None:
        step, delay = following
        plan.append((step, delay.duration.total_seconds()))
    assert plan == [(Step(1, 1), 60), (Step(1, 2), 60), (Step(2, 0), 600)]


def test_reminders_wait_as_long_as_the_level_unless_told_otherwise() -> None:
    assert next_step([level(after=30, repeat=1)], Step(1, 0)) == (Step(1, 1), Delay(seconds=30))


# --- occurrences: the matter escalates again once its chain is closed -----------------------------

AGREEMENT = uuid.uuid4()


def trigger(escalation: Escalation, event_id: uuid.UUID, at: datetime = NOW) -> bool:
    return escalation.start(rule="kpi-breached", agreement_id=AGREEMENT, levels=2, trigger_event_id=event_id,
                            trigger_type="accord.kpi.KPIBreached.v1", trigger_data={"value": 1}, now=at,
                            triggered_at=at)


def status_of(escalation: Escalation) -> str:
    """The status, read afresh (a type checker keeps an attribute narrowed across the calls that change it)."""
    return escalation.status


def replayed(escalation: Escalation) -> Escalation:
    """The stream as the store holds it, replayed: what the next decision is made on."""
    stream: list[EventData] = list(escalation.pending)
    return Escalation.replay(escalation.matter, stream)


def test_a_closed_matter_escalates_again_with_a_new_occurrence_and_id() -> None:
    first_trigger, second_trigger = uuid.uuid4(), uuid.uuid4()
    escalation = Escalation(MATTER)
    assert trigger(escalation, first_trigger)
    first_id = escalation.id
    assert first_id == escalation_id(MATTER)  # the first occurrence keeps the id chains always had
    escalation.reach(Step(1, 0), [ANN], 1, NOW)
    assert escalation.resolve(by_type="accord.kpi.KPIRecovered.v1", by_event_id=uuid.uuid4(), cancelled=0,
                              now=NOW + timedelta(hours=1), occurred_at=NOW + timedelta(hours=1))

    again = replayed(escalation)
    assert trigger(again, second_trigger, NOW + timedelta(hours=2))
    started = again.pending[-1]
    assert isinstance(started, EscalationStarted)
    assert started.occurrence == 2 and started.escalation_id == escalation_id(MATTER, 2) != first_id
    assert started.trigger_event_id == second_trigger and started.triggered_at == NOW + timedelta(hours=2)
    assert again.status == "open" and again.reached is None and again.id == escalation_id(MATTER, 2)
    assert again.expects(Step(1, 0), 2)  # the new chain starts at level 1
    assert Escalation.replay(MATTER, list(escalation.pending) + list(again.pending)).occurrence == 2


def test_an_acknowledged_matter_escalates_again() -> None:
    escalation = Escalation(MATTER)
    assert trigger(escalation, uuid.uuid4())
    escalation.acknowledge(escalation.id, by="user:u", via="api", cancelled=0, now=NOW)
    assert trigger(escalation, uuid.uuid4())
    assert escalation.occurrence == 2 and escalation.status == "open"


def test_while_a_chain_is_open_neither_a_repeat_nor_a_redelivery_starts_another() -> None:
    original = uuid.uuid4()
    escalation = Escalation(MATTER)
    assert trigger(escalation, original)
    recorded = len(escalation.pending)
    assert not trigger(escalation, original)  # redelivered
    assert not trigger(escalation, uuid.uuid4())  # repeated, another event id
    assert len(escalation.pending) == recorded and escalation.occurrence == 1


def test_the_original_trigger_redelivered_after_the_chain_closed_never_restarts_it() -> None:
    """E.g. after an inbox replay: the stream remembers which events triggered a chain."""
    original, second = uuid.uuid4(), uuid.uuid4()
    escalation = Escalation(MATTER)
    assert trigger(escalation, original)
    escalation.resolve(by_type="t", by_event_id=uuid.uuid4(), cancelled=0, now=NOW)
    escalation = replayed(escalation)
    assert not trigger(escalation, original)
    assert trigger(escalation, second)
    escalation.acknowledge(escalation.id, by="user:u", via="api", cancelled=0, now=NOW)
    assert not trigger(escalation, original) and not trigger(escalation, second)
    assert escalation.occurrence == 2


def test_acknowledging_an_earlier_occurrence_is_refused_and_leaves_the_new_one_open() -> None:
    escalation = Escalation(MATTER)
    trigger(escalation, uuid.uuid4())
    first_id = escalation.id
    escalation.resolve(by_type="t", by_event_id=uuid.uuid4(), cancelled=0, now=NOW)
    trigger(escalation, uuid.uuid4(), NOW + timedelta(minutes=5))
    with pytest.raises(EscalationClosed, match="already resolved; the matter has escalated again"):
        escalation.acknowledge(first_id, by="link:ann", via="link", cancelled=0, now=NOW)
    with pytest.raises(UnknownEscalation):
        escalation.acknowledge(escalation_id(MATTER, 3), by="user:u", via="api", cancelled=0, now=NOW)
    assert escalation.status == "open"
    escalation.acknowledge(escalation.id, by="user:u", via="api", cancelled=0, now=NOW)  # the current one


def test_a_resolution_aimed_at_an_earlier_occurrence_never_touches_the_new_one() -> None:
    breach_at, recovery_at, second_breach_at = NOW, NOW + timedelta(hours=1), NOW + timedelta(hours=2)
    recovery = uuid.uuid4()
    escalation = Escalation(MATTER)
    trigger(escalation, uuid.uuid4(), breach_at)
    assert escalation.resolve(by_type="t", by_event_id=recovery, cancelled=0, now=recovery_at,
                              occurred_at=recovery_at)
    trigger(escalation, uuid.uuid4(), second_breach_at)
    # the first occurrence's resolution again (an inbox replay): it resolved that one, not this one
    assert not escalation.resolves(recovery, recovery_at)
    assert not escalation.resolve(by_type="t", by_event_id=recovery, cancelled=0, now=NOW, occurred_at=recovery_at)
    # a resolving event that happened before this occurrence was triggered, arriving late
    assert not escalation.resolves(uuid.uuid4(), second_breach_at - timedelta(seconds=1))
    assert status_of(escalation) == "open"
    # a resolution after the new trigger resolves it
    assert escalation.resolve(by_type="t", by_event_id=uuid.uuid4(), cancelled=0, now=NOW,
                              occurred_at=second_breach_at + timedelta(minutes=1))
    assert status_of(escalation) == "resolved"


def test_the_first_occurrence_is_resolved_whatever_the_resolving_event_s_time() -> None:
    """No earlier occurrence it could be about: the time guard applies from the second one on."""
    escalation = Escalation(MATTER)
    trigger(escalation, uuid.uuid4(), NOW)
    assert escalation.resolves(uuid.uuid4(), NOW - timedelta(minutes=1))


def test_a_timer_of_an_earlier_occurrence_fires_nothing_in_the_new_one() -> None:
    escalation = Escalation(MATTER)
    trigger(escalation, uuid.uuid4())
    escalation.reach(Step(1, 0), [ANN], 1, NOW, 1)
    escalation.resolve(by_type="t", by_event_id=uuid.uuid4(), cancelled=0, now=NOW)
    trigger(escalation, uuid.uuid4())
    assert not escalation.expects(Step(1, 0), 1) and not escalation.reach(Step(1, 0), [ANN], 1, NOW, 1)
    assert escalation.reach(Step(1, 0), [ANN], 1, NOW, 2)


def test_streams_written_before_occurrences_replay_as_the_first() -> None:
    """An EscalationStarted without `occurrence` or `triggered_at` (recorded before they existed)."""
    old = REGISTRY.decode(EscalationStarted.event_type(), {
        "escalation_id": str(escalation_id(MATTER)), "matter": MATTER, "rule": "late", "agreement_id": str(AGREEMENT),
        "levels": 2, "trigger_event_id": str(uuid.uuid4()), "trigger_type": "t", "trigger_data": {},
        "started_at": NOW.isoformat()})
    escalation = Escalation.replay(MATTER, [old])
    assert (escalation.occurrence, escalation.id, escalation.triggered_at) == (1, escalation_id(MATTER), None)
    assert escalation.expects(Step(1, 0), 1)


def test_two_racing_triggers_of_a_closed_matter_start_one_chain() -> None:
    """Both read the closed stream at the same version; the store lets one append, the other retries."""
    escalation = Escalation(MATTER)
    trigger(escalation, uuid.uuid4())
    escalation.resolve(by_type="t", by_event_id=uuid.uuid4(), cancelled=0, now=NOW)
    stream: list[EventData] = list(escalation.pending)
    winner, loser = Escalation.replay(MATTER, stream), Escalation.replay(MATTER, stream)
    assert trigger(winner, uuid.uuid4()) and trigger(loser, uuid.uuid4())
    assert winner.version == loser.version  # the loser's append at this version fails
    stream += winner.pending
    retry = Escalation.replay(MATTER, stream)
    assert not trigger(retry, uuid.uuid4())
