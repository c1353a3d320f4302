"""One handler per command: load the KPI book, decide, append — with the timers the decision calls
for and the health re-evaluation it may cause, in one transaction; retried on a concurrent change."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar
from uuid import UUID, uuid4

from accord_runtime.eventstore import Metadata, retry_on_conflict
from accord_runtime.postgres import transaction
from accord_runtime.service import Context as Context
from contracts.agreements import Side
from contracts.kpi import HealthWeightsSet
from services.kpi.commands import AcknowledgeReport, Created, DefineKpi, PublishReport, ReportKpiValue, SetHealthWeights
from services.kpi.domain import InvalidCommand, KpiBook, stream_id
from services.kpi.evaluation import evaluate_health, health_stream, load_book, load_health, store_on
from services.kpi.reactions import keep_timers
from services.kpi.relationship import METRICS

T = TypeVar("T")


async def change_book(ctx: Context, agreement_id: UUID, meta: Metadata,
                      decide: Callable[[KpiBook, datetime], None]) -> int:
    """Load the book, let `decide` record events, append them with their timers, re-score health."""
    async def attempt() -> int:
        async with transaction(ctx.pool) as conn:
            store = store_on(conn)
            book = await load_book(store, agreement_id)
            clocks = book.clocks()
            decide(book, datetime.now(UTC))
            await keep_timers(conn, book, clocks)
            result = await store.append(stream_id(agreement_id), book.version, book.pending, meta)
            cause = ", ".join(dict.fromkeys(type(e).__name__ for e in book.pending))
            await evaluate_health(conn, agreement_id, cause=cause, meta=meta, book=book)
        ctx.store.notify_appended()
        return result.version

    return await retry_on_conflict(attempt)


async def define_kpi(ctx: Context, agreement_id: UUID, side: Side, cmd: DefineKpi, meta: Metadata) -> Created:
    if cmd.metric is not None and cmd.metric not in METRICS:
        raise InvalidCommand(f"unknown relationship KPI {cmd.metric!r}; known: {', '.join(sorted(METRICS))}")
    kpi_id = uuid4()
    version = await change_book(ctx, agreement_id, meta, lambda book, now: book.define(
        side, kpi_id=kpi_id, name=cmd.name, description=cmd.description, unit=cmd.unit, direction=cmd.direction,
        target=cmd.target, warning=cmd.warning_threshold, breach=cmd.breach_threshold,
        cadence_seconds=cmd.cadence_seconds, source=cmd.source, metric=cmd.metric, now=now))
    return Created(id=kpi_id, version=version)


async def report_value(ctx: Context, agreement_id: UUID, kpi_id: UUID, side: Side, cmd: ReportKpiValue,
                       meta: Metadata) -> Created:
    def decide(book: KpiBook, now: datetime) -> None:
        book.report_value(side, kpi_id=kpi_id, value=cmd.value, period_start=cmd.period_start,
                          period_end=cmd.period_end, evidence=cmd.evidence, notes=cmd.notes, now=now)

    return Created(id=kpi_id, version=await change_book(ctx, agreement_id, meta, decide))


async def publish_report(ctx: Context, agreement_id: UUID, side: Side, cmd: PublishReport,
                         meta: Metadata) -> Created:
    report_id = uuid4()
    version = await change_book(ctx, agreement_id, meta, lambda book, now: book.publish_report(
        side, report_id=report_id, title=cmd.title, period_start=cmd.period_start, period_end=cmd.period_end,
        narrative=cmd.narrative, kpi_ids=cmd.kpi_ids, review_seconds=cmd.review_seconds, now=now))
    return Created(id=report_id, version=version)


async def acknowledge_report(ctx: Context, agreement_id: UUID, report_id: UUID, side: Side, cmd: AcknowledgeReport,
                             meta: Metadata) -> Created:
    version = await change_book(ctx, agreement_id, meta, lambda book, now: book.acknowledge_report(
        side, report_id=report_id, comments=cmd.comments, questions=cmd.questions, now=now))
    return Created(id=report_id, version=version)


async def set_health_weights(ctx: Context, agreement_id: UUID, side: Side, cmd: SetHealthWeights,
                             meta: Metadata) -> Created:
    """Either side may set the weights: the score is the two sides' shared view of the relationship."""
    names = [w.component for w in cmd.weights]
    if len(set(names)) != len(names):
        raise InvalidCommand("one weight per component")

    async def attempt() -> int:
        async with transaction(ctx.pool) as conn:
            store = store_on(conn)
            state = await load_health(store, agreement_id)
            result = await store.append(health_stream(agreement_id), state.version, [HealthWeightsSet(
                agreement_id=agreement_id, weights=cmd.weights, set_by_side=side, set_at=datetime.now(UTC))], meta)
            await evaluate_health(conn, agreement_id, cause="HealthWeightsSet", meta=meta)
        ctx.store.notify_appended()
        return result.version

    return Created(id=agreement_id, version=await retry_on_conflict(attempt))
