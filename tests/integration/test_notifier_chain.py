"""The chain's start over the real database: a first level without a delay is reached in the triggering
event's transaction — its notifications queued and its events appended after the start, each with the
metadata a timer firing it would have given — while a first level with a delay waits for its timer;
a redelivered trigger queues nothing again, and a rolled-back trigger leaves nothing behind."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from accord_runtime.postgres import transaction
from contracts import CloudEvent
from contracts.notifier import EscalationLevelReached, EscalationStarted
from contracts.queries import QueryOverdue
from services.notifier.bootstrap import Notifier
from services.notifier.chain import LEVEL_TIMER, EscalationTriggers
from services.notifier.domain import stream_id
from services.notifier.rules import parse_rules

pytestmark = pytest.mark.servers

AGREEMENT = uuid.uuid4()


def notifier(first_after: dict[str, float]) -> Notifier:
    level = {"targets": [{"side_field": "addressed_to_side", "matrix_level": 1}], "channels": ["email"]}
    rules = parse_rules({"rules": [{
        "name": "overdue", "event": "queries.QueryOverdue", "matter": "query:{query_id}:{clock}",
        "levels": [{**level, "after": first_after}, {**level, "after": {"hours": 1}}]}]})
    return Notifier(rules=rules, ack_signer=None, ack_base_url="http://notifier", senders={})


@pytest.fixture
async def chain_pool(notifier_pool: asyncpg.Pool) -> asyncpg.Pool:
    await notifier_pool.execute(
        "INSERT INTO notifier_contacts VALUES ($1, $2, 'provider', 'lead', 'Ann', 'ann@p.test', 1)",
        AGREEMENT, uuid.uuid4())
    return notifier_pool


def overdue() -> CloudEvent:
    data = QueryOverdue(query_id=uuid.uuid4(), agreement_id=AGREEMENT, clock="first_response", priority="urgent",
                        addressed_to_side="provider", due_at=datetime.now(UTC))
    return CloudEvent(id=uuid.uuid4(), source="/accord/queries", type=data.event_type(),
                      subject=f"query-{data.query_id}", time=datetime.now(UTC), data=data.model_dump(mode="json"),
                      sequence=1, correlationid=uuid.uuid4(), actor="system:queries")


async def trigger(pool: asyncpg.Pool, triggers: EscalationTriggers, event: CloudEvent) -> None:
    async with transaction(pool) as conn:
        await triggers.apply(conn, event)


def matter(event: CloudEvent) -> str:
    return f"query:{event.data['query_id']}:first_response"


async def stream(pool: asyncpg.Pool, event: CloudEvent) -> list[Any]:
    return list(await pool.fetch("SELECT event_type, correlation_id, causation_id, actor FROM events"
                                 " WHERE stream_id = $1 ORDER BY stream_version", stream_id(matter(event))))


async def test_a_first_level_without_delay_is_reached_with_the_start_and_arms_the_next_level(
    chain_pool: asyncpg.Pool,
) -> None:
    triggers = EscalationTriggers(notifier({}))
    event = overdue()
    await trigger(chain_pool, triggers, event)

    started, reached = await stream(chain_pool, event)
    assert started["event_type"] == EscalationStarted.event_type()
    assert (started["correlation_id"], started["causation_id"]) == (event.correlationid, event.id)
    assert reached["event_type"] == EscalationLevelReached.event_type()
    assert reached["correlation_id"] != event.correlationid and reached["causation_id"] is None  # as a timer's
    assert reached["actor"] == started["actor"] == "system:notifier"
    deliveries = await chain_pool.fetch("SELECT level, round, target, status FROM deliveries WHERE matter = $1",
                                        matter(event))
    assert [tuple(row) for row in deliveries] == [(1, 0, "ann@p.test", "pending")]
    timers = await chain_pool.fetch("SELECT payload FROM timers WHERE kind = $1 AND key = $2 AND fired_at IS NULL",
                                    LEVEL_TIMER, matter(event))
    assert [(row["payload"]["level"], row["payload"]["round"]) for row in timers] == [(2, 0)]

    await trigger(chain_pool, triggers, event)  # redelivered: nothing starts, nothing is queued again
    assert len(await stream(chain_pool, event)) == 2
    assert await chain_pool.fetchval("SELECT count(*) FROM deliveries WHERE matter = $1", matter(event)) == 1


async def test_a_first_level_with_a_delay_waits_for_its_timer(chain_pool: asyncpg.Pool) -> None:
    event = overdue()
    await trigger(chain_pool, EscalationTriggers(notifier({"minutes": 5})), event)

    assert [row["event_type"] for row in await stream(chain_pool, event)] == [EscalationStarted.event_type()]
    assert await chain_pool.fetchval("SELECT count(*) FROM deliveries WHERE matter = $1", matter(event)) == 0
    payload = await chain_pool.fetchval("SELECT payload FROM timers WHERE kind = $1 AND key = $2", LEVEL_TIMER,
                                        matter(event))
    assert (payload["level"], payload["round"]) == (1, 0)


async def test_a_rolled_back_trigger_leaves_neither_events_nor_deliveries(chain_pool: asyncpg.Pool) -> None:
    event = overdue()
    with pytest.raises(RuntimeError):
        async with transaction(chain_pool) as conn:
            await EscalationTriggers(notifier({})).apply(conn, event)
            raise RuntimeError("the consumer's transaction fails after the handler")
    assert await stream(chain_pool, event) == []
    assert await chain_pool.fetchval("SELECT count(*) FROM deliveries") == 0
