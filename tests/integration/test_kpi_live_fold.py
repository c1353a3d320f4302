"""The kpi service's live relationship fold: continued from the last one only when that is sound,
and always equal to folding the agreement's whole history."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from accord_runtime.migrations import migrate, migrations_in
from accord_runtime.postgres import transaction
from contracts.queries import QueryAnswered, QueryRaised
from services.kpi import evaluation
from services.kpi.domain import KpiBook

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
