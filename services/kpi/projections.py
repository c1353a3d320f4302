"""Read models of the kpi service.

Over its own events: KPI definitions with their latest status, the values as time series, the
period reports with their acknowledgement state, and the health score now and its history.
Over the bus: the log of the agreements and queries events relationship KPIs are folded from.
"""

from __future__ import annotations

import asyncpg

from contracts import REGISTRY, CloudEvent, EventData
from contracts.kpi import (
    HealthScoreRecorded,
    KPIAtRisk,
    KPIBreached,
    KPIDefined,
    KPIRecovered,
    KPIReportAcknowledged,
    KPIReported,
    KPIReportOverdue,
    KPIReportPublished,
    KPIReportReviewOverdue,
)
from contracts.queries import QueryAnswered
from services.kpi import metrics
from services.kpi.domain import Thresholds
from services.kpi.relationship import FOLDED, occurred_at

KPI_EVENTS = frozenset(m.event_type() for m in (
    KPIDefined, KPIReported, KPIAtRisk, KPIBreached, KPIRecovered, KPIReportOverdue, KPIReportPublished,
    KPIReportAcknowledged, KPIReportReviewOverdue))
#: The foreign events the relationship KPIs read (the kpi service's own are read from its store).
RELATIONSHIP_EVENTS = frozenset(m.event_type() for m in FOLDED if m.EVENT_SERVICE != "kpi")


class KpiReadModel:
    """kpi_definitions, kpi_values and kpi_reports."""

    name = "kpi_book"
    handles = KPI_EVENTS

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        match REGISTRY.decode(event.type, event.data):
            case KPIDefined() as e:
                await conn.execute(
                    "INSERT INTO kpi_definitions (kpi_id, agreement_id, name, description, unit, direction, target,"
                    " warning_threshold, breach_threshold, cadence_seconds, source, metric, defined_by_side,"
                    " defined_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
                    " ON CONFLICT DO NOTHING",
                    e.kpi_id, e.agreement_id, e.name, e.description, e.unit, e.direction, e.target,
                    e.warning_threshold, e.breach_threshold, e.cadence_seconds, e.source, e.metric,
                    e.defined_by_side, e.defined_at)
            case KPIReported() as e:
                await self._reported(conn, event, e)
            case KPIAtRisk() | KPIBreached() | KPIRecovered() as e:
                metrics.KPI_CROSSINGS.labels(_kind(e)).inc()
            case KPIReportOverdue() as e:
                await conn.execute("UPDATE kpi_definitions SET overdue_periods = overdue_periods + 1"
                                   " WHERE kpi_id = $1", e.kpi_id)
                metrics.KPI_CROSSINGS.labels("report_overdue").inc()
            case KPIReportPublished() as e:
                await conn.execute(
                    "INSERT INTO kpi_reports (report_id, agreement_id, title, period_start, period_end, narrative,"
                    " kpis, published_at, review_due_at, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
                    " 'awaiting_review') ON CONFLICT DO NOTHING",
                    e.report_id, e.agreement_id, e.title, e.period_start, e.period_end, e.narrative,
                    [k.model_dump(mode="json") for k in e.kpis], e.published_at, e.review_due_at)
            case KPIReportAcknowledged() as e:
                await conn.execute(
                    "UPDATE kpi_reports SET state = 'acknowledged', acknowledged_at = $2, delay_seconds = $3,"
                    " late = $4, comments = $5, questions = $6 WHERE report_id = $1",
                    e.report_id, e.acknowledged_at, e.delay_seconds, e.late, e.comments, list(e.questions))
            case KPIReportReviewOverdue() as e:
                await conn.execute("UPDATE kpi_reports SET state = 'review_overdue' WHERE report_id = $1"
                                   " AND state = 'awaiting_review'", e.report_id)
                metrics.KPI_CROSSINGS.labels("review_overdue").inc()

    @staticmethod
    async def _reported(conn: asyncpg.Connection, event: CloudEvent, e: KPIReported) -> None:
        await conn.execute(
            "INSERT INTO kpi_values (event_id, kpi_id, agreement_id, value, status, period_start, period_end,"
            " evidence, notes, reported_by_side, reported_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            " ON CONFLICT DO NOTHING",
            event.id, e.kpi_id, e.agreement_id, e.value, e.status, e.period_start, e.period_end, e.evidence,
            e.notes, e.reported_by_side, e.reported_at)
        row = await conn.fetchrow(
            "UPDATE kpi_definitions SET status = $2, last_value = $3, last_reported_at = $4 WHERE kpi_id = $1"
            " RETURNING direction, target, warning_threshold, breach_threshold",
            e.kpi_id, e.status, e.value, e.reported_at)
        if row is not None:
            thresholds = Thresholds(row["direction"], row["target"], row["warning_threshold"],
                                    row["breach_threshold"])
            metrics.KPI_VALUES.labels(row["direction"], e.status).inc()
            metrics.KPI_ATTAINMENT.labels(row["direction"]).observe(thresholds.attainment(e.value))

    async def clear(self, conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE kpi_definitions, kpi_values, kpi_reports")


def _kind(event: EventData) -> str:
    if isinstance(event, KPIAtRisk):
        return "at_risk"
    return "breached" if isinstance(event, KPIBreached) else "recovered"


class HealthReadModel:
    """health_current and health_history, and the band gauge."""

    name = "customer_health"
    handles = frozenset({HealthScoreRecorded.event_type()})

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        e = REGISTRY.decode(event.type, event.data)
        assert isinstance(e, HealthScoreRecorded)
        components = [c.model_dump(mode="json") for c in e.components]
        await conn.execute(
            "INSERT INTO health_history VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            event.id, e.agreement_id, e.score, e.band, components, list(e.moved), e.cause, e.recorded_at)
        await conn.execute(
            "INSERT INTO health_current VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (agreement_id) DO UPDATE"
            " SET score = EXCLUDED.score, band = EXCLUDED.band, components = EXCLUDED.components,"
            " moved = EXCLUDED.moved, cause = EXCLUDED.cause, recorded_at = EXCLUDED.recorded_at"
            " WHERE health_current.recorded_at <= EXCLUDED.recorded_at",
            e.agreement_id, e.score, e.band, components, list(e.moved), e.cause, e.recorded_at)
        metrics.HEALTH_SCORE.observe(e.score)
        rows = await conn.fetch("SELECT band, count(*) AS n FROM health_current GROUP BY band")
        counts: dict[str, int] = {row["band"]: row["n"] for row in rows}
        for band in ("green", "yellow", "red"):
            metrics.HEALTH_BANDS.labels(band).set(counts.get(band, 0))

    async def clear(self, conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE health_current, health_history")


class RelationshipLog:
    """The agreements and queries events of each agreement, as they happened (bus-fed)."""

    name = "relationship_events"
    handles = RELATIONSHIP_EVENTS

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        data = REGISTRY.decode(event.type, event.data)
        await conn.execute(
            "INSERT INTO relationship_events VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            event.id, event.data["agreement_id"], event.type, occurred_at(event.time, data), event.data)
        if isinstance(data, QueryAnswered):
            metrics.SLA_ANSWERS.labels(data.answered_by_side, str(data.late_by_seconds == 0).lower()).inc()

    async def clear(self, conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE relationship_events")

