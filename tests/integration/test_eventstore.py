"""The event store against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from accord_runtime.eventstore import (
    ConcurrencyError,
    EventStore,
    Metadata,
    Position,
    RecordedEvent,
    _Append,
    _GroupCommit,
)
from accord_runtime.migrations import RUNTIME_MIGRATIONS, migrate, migrations_in
from contracts import REGISTRY
from contracts.agreements import AgreementAccepted, AgreementProposed, ScopeChangeAssessed
from tests.support import eventually

pytestmark = pytest.mark.servers


def accepted(agreement: uuid.UUID) -> AgreementAccepted:
    return AgreementAccepted(agreement_id=agreement, side="client")


async def test_append_and_read_stream(store: EventStore, pool: asyncpg.Pool) -> None:
    agreement = uuid.uuid4()
    meta = Metadata.new("user:alice")
    proposed = AgreementProposed(agreement_id=agreement, proposed_by_side="client")
    first = await store.append("agreement-1", 0, [proposed], meta)
    second = await store.append("agreement-1", 1, [accepted(agreement), accepted(agreement)], meta)
    assert (first.version, second.version) == (1, 3)
    events = await store.read_stream("agreement-1")
    assert [e.sequence for e in events] == [1, 2, 3]
    assert [e.type for e in events] == [
        "accord.agreements.AgreementProposed.v1",
        "accord.agreements.AgreementAccepted.v1",
        "accord.agreements.AgreementAccepted.v1",
    ]
    assert all(e.correlationid == meta.correlation_id and e.actor == "user:alice" for e in events)
    assert events[1].data == {"agreement_id": str(agreement), "side": "client"}
    # the outbox holds exactly the committed events, in order
    rows = await pool.fetch("SELECT event_id, routing_key FROM outbox ORDER BY global_position")
    assert [r["event_id"] for r in rows] == [e.id for e in events]
    assert rows[0]["routing_key"] == "agreements.AgreementProposed"


async def test_integers_beyond_64_bits_are_stored_and_read_exactly(store: EventStore, pool: asyncpg.Pool) -> None:
    """An unbounded integer field (here an assessment's cost) keeps every digit, in the store and
    in the outbox's envelope: neither side's JSON codec turns it into a float."""
    big = 2**70 + 1
    assessed = ScopeChangeAssessed(agreement_id=uuid.uuid4(), change_id=uuid.uuid4(), effort_hours=big,
                                   cost_minor_units=big * 3, currency="EUR", timeline_impact_days=0)
    await store.append("agreement-big", 0, [assessed], Metadata.new("user:t"))
    (event,) = await store.read_stream("agreement-big")
    assert event.data["effort_hours"] == big and event.data["cost_minor_units"] == big * 3
    assert REGISTRY.decode(event.type, event.data) == assessed
    assert await pool.fetchval("SELECT (data->>'effort_hours')::numeric = $1::numeric FROM events", str(big))
    payload = json.loads(await pool.fetchval("SELECT payload FROM outbox"))
    assert payload["data"]["cost_minor_units"] == big * 3


async def test_jsonb_comes_back_as_it_went_in(pool: asyncpg.Pool) -> None:
    """The pools' jsonb codec: every kind of JSON value, read back equal (integers as integers)."""
    value = {"big": 2**70 + 1, "below_int64": -(2**63) - 1, "float": 0.1, "tiny": 1e-300,
             "text": 'é😀\n"\\', "list": [None, True, False, 0, -1, [], {}], "nested": {"k": {"k": [1.25]}}}
    read = await pool.fetchval("SELECT $1::jsonb", value)
    assert read == value and isinstance(read["big"], int) and isinstance(read["below_int64"], int)


async def test_conflicting_append_raises_and_writes_nothing(store: EventStore, pool: asyncpg.Pool) -> None:
    agreement = uuid.uuid4()
    meta = Metadata.new("user:alice")
    await store.append("s", 0, [accepted(agreement)], meta)
    with pytest.raises(ConcurrencyError) as stale:
        await store.append("s", 0, [accepted(agreement), accepted(agreement)], meta)
    assert stale.value.actual == 1
    with pytest.raises(ConcurrencyError) as ahead:
        await store.append("s", 5, [accepted(agreement)], meta)
    assert ahead.value.actual == 1
    assert await pool.fetchval("SELECT count(*) FROM events") == 1
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1


async def test_concurrent_appends_to_one_stream_one_wins_none_lost(store: EventStore, pool: asyncpg.Pool) -> None:
    agreement = uuid.uuid4()
    meta = Metadata.new("user:alice")
    outcomes = await asyncio.gather(
        *(store.append("race", 0, [accepted(agreement)] * 2, meta) for _ in range(8)), return_exceptions=True
    )
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    losers = [o for o in outcomes if isinstance(o, ConcurrencyError)]
    assert len(winners) == 1 and len(losers) == 7
    stored = await store.read_stream("race")
    assert [e.id for e in stored] == [e.id for e in winners[0].envelopes]


async def test_every_reported_success_is_stored_under_concurrency(store: EventStore) -> None:
    """Many writers, many streams, retrying on conflict: each success's events are all there."""
    meta = Metadata.new("user:alice")
    agreement = uuid.uuid4()
    succeeded: list[uuid.UUID] = []

    async def writer(n: int) -> None:
        for i in range(25):
            stream = f"stream-{(n + i) % 4}"
            while True:
                version = len(await store.read_stream(stream))
                try:
                    result = await store.append(stream, version, [accepted(agreement)], meta)
                except ConcurrencyError:
                    continue
                succeeded.extend(e.id for e in result.envelopes)
                break

    await asyncio.gather(*(writer(n) for n in range(8)))
    stored = [e for s in range(4) for e in await store.read_stream(f"stream-{s}")]
    assert sorted(e.id for e in stored) == sorted(succeeded)
    assert len(succeeded) == 200
    for s in range(4):
        versions = [e.sequence for e in await store.read_stream(f"stream-{s}")]
        assert versions == list(range(1, len(versions) + 1))


async def test_concurrent_appends_share_commits_and_keep_their_own_order(
        store: EventStore, pool: asyncpg.Pool) -> None:
    """Appends made at the same moment are written in shared transactions (group commit), each
    with its events consecutive and in order, and a conflict fails only its own append."""
    agreement = uuid.uuid4()
    meta = Metadata.new("user:alice")
    await store.append("taken", 0, [accepted(agreement)], meta)
    outcomes = await asyncio.gather(
        *(store.append(f"s-{n}", 0, [accepted(agreement)] * 3, meta) for n in range(40)),
        store.append("taken", 0, [accepted(agreement)], meta),
        return_exceptions=True)
    assert isinstance(outcomes[-1], ConcurrencyError) and outcomes[-1].actual == 1
    assert not any(isinstance(o, BaseException) for o in outcomes[:-1])
    rows = await pool.fetch("SELECT transaction_id::text AS tx, stream_id, stream_version, event_id"
                            " FROM events WHERE stream_id LIKE 's-%' ORDER BY global_position")
    assert len(rows) == 120
    assert len({r["tx"] for r in rows}) < 40  # shared commits
    for n in range(40):
        mine = [r for r in rows if r["stream_id"] == f"s-{n}"]
        assert [r["stream_version"] for r in mine] == [1, 2, 3]
    outbox = await pool.fetch("SELECT event_id FROM outbox ORDER BY global_position")
    assert [r["event_id"] for r in outbox][1:] == [r["event_id"] for r in rows]


async def test_a_group_that_loses_a_race_writes_its_other_appends(store: EventStore, pool: asyncpg.Pool) -> None:
    """Another transaction takes a stream version while a group waits on it: the group's statement
    fails on the unique index, and every append of the group but the loser is written after all."""
    agreement = uuid.uuid4()
    meta = Metadata.new("user:alice")
    async with pool.acquire() as conn, conn.transaction():
        await EventStore.on_connection(conn, "/accord/test").append("contested", 0, [accepted(agreement)], meta)
        group = asyncio.gather(
            store.append("contested", 0, [accepted(agreement)], meta),
            *(store.append(f"other-{n}", 0, [accepted(agreement)], meta) for n in range(5)),
            return_exceptions=True)
        await eventually(lambda: _waiting_on_a_lock(pool))
    outcomes = await group  # the rival committed: the group's statement met its row
    assert isinstance(outcomes[0], ConcurrencyError)
    assert not any(isinstance(o, BaseException) for o in outcomes[1:])
    assert await pool.fetchval("SELECT count(*) FROM events") == 6
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 6


async def test_an_append_right_after_a_group_is_not_stranded(store: EventStore, pool: asyncpg.Pool) -> None:
    """With every group writer busy or just finishing, the next append is still written."""
    group = _GroupCommit(pool, writers=1)
    meta = Metadata.new("user:alice")
    async with asyncio.timeout(10):
        for n in range(20):
            envelope = store.envelope(f"one-by-one-{n}", 1, accepted(uuid.uuid4()), meta, datetime.now(UTC))
            await group.write(_Append(f"one-by-one-{n}", 0, [envelope]))
    assert await pool.fetchval("SELECT count(*) FROM events") == 20


async def _waiting_on_a_lock(pool: asyncpg.Pool) -> bool:
    return bool(await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"))


async def test_read_all_never_skips_a_late_commit(store: EventStore, pool: asyncpg.Pool) -> None:
    """A transaction that got its global position first but commits last is still read, in turn."""
    agreement = uuid.uuid4()
    meta = Metadata.new("user:alice")
    async with pool.acquire() as slow:
        tx = slow.transaction()
        await tx.start()
        await store.append("slow", 0, [accepted(agreement)], meta, conn=slow)  # lower global position
        await store.append("fast", 0, [accepted(agreement)], meta)  # committed first
        # The reader must not move past the open transaction, even though "fast" is committed.
        seen = await store.read_all(Position(0, 0))
        assert seen == []
        await tx.commit()
    # Visible once no older transaction runs anywhere in the cluster (others may be running now).
    seen = await eventually(lambda: _read_at_least(store, Position(0, 0), 2))
    assert [e.envelope.subject for e in seen] == ["slow", "fast"]
    assert await store.read_all(seen[-1].position) == []


async def test_read_all_pages_in_global_order(store: EventStore) -> None:
    meta = Metadata.new("user:alice")
    agreement = uuid.uuid4()
    for n in range(5):
        await store.append(f"p-{n}", 0, [accepted(agreement), accepted(agreement)], meta)
    await eventually(lambda: _read_at_least(store, Position(0, 0), 10))
    page1 = await store.read_all(Position(0, 0), limit=4)
    page2 = await store.read_all(page1[-1].position, limit=4)
    page3 = await store.read_all(page2[-1].position, limit=4)
    everything = page1 + page2 + page3
    assert len(everything) == 10
    assert [e.position for e in everything] == sorted(e.position for e in everything)


async def test_migrations_are_idempotent_and_serialized(database_url: str, schema: str) -> None:
    migrations = migrations_in("runtime", RUNTIME_MIGRATIONS)
    conns = [await asyncpg.connect(database_url) for _ in range(3)]
    try:
        applied = await asyncio.gather(*(migrate(c, schema, migrations) for c in conns))
        assert sorted(len(a) for a in applied) == [0, 0, len(migrations)]
        assert await migrate(conns[0], schema, migrations) == []
        tables = await conns[0].fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema)
        assert {"events", "outbox", "projection_checkpoints", "inbox", "schema_migrations"} <= {
            t["table_name"] for t in tables}
    finally:
        for c in conns:
            await c.close()


async def _read_at_least(store: EventStore, after: Position, count: int) -> list[RecordedEvent]:
    events = await store.read_all(after)
    return events if len(events) >= count else []
