"""Loading the KPI book and the health stream, folding the relationship KPIs, and re-evaluating an
agreement's health — inside the caller's transaction (a command's, a timer's or a consumer's), so
the health events commit with whatever moved the score, or not at all."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

import asyncpg

from accord_runtime.eventstore import EventStore, Metadata
from contracts import REGISTRY
from contracts.kpi import HealthComponentName, HealthScoreRecorded, HealthWeightsSet
from services.kpi import health
from services.kpi.domain import KpiBook, stream_id
from services.kpi.relationship import Occurrence, RelationshipKpis, relationship_kpis

SOURCE = "/accord/kpi"


def store_on(conn: asyncpg.Connection) -> EventStore:
    """The service's event store on the caller's connection (the caller rings the doorbell after commit)."""
    return EventStore.on_connection(conn, SOURCE)


def health_stream(agreement_id: UUID) -> str:
    return f"health-{agreement_id}"


async def load_book(store: EventStore, agreement_id: UUID) -> KpiBook:
    envelopes = await store.read_stream(stream_id(agreement_id))
    return KpiBook.replay(agreement_id, [REGISTRY.decode(e.type, e.data) for e in envelopes])


@dataclass
class HealthState:
    """The agreement's health stream: its weights and its latest score."""

    version: int = 0
    weights: dict[HealthComponentName, float] = field(default_factory=dict)
    last: HealthScoreRecorded | None = None


async def load_health(store: EventStore, agreement_id: UUID) -> HealthState:
    state = HealthState()
    for envelope in await store.read_stream(health_stream(agreement_id)):
        state.version = envelope.sequence
        match REGISTRY.decode(envelope.type, envelope.data):
            case HealthWeightsSet() as e:
                state.weights.update({w.component: w.weight for w in e.weights})
            case HealthScoreRecorded() as e:
                state.last = e
    return state


async def relationship(conn: asyncpg.Connection, book: KpiBook, start: datetime | None = None,
                       end: datetime | None = None) -> RelationshipKpis:
    """The agreement's relationship KPIs of [start, end) from the bus-fed log and the book's reports."""
    rows = await conn.fetch(
        "SELECT event_type, occurred_at, data FROM relationship_events WHERE agreement_id = $1"
        " AND ($2::timestamptz IS NULL OR occurred_at < $2) ORDER BY occurred_at", book.agreement_id, end)
    occurrences = [Occurrence(r["occurred_at"], REGISTRY.decode(r["event_type"], r["data"])) for r in rows]
    for report in book.reports.values():
        occurrences.append(Occurrence(report.published.published_at, report.published))
        if report.acknowledged is not None:
            occurrences.append(Occurrence(report.acknowledged.acknowledged_at, report.acknowledged))
    return relationship_kpis(occurrences, start, end)


def health_inputs(book: KpiBook, kpis: RelationshipKpis) -> health.HealthInputs:
    checkin = kpis.latest_checkin
    return health.HealthInputs(
        kpi_attainment=book.kpi_attainment(),
        sla_attainment=kpis.sla_attainment(),
        overdue_queries=kpis.client.queries_overdue_open + kpis.provider.queries_overdue_open,
        unacknowledged_reports=book.overdue_unacknowledged_reports(),
        open_breakdowns=kpis.open_breakdowns,
        checkin_scores=(checkin.client_score, checkin.provider_score) if checkin else None,
        checkin_sentiments=(checkin.client_sentiment, checkin.provider_sentiment) if checkin else None,
    )


async def evaluate_health(conn: asyncpg.Connection, agreement_id: UUID, *, cause: str, meta: Metadata,
                          book: KpiBook | None = None) -> health.HealthScore:
    """Score the agreement's health now and append what changed to its health stream.

    Raises `ConcurrencyError` if another evaluation appended meanwhile: the caller retries.
    """
    store = store_on(conn)
    book = book or await load_book(store, agreement_id)
    state = await load_health(store, agreement_id)
    result = health.score(health_inputs(book, await relationship(conn, book)), state.weights)
    events = health.record(agreement_id, state.last, result, cause=cause, now=datetime.now(UTC))
    if events:
        await store.append(health_stream(agreement_id), state.version, events, meta)
    return result
