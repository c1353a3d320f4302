"""The kpi service's live relationship fold and health state: read on from the last ones only when
that is sound, and always equal to reading the agreement's whole history."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from accord_runtime.eventstore import EventStore, Metadata
from accord_runtime.migrations import migrate, migrations_in
from accord_runtime.postgres import transaction
from contracts.queries import QueryAnswered, QueryRaised
from services.kpi import evaluation, health
from services.kpi.domain import KpiBook
from tests.support import stream_reads

pytestmark = [pytest.mark.servers, pytest.mark.usefixtures("kpi_schema")]

START = datetime(2026, 3, 2, 9, tzinfo=UTC)


@pytest.fixture
async def kpi_schema(pool: asyncpg.Pool, schema: str) -> None:
    async with pool.acquire() as conn:
        await migrate(conn, schema, migrations_in("kpi", "services.kpi"))


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[datetime | None]:
    """The `after` of every read of the relationship log: None for the whole history."""
    seen: list[datetime | None] = []
    logged = evaluation._logged

    async def spy(conn: asyncpg.Connection, agreement_id: uuid.UUID, *, before: datetime | None = None,
                  after: datetime | None = None) -> list[evaluation.Occurrence]:
        seen.append(after)
        return await logged(conn, agreement_id, before=before, after=after)

    monkeypatch.setattr(evaluation, "_logged", spy)
    return seen


async def log_query(conn: asyncpg.Connection | asyncpg.Pool, agreement_id: uuid.UUID, at: datetime,
                    *, answered_after: timedelta | None = None) -> None:
    """A query raised at `at` (and answered `answered_after` later) in the relationship log."""
    raised = QueryRaised(query_id=uuid.uuid4(), agreement_id=agreement_id, raised_by_side="client",
                         addressed_to_side="provider", priority="normal", subject="s", body="b", raised_at=at)
    rows = [(raised, at)]
    if answered_after is not None:
        rows.append((QueryAnswered(query_id=raised.query_id, agreement_id=agreement_id, answered_by_side="provider",
                                   answer="a", answered_at=at + answered_after), at + answered_after))
    for data, when in rows:
        await conn.execute("INSERT INTO relationship_events VALUES ($1, $2, $3, $4, $5::text::jsonb)", uuid.uuid4(),
                           agreement_id, data.event_type(), when, json.dumps(data.model_dump(mode="json")))


async def live_and_whole(pool: asyncpg.Pool, book: KpiBook) -> tuple[object, object]:
    async with transaction(pool) as conn:
        return await evaluation.live_relationship(conn, book), await evaluation.relationship(conn, book)


async def test_later_rows_are_folded_on_and_earlier_ones_fold_everything_again(
        pool: asyncpg.Pool, reads: list[datetime | None]) -> None:
    agreement_id = uuid.uuid4()
    book = KpiBook.replay(agreement_id, [])
    for n in range(5):
        await log_query(pool, agreement_id, START + timedelta(hours=n), answered_after=timedelta(minutes=30))
    live, whole = await live_and_whole(pool, book)
    assert live == whole and live.provider.queries_answered == 5  # type: ignore[attr-defined]
    # a later query: only what came after the last fold is read
    await log_query(pool, agreement_id, START + timedelta(days=1), answered_after=timedelta(hours=2))
    reads.clear()
    live, whole = await live_and_whole(pool, book)
    assert live == whole and reads[0] == START + timedelta(hours=4, minutes=30)  # the last one folded before
    # an earlier one arrives late: everything is folded again
    await log_query(pool, agreement_id, START - timedelta(days=1), answered_after=timedelta(hours=1))
    reads.clear()
    live, whole = await live_and_whole(pool, book)
    assert live == whole and reads[0] is None
    assert live.provider.queries_answered == 7  # type: ignore[attr-defined]


async def test_a_fold_read_in_a_transaction_that_rolled_back_is_not_continued(
        pool: asyncpg.Pool, reads: list[datetime | None]) -> None:
    agreement_id = uuid.uuid4()
    book = KpiBook.replay(agreement_id, [])
    await log_query(pool, agreement_id, START, answered_after=timedelta(minutes=30))
    await live_and_whole(pool, book)
    # a query logged and folded in a transaction that then rolls back …
    conn = await pool.acquire()
    try:
        tx = conn.transaction()
        await tx.start()
        await log_query(conn, agreement_id, START + timedelta(hours=5))
        assert (await evaluation.live_relationship(conn, book)).provider.queries_answered == 1  # type: ignore[union-attr]
        await tx.rollback()
    finally:
        await pool.release(conn)
    # … and another, committed, making as many rows up to that time again: counting could not tell
    await log_query(pool, agreement_id, START + timedelta(hours=4), answered_after=timedelta(hours=2))
    reads.clear()
    live, whole = await live_and_whole(pool, book)
    assert live == whole and reads[0] is None
    assert live.provider.queries_answered == 2  # type: ignore[attr-defined]


async def append_score(conn: asyncpg.Connection | asyncpg.Pool, agreement_id: uuid.UUID, version: int,
                       share: float) -> int:
    """One more score on the agreement's health stream (at `version` + 1); the new version."""
    store = evaluation.store_on(conn) if isinstance(conn, asyncpg.Connection) else EventStore(conn, "/accord/kpi")
    events = health.record(agreement_id, None, health.score(health.HealthInputs(sla_attainment=share)),
                           cause="test", now=START)
    return (await store.append(evaluation.health_stream(agreement_id), version, events, Metadata.new("user:t"))).version


