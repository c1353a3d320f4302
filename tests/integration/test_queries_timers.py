"""The queries service's deadline timers against a real PostgreSQL: two scheduler replicas never
announce a deadline twice, and pausing a query's clocks removes its timer until they resume."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from accord_runtime.eventstore import EventStore, Metadata
from accord_runtime.identity import Principal
from accord_runtime.postgres import create_pool, transaction
from accord_runtime.timers import TimerScheduler
from contracts import REGISTRY
from contracts.sla import BusinessCalendar, ResponseTarget, SLAPolicy, WorkingPeriod
from services.queries import handlers
from services.queries.commands import ProvideInformation, RequestInformation
from services.queries.deadlines import DEADLINE, deadline_reached, keep_deadline
from services.queries.domain import Query, stream_id
from tests.support import eventually

pytestmark = pytest.mark.servers

CLIENT, PROVIDER = Principal(uuid.uuid4(), uuid.uuid4()), Principal(uuid.uuid4(), uuid.uuid4())
ALL_DAY = BusinessCalendar(timezone="UTC", working_periods=[
    WorkingPeriod.model_validate_json(f'{{"weekday": {d}, "start": "00:00:00", "end": "23:59:59.999999"}}')
    for d in range(7)])
POLICY = SLAPolicy(calendar=ALL_DAY, targets=[
    ResponseTarget(priority="urgent", first_response_minutes=1, resolution_minutes=60, warn_at=[0.5])])
TIMER = "SELECT due_at FROM timers WHERE kind = $1 AND key = $2 AND fired_at IS NULL"


async def raise_query(store: EventStore, pool: asyncpg.Pool, *, seconds_ago: float) -> uuid.UUID:
    """An urgent query raised `seconds_ago`, with its deadline timer, as the raise handler commits it."""
    query = Query(uuid.uuid4())
    query.raise_query(agreement_id=uuid.uuid4(), client_organisation_id=CLIENT.organisation_id,
                      provider_organisation_id=PROVIDER.organisation_id, by_organisation_id=CLIENT.organisation_id,
                      priority="urgent", subject="Down?", body="Is it?", policy=POLICY,
                      at=datetime.now(UTC) - timedelta(seconds=seconds_ago))
    async with transaction(pool) as conn:
        await keep_deadline(conn, query)
        await store.append(stream_id(query.query_id), 0, query.pending, Metadata.new("test"), conn=conn)
    return query.query_id


@pytest.fixture
async def second_pool(database_url: str, schema: str, pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
    """Another replica's pool over the same schema."""
    other = await create_pool(database_url, schema, min_size=1, max_size=4)
    yield other
    await other.close()


async def test_two_scheduler_replicas_announce_each_deadline_once(
    store: EventStore, pool: asyncpg.Pool, second_pool: asyncpg.Pool,
) -> None:
    # 60 queries whose first response is overdue when the replicas start
    ids = [await raise_query(store, pool, seconds_ago=61) for _ in range(60)]
    replicas = [TimerScheduler(p, {DEADLINE: deadline_reached}, service="queries", batch_size=7)
                for p in (pool, second_pool)]
    tasks = [asyncio.create_task(r.run()) for r in replicas]
    try:
        async def all_fired() -> bool:
            pending = await pool.fetchval("SELECT count(*) FROM timers WHERE due_at <= now() AND fired_at IS NULL")
            return bool(pending == 0)

        await eventually(all_fired, timeout=15)
        await asyncio.sleep(0.3)
    finally:
        for replica in replicas:
            replica.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
    for query_id in ids:
        events = [REGISTRY.decode(e.type, e.data) for e in await store.read_stream(stream_id(query_id))]
        announced = Counter((type(e).__name__, getattr(e, "clock", None)) for e in events[1:])
        assert announced == {("QueryOverdue", "first_response"): 1}, announced
        # re-armed for the resolution clock's warning point, 30 of its 60 minutes in
        assert await pool.fetchval(TIMER, DEADLINE, str(query_id)) > datetime.now(UTC) + timedelta(minutes=25)


async def test_pausing_the_clocks_removes_the_timer_and_resuming_moves_it_later(
    store: EventStore, pool: asyncpg.Pool,
) -> None:
    ctx = handlers.Context(store, pool)
    query_id = await raise_query(store, pool, seconds_ago=0)
    first_due = await pool.fetchval(TIMER, DEADLINE, str(query_id))
    assert first_due is not None  # the first response's warning point, 30 s in

    await handlers.request_information(ctx, query_id, RequestInformation(reason="Which server?"),
                                       Metadata.new("test"), PROVIDER)
    assert await pool.fetchval(TIMER, DEADLINE, str(query_id)) is None  # paused clocks owe nothing
    await asyncio.sleep(1.0)
    await handlers.provide_information(ctx, query_id, ProvideInformation(body="db-1"), Metadata.new("test"), CLIENT)
    resumed_due = await pool.fetchval(TIMER, DEADLINE, str(query_id))
    moved = (resumed_due - first_due).total_seconds()
    assert 1.0 <= moved < 1.5, moved  # later by the time the clocks stood still
