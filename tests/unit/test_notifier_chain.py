"""The Escalation aggregate and its chain: one chain per matter, steps in order, and acknowledgement and
resolution that stop it without undoing each other."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from contracts.notifier import EscalationAcknowledged, EscalationResolved, Responsible
from services.notifier.domain import Escalation, EscalationClosed, Step, escalation_id, first_step, next_step
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


def test_a_matter_starts_one_chain_only() -> None:
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


def test_acknowledgement_stops_the_chain_and_a_second_one_is_refused() -> None:
    escalation = started()
    escalation.reach(Step(1, 0), [ANN], 1, NOW)
    escalation.acknowledge(by="user:u", via="api", cancelled=2, now=NOW)
    acknowledged = escalation.pending[-1]
    assert isinstance(acknowledged, EscalationAcknowledged) and acknowledged.level == 1
    assert not escalation.expects(Step(2, 0))
    with pytest.raises(EscalationClosed, match="already acknowledged"):
        escalation.acknowledge(by="user:v", via="link", cancelled=0, now=NOW)


def test_an_acknowledgement_after_the_resolution_is_refused_and_never_reopens_it() -> None:
    escalation = started()
    assert escalation.resolve(by_type="accord.queries.QueryAnswered.v1", by_event_id=uuid.uuid4(), cancelled=0,
                              now=NOW)
    with pytest.raises(EscalationClosed, match="already resolved"):
        escalation.acknowledge(by="user:u", via="api", cancelled=0, now=NOW)
    assert escalation.status == "resolved" and not escalation.expects(Step(1, 0))
    assert not escalation.resolve(by_type="t", by_event_id=uuid.uuid4(), cancelled=0, now=NOW)  # once only


def test_a_resolution_after_an_acknowledgement_is_recorded() -> None:
    escalation = started()
    escalation.acknowledge(by="user:u", via="api", cancelled=0, now=NOW)
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
        retry.acknowledge(by="user:u", via="api", cancelled=0, now=NOW)


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