async def whole_health(pool: asyncpg.Pool, agreement_id: uuid.UUID) -> evaluation.HealthState:
    store = EventStore(pool, "/accord/kpi")
    return evaluation.HealthState().apply(await store.read_stream(evaluation.health_stream(agreement_id)))


async def test_a_kept_state_is_read_on_from_the_event_it_was_folded_up_to(
        pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    agreement_id, store = uuid.uuid4(), EventStore(pool, "/accord/kpi")
    version = await append_score(pool, agreement_id, 0, 0.5)
    version = await append_score(pool, agreement_id, version, 0.6)
    first = await evaluation._HEALTH.take(store, agreement_id)
    assert first.state == await whole_health(pool, agreement_id)
    evaluation._HEALTH.keep(agreement_id, first)
    folded_up_to = first.version
    version = await append_score(pool, agreement_id, version, 0.7)
    froms = stream_reads(store, monkeypatch)
    read = await evaluation._HEALTH.take(store, agreement_id)
    assert read.state == await whole_health(pool, agreement_id) and read.state.version == read.version == version
    assert froms == [folded_up_to]  # from the event it was folded up to, not from the start
    # taken, it is the caller's alone: another take meanwhile folds the stream again
    again = await evaluation._HEALTH.take(store, agreement_id)
    assert again is not read and again.state == read.state and froms[-1] == 1


async def test_a_state_folded_in_a_transaction_that_rolled_back_is_folded_again(pool: asyncpg.Pool) -> None:
    agreement_id, store = uuid.uuid4(), EventStore(pool, "/accord/kpi")
    version = await append_score(pool, agreement_id, 0, 0.5)
    evaluation._HEALTH.keep(agreement_id, await evaluation._HEALTH.take(store, agreement_id))
    conn = await pool.acquire()
    try:
        tx = conn.transaction()
        await tx.start()
        rolled_back = await append_score(conn, agreement_id, version, 0.9)  # folded, then rolled back
        read = await evaluation._HEALTH.take(evaluation.store_on(conn), agreement_id)
        assert read.version == rolled_back
        evaluation._HEALTH.keep(agreement_id, read)
        await tx.rollback()
    finally:
        await pool.release(conn)
    await append_score(pool, agreement_id, version, 0.2)  # other events at the same versions
    read = await evaluation._HEALTH.take(store, agreement_id)
    assert read.state == await whole_health(pool, agreement_id)
