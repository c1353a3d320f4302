"""Prometheus metrics of the queries service. Labels are bounded: priority (4), side (2), clock (2).

`side` is always the side the query is addressed to: the one that owes the answer.

Counters and the histogram count what this process decided (after its commit), so replicas add up
and a rebuild of the read models counts nothing twice. The gauges describe the shared read model,
so every replica refreshes them from it (`refresh_gauges`, on a short period while the service runs).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable

import asyncpg
import structlog
from fastapi import FastAPI
from prometheus_client import Counter, Gauge, Histogram

from accord_runtime.postgres import TRANSIENT_ERRORS
from contracts import EventData
from contracts.agreements import Side
from contracts.queries import QueryAnswered, QueryAtRisk, QueryBreached, QueryOverdue
from contracts.sla import PRIORITIES
from services.queries.domain import Query

log = structlog.get_logger(__name__)

SIDES: tuple[Side, Side] = ("client", "provider")
REFRESH_SECONDS = 5.0

OPEN = Gauge("accord_queries_open", "Unfinished queries (open, awaiting information, answered).",
             ["priority", "side"])
OVERDUE = Gauge("accord_queries_overdue", "Unfinished queries with a clock past its due time.", ["priority", "side"])
AT_RISK = Counter("accord_queries_at_risk_total", "Warning points reached by a query's clock (QueryAtRisk).",
                  ["priority", "side", "clock"])
WENT_OVERDUE = Counter("accord_queries_went_overdue_total", "Clocks that reached their due time (QueryOverdue).",
                       ["priority", "side", "clock"])
BREACHES = Counter("accord_queries_breached_total", "Clocks stopped past their target (QueryBreached).",
                   ["priority", "side", "clock"])
RESPONSE_TIME = Histogram(
    "accord_query_first_response_business_seconds", "Business time from raise to first answer.",
    ["priority", "side"],
    buckets=(60, 300, 900, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 16 * 3600, 24 * 3600, 48 * 3600, 120 * 3600))


def record(query: Query, events: Iterable[EventData]) -> None:
    """Count the events `query` just committed."""
    for event in events:
        match event:
            case QueryAtRisk():
                AT_RISK.labels(event.priority, event.addressed_to_side, event.clock).inc()
            case QueryOverdue():
                WENT_OVERDUE.labels(event.priority, event.addressed_to_side, event.clock).inc()
            case QueryBreached():
                BREACHES.labels(event.priority, event.addressed_to_side, event.clock).inc()
            case QueryAnswered(answered_at=answered_at) if query.answers == 1 and answered_at is not None:
                clock = query.clocks.get("first_response")
                if clock is not None:
                    RESPONSE_TIME.labels(query.priority, query.responder).observe(
                        clock.elapsed(answered_at).total_seconds())


async def refresh_gauges(pool: asyncpg.Pool) -> None:
    """Set the open and overdue gauges from the read model (every label set, zeros included)."""
    rows = await pool.fetch(
        "SELECT priority, addressed_to_side AS side, count(*) AS open, count(*) FILTER (WHERE overdue) AS overdue"
        " FROM queries WHERE status IN ('open', 'awaiting_information', 'answered')"
        " GROUP BY priority, addressed_to_side")
    found = {(row["priority"], row["side"]): row for row in rows}
    for priority in PRIORITIES:
        for side in SIDES:
            row = found.get((priority, side))
            OPEN.labels(priority, side).set(row["open"] if row else 0)
            OVERDUE.labels(priority, side).set(row["overdue"] if row else 0)


@contextlib.asynccontextmanager
async def gauges_refreshed(app: FastAPI) -> AsyncIterator[None]:
    """A router lifespan: refresh the gauges every `REFRESH_SECONDS` while the app runs.

    It runs inside the service runtime's lifespan, so the pool is at ``app.state.pool`` already.
    """
    stopping = asyncio.Event()

    async def refresh() -> None:
        while not stopping.is_set():
            try:
                await refresh_gauges(app.state.pool)
            except TRANSIENT_ERRORS as error:
                log.warning("query gauges not refreshed", error=str(error))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFRESH_SECONDS):
                    await stopping.wait()

    task = asyncio.create_task(refresh(), name="query gauges")
    try:
        yield
    finally:
        stopping.set()
        await task
