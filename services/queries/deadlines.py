"""Each query's next deadline as one durable timer, and what happens when it fires.

A query keeps at most one pending timer (kind `DEADLINE`, keyed by its id) at its `next_deadline()`:
the earliest warning point or due time of its running clocks. Every command re-sets it in the same
transaction as its events — before appending, so a command that meets a timer being fired waits for
that firing to commit and then retries against its events. When it fires, the handler replays the
query on the scheduler's connection, announces what the clocks reached (`QueryAtRisk`,
`QueryOverdue`) and re-arms the timer for the next deadline, all in the firing's transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg

from accord_runtime.eventstore import EventStore, Metadata, retry_on_conflict_in
from accord_runtime.timers import Timer, cancel, schedule
from contracts import REGISTRY
from services.queries import metrics
from services.queries.domain import Query, stream_id

SOURCE = "/accord/queries"
DEADLINE = "queries.deadline"
SYSTEM_ACTOR = "system:queries"
_AFTER = timedelta(milliseconds=1)


def store_on(conn: asyncpg.Connection) -> EventStore:
    """The service's event store on a transaction someone else owns (the scheduler's, a consumer's)."""
    return EventStore.on_connection(conn, SOURCE)


async def load(store: EventStore, query_id: UUID) -> Query:
    envelopes = await store.read_stream(stream_id(query_id))
    return Query.replay(query_id, [REGISTRY.decode(e.type, e.data) for e in envelopes])


async def keep_deadline(conn: asyncpg.Connection, query: Query, *, after: datetime | None = None) -> None:
    """Set the query's timer at its next deadline (not before `after`), or remove it if it has none."""
    deadline = query.next_deadline()
    key = str(query.query_id)
    if deadline is None:
        await cancel(conn, DEADLINE, key)
        return
    due = deadline.at if after is None else max(deadline.at, after)
    await schedule(conn, DEADLINE, key, due, {"query_id": key, "clock": deadline.clock,
                                              "threshold": deadline.threshold})


async def deadline_reached(conn: asyncpg.Connection, timer: Timer) -> None:
    """Timer handler: announce what the query's clocks reached by now and re-arm for the next deadline.

    Stale timers (the query was answered, paused or closed since) announce nothing. The next timer
    is never set at or before now: a deadline that rounding left a hair short fires again at once.
    """
    query_id = UUID(timer.payload["query_id"])
    store = store_on(conn)

    async def attempt() -> None:
        query = await load(store, query_id)
        if query.status == "new":
            return
        now = datetime.now(UTC)
        query.check_clocks(now)
        await keep_deadline(conn, query, after=now + _AFTER)
        if query.pending:
            await store.append(stream_id(query_id), query.version, query.pending, Metadata.new(SYSTEM_ACTOR),
                               conn=conn)
            metrics.record(query, query.pending)

    await retry_on_conflict_in(conn, attempt)
