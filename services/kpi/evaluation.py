"""Loading the KPI book and the health stream, folding the relationship KPIs, and re-evaluating an
agreement's health — inside the caller's transaction (a command's, a timer's or a consumer's), so
the health events commit with whatever moved the score, or not at all."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

import asyncpg

from accord_runtime.eventstore import EventStore, Metadata
from accord_runtime.folds import KeptFolds
from contracts import REGISTRY, CloudEvent
from contracts.kpi import HealthComponentName, HealthScoreRecorded, HealthWeightsSet
from services.kpi import health
from services.kpi.domain import KpiBook, stream_id
from services.kpi.relationship import Occurrence, RelationshipFold, RelationshipKpis, relationship_kpis

SOURCE = "/accord/kpi"


def store_on(conn: asyncpg.Connection) -> EventStore:
    """The service's event store on the caller's connection (the caller rings the doorbell after commit)."""
    return EventStore.on_connection(conn, SOURCE)


def health_stream(agreement_id: UUID) -> str:
    return f"health-{agreement_id}"


async def load_book(store: EventStore, agreement_id: UUID) -> KpiBook:
    return _fold_book(KpiBook(agreement_id), await store.read_stream(stream_id(agreement_id)))


def _fold_book(book: KpiBook, envelopes: list[CloudEvent]) -> KpiBook:
    return book.catch_up(REGISTRY.decode(e.type, e.data) for e in envelopes)


@dataclass
class HealthState:
    """The agreement's health stream: its weights and its latest score."""

    version: int = 0
    weights: dict[HealthComponentName, float] = field(default_factory=dict)
    last: HealthScoreRecorded | None = None

    def apply(self, envelopes: Iterable[CloudEvent]) -> HealthState:
        for envelope in envelopes:
            self.version = envelope.sequence
            match REGISTRY.decode(envelope.type, envelope.data):
                case HealthWeightsSet() as e:
                    self.weights.update({w.component: w.weight for w in e.weights})
                case HealthScoreRecorded() as e:
                    self.last = e
        return self


async def load_health(store: EventStore, agreement_id: UUID) -> HealthState:
    return HealthState().apply(await store.read_stream(health_stream(agreement_id)))


#: Agreements whose KPI book, health state and relationship fold this process keeps (the least
#: recently scored go first): the next score of one reads on from them instead of from the start.
RECENT_AGREEMENTS = 256
_BOOKS: KeptFolds[KpiBook] = KeptFolds(KpiBook, _fold_book, stream_id, size=RECENT_AGREEMENTS)
_HEALTH: KeptFolds[HealthState] = KeptFolds(lambda _: HealthState(), HealthState.apply, health_stream,
                                            size=RECENT_AGREEMENTS)


async def relationship(conn: asyncpg.Connection, book: KpiBook, start: datetime | None = None,
                       end: datetime | None = None) -> RelationshipKpis:
    """The agreement's relationship KPIs of [start, end) from the bus-fed log and the book's reports."""
    return relationship_kpis([*await _logged(conn, book.agreement_id, before=end), *_reported(book)], start, end)


async def _logged(conn: asyncpg.Connection, agreement_id: UUID, *, before: datetime | None = None,
                  after: datetime | None = None) -> list[Occurrence]:
    """The agreement's occurrences in the relationship log, in [after, before) where given."""
    rows = await conn.fetch(
        "SELECT event_type, occurred_at, data FROM relationship_events WHERE agreement_id = $1"
        " AND ($2::timestamptz IS NULL OR occurred_at < $2) AND ($3::timestamptz IS NULL OR occurred_at > $3)"
        " ORDER BY occurred_at", agreement_id, before, after)
    return [Occurrence(r["occurred_at"], REGISTRY.decode(r["event_type"], r["data"])) for r in rows]


def _reported(book: KpiBook) -> list[Occurrence]:
    """The book's report events, as occurrences of the relationship."""
    occurrences = []
    for report in book.reports.values():
        occurrences.append(Occurrence(report.published.published_at, report.published))
        if report.acknowledged is not None:
            occurrences.append(Occurrence(report.acknowledged.acknowledged_at, report.acknowledged))
    return occurrences


@dataclass
class _LiveFold:
    """An agreement's live relationship fold, and what it folded: the log's rows and the book's
    report events up to the fold's `last`, and the transaction that read them."""

    fold: RelationshipFold
    logged: int
    reported: int
    transaction: str


_LIVE: OrderedDict[UUID, _LiveFold] = OrderedDict()


async def live_relationship(conn: asyncpg.Connection, book: KpiBook) -> RelationshipKpis:
    """`relationship(conn, book)` for all time, continued from this process's last fold of the
    agreement (`RECENT_AGREEMENTS`): the log's rows after it are folded on, instead of the
    agreement's whole history again (bench/kpi_health.py).

    The last fold is used only if the transaction that read it committed and nothing earlier than
    its last occurrence has arrived since (the same number of rows and report events up to it);
    otherwise everything is folded again.
    """
    agreement_id, reported = book.agreement_id, _reported(book)
    live = _LIVE.pop(agreement_id, None)
    if live is not None and live.fold.last is not None:
        last = live.fold.last
        check = await conn.fetchrow(
            "SELECT count(*) AS logged, pg_current_xact_id()::text AS transaction,"
            " pg_xact_status($3::text::xid8) IS NOT DISTINCT FROM 'committed' AS committed"
            " FROM relationship_events WHERE agreement_id = $1 AND occurred_at <= $2",
            agreement_id, last, live.transaction)
        assert check is not None
        if check["committed"] and check["logged"] == live.logged \
                and sum(1 for o in reported if o.at <= last) == live.reported:
            logged = await _logged(conn, agreement_id, after=last)
            live.fold.add([*logged, *(o for o in reported if o.at > last)])
            live.logged += len(logged)
            live.reported = len(reported)  # all of them are at or before the new last now
            return _keep(agreement_id, live, check["transaction"])
    logged = await _logged(conn, agreement_id)
    fold = RelationshipFold()
    fold.add([*logged, *reported])
    transaction = str(await conn.fetchval("SELECT pg_current_xact_id()::text"))
    return _keep(agreement_id, _LiveFold(fold, len(logged), len(reported), transaction), transaction)


def _keep(agreement_id: UUID, live: _LiveFold, transaction: str) -> RelationshipKpis:
    live.transaction = transaction
    _LIVE[agreement_id] = live
    while len(_LIVE) > RECENT_AGREEMENTS:
        _LIVE.popitem(last=False)
    return live.fold.kpis()


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
    book_read = None if book is not None else await _BOOKS.take(store, agreement_id)
    if book_read is not None:
        book = book_read.state
    assert book is not None
    health_read = await _HEALTH.take(store, agreement_id)
    state = health_read.state
    result = health.score(health_inputs(book, await live_relationship(conn, book)), state.weights)
    events = health.record(agreement_id, state.last, result, cause=cause, now=datetime.now(UTC))
    if events:
        await store.append(health_stream(agreement_id), state.version, events, meta)
    if book_read is not None:
        _BOOKS.keep(agreement_id, book_read)
    _HEALTH.keep(agreement_id, health_read)
    return result
