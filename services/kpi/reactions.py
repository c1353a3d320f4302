"""What the kpi service does on its own: the KPIs' reporting clocks and the reports' review windows
(durable timers), and re-scoring health as the other services' events arrive (a bus consumer).

All of it runs in a transaction someone else owns (a command's, the timer scheduler's, the
consumer's) and appends on that connection, so the events commit with it or not at all.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg

from accord_runtime.eventstore import Metadata, retry_on_conflict_in
from accord_runtime.timers import Timer, cancel, schedule
from contracts import CloudEvent
from contracts.kpi import KPIReportAcknowledged, KPIReportPublished
from services.kpi.domain import KpiBook, stream_id
from services.kpi.evaluation import evaluate_health, load_book, relationship, store_on
from services.kpi.projections import RELATIONSHIP_EVENTS

KPI_REPORT_DUE = "kpi.report_due"
REVIEW_DUE = "kpi.review_due"
SYSTEM = "system:kpi"


async def keep_timers(conn: asyncpg.Connection, book: KpiBook, clocks_before: dict[UUID, tuple[int, datetime]]
                      ) -> None:
    """Set the timers the book's pending events call for: each moved reporting clock, and the review
    window of each report published (cancelled once it is acknowledged)."""
    for kpi_id, (period, due_at) in book.clocks().items():
        if clocks_before.get(kpi_id) != (period, due_at):
            await schedule(conn, KPI_REPORT_DUE, str(kpi_id), due_at,
                           {"agreement_id": str(book.agreement_id), "kpi_id": str(kpi_id), "period": period})
    for event in book.pending:
        if isinstance(event, KPIReportPublished):
            await schedule(conn, REVIEW_DUE, str(event.report_id), event.review_due_at,
                           {"agreement_id": str(book.agreement_id), "report_id": str(event.report_id)})
        elif isinstance(event, KPIReportAcknowledged):
            await cancel(conn, REVIEW_DUE, str(event.report_id))


async def _append_and_rescore(conn: asyncpg.Connection, book: KpiBook, clocks: dict[UUID, tuple[int, datetime]],
                              meta: Metadata) -> None:
    await keep_timers(conn, book, clocks)
    await store_on(conn).append(stream_id(book.agreement_id), book.version, book.pending, meta)
    cause = ", ".join(dict.fromkeys(type(e).__name__ for e in book.pending))
    await evaluate_health(conn, book.agreement_id, cause=cause, meta=meta, book=book)


async def kpi_report_due(conn: asyncpg.Connection, timer: Timer) -> None:
    """A KPI's cadence ended: a provider KPI without a value is overdue; an Accord KPI is computed."""
    agreement_id, kpi_id, period = UUID(timer.payload["agreement_id"]), UUID(timer.payload["kpi_id"]), \
        int(timer.payload["period"])

    async def attempt() -> None:
        book = await load_book(store_on(conn), agreement_id)
        kpi = book.kpis.get(kpi_id)
        if kpi is None or kpi.period != period:
            return  # stale: a value came meanwhile
        clocks, meta = book.clocks(), Metadata.new(SYSTEM)
        definition = kpi.definition
        if definition.source == "provider":
            if book.record_report_overdue(kpi_id=kpi_id, period=period):
                await _append_and_rescore(conn, book, clocks, meta)
            return
        assert definition.metric is not None
        start = timer.due_at - timedelta(seconds=definition.cadence_seconds)
        value = (await relationship(conn, book, start, timer.due_at)).metric(definition.metric)
        if value is None:  # nothing to measure this period: look again at the end of the next one
            await schedule(conn, KPI_REPORT_DUE, str(kpi_id), timer.due_at + timedelta(
                seconds=definition.cadence_seconds), dict(timer.payload))
            return
        book.report_value(None, kpi_id=kpi_id, value=value, period_start=start, period_end=timer.due_at,
                          now=datetime.now(UTC), evidence=f"computed by Accord from {definition.metric}")
        await _append_and_rescore(conn, book, clocks, meta)

    await retry_on_conflict_in(conn, attempt)


async def review_due(conn: asyncpg.Connection, timer: Timer) -> None:
    """A report's review window closed: record it overdue unless the client acknowledged it."""
    agreement_id, report_id = UUID(timer.payload["agreement_id"]), UUID(timer.payload["report_id"])

    async def attempt() -> None:
        book = await load_book(store_on(conn), agreement_id)
        clocks = book.clocks()
        if book.record_review_overdue(report_id=report_id):
            await _append_and_rescore(conn, book, clocks, Metadata.new(SYSTEM))

    await retry_on_conflict_in(conn, attempt)


class HealthOnRelationshipEvents:
    """Re-scores an agreement's health when one of its agreements or queries events arrives.

    A policy, not a read model: it appends events and owns no tables, so it has no `clear` and a
    rebuild never replays it. It runs after `RelationshipLog` in the same consumer, so the log
    already holds the event it reacts to.
    """

    name = "health_on_relationship_events"
    handles = RELATIONSHIP_EVENTS

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        agreement_id = UUID(event.data["agreement_id"])
        meta = Metadata(SYSTEM, event.correlationid, event.id)
        cause = event.type.split(".")[2]

        async def attempt() -> None:
            await evaluate_health(conn, agreement_id, cause=cause, meta=meta)

        await retry_on_conflict_in(conn, attempt)
