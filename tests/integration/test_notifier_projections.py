"""The escalations read model over the real database: folding the events in batches, however they are
cut, gives the same rows as folding them one by one — statuses, levels, who closed them, when they
last changed, and each escalation's history."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import asyncpg
import pytest

from accord_runtime.eventstore import EventStore, Metadata
from accord_runtime.postgres import transaction
from contracts import CloudEvent
from contracts.notifier import NotificationFailed, NotificationSent, Responsible
from services.notifier.domain import Escalation, Step, stream_id
from services.notifier.projections import EscalationViews

pytestmark = pytest.mark.servers

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
ANN = Responsible(contact_id=uuid.uuid4(), side="provider", role="lead", name="Ann", email="ann@p.test",
                  escalation_level=1)


def outcome(escalation: Escalation, sent: bool) -> NotificationSent | NotificationFailed:
    assert escalation.agreement_id is not None
    about: dict[str, Any] = {
        "escalation_id": escalation.id, "notification_id": uuid.uuid4(), "agreement_id": escalation.agreement_id,
        "level": 1, "channel": "email", "target": ANN.email, "responsible": [ANN], "attempts": 1}
    if sent:
        return NotificationSent(**about, sent_at=NOW)
    return NotificationFailed(**about, error="550", failed_at=NOW)


async def chains(store: EventStore) -> list[CloudEvent]:
    """Matters in every state: open at level 2, acknowledged then resolved, resolved, escalated again."""
    recorded: list[CloudEvent] = []
    for n, ending in enumerate(["open", "acknowledged", "resolved", "again"]):
        escalation = Escalation(f"matter:{n}")
        for occurrence in range(2 if ending == "again" else 1):
            at = NOW + timedelta(minutes=10 * occurrence)
            escalation.start(rule="r", agreement_id=uuid.uuid4(), levels=2, trigger_event_id=uuid.uuid4(),
                             trigger_type="accord.kpi.KPIBreached.v1", trigger_data={"n": n}, now=at)
            escalation.reach(Step(1, 0), [ANN], 1, at)
            escalation.record_delivery(outcome(escalation, sent=True))
            escalation.reach(Step(2, 0), [ANN], 1, at)
            escalation.record_delivery(outcome(escalation, sent=False))
            if ending == "acknowledged":
                escalation.acknowledge(escalation.id, by="user:1", via="api", cancelled=0, now=at)
            if ending in ("acknowledged", "resolved") or (ending == "again" and occurrence == 0):
                escalation.resolve(by_type="accord.kpi.KPIRecovered.v1", by_event_id=uuid.uuid4(), cancelled=0,
                                   now=at)
            for event in escalation.pending:  # one append each: events of distinct times
                result = await store.append(stream_id(escalation.matter), escalation.version, [event],
                                            Metadata.new("system:notifier"))
                recorded += result.envelopes
                escalation.version += 1
            escalation.pending.clear()
    return recorded


async def rows(pool: asyncpg.Pool) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    escalations = await pool.fetch("SELECT * FROM escalations ORDER BY escalation_id")
    history = await pool.fetch("SELECT * FROM escalation_history ORDER BY escalation_id, sequence")
    return [tuple(r) for r in escalations], [tuple(r) for r in history]


async def fold(pool: asyncpg.Pool, views: EscalationViews, batches: Sequence[Sequence[CloudEvent]]) -> None:
    async with transaction(pool) as conn:
        await views.clear(conn)
        for batch in batches:
            await views.apply_batch(conn, batch)


async def test_batches_of_any_cut_fold_to_the_rows_of_one_event_at_a_time(notifier_pool: asyncpg.Pool) -> None:
    events = await chains(EventStore(notifier_pool, source="/accord/notifier"))
    views = EscalationViews()
    async with transaction(notifier_pool) as conn:
        for event in events:
            await views.apply(conn, event)
    one_by_one = await rows(notifier_pool)
    statuses = sorted(tuple(r) for r in await notifier_pool.fetch("SELECT matter, status, level FROM escalations"))
    assert statuses == [("matter:0", "open", 2), ("matter:1", "resolved", 2), ("matter:2", "resolved", 2),
                        ("matter:3", "open", 2), ("matter:3", "resolved", 2)]
    assert len(one_by_one[1]) == len(events)

    rng = random.Random(3)
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(events)), rng.randint(0, 6)))
        bounds = [0, *cuts, len(events)]
        await fold(notifier_pool, views, [events[a:b] for a, b in pairwise(bounds)])
        assert await rows(notifier_pool) == one_by_one, cuts
