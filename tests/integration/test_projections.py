"""Catch-up projections over the event store: checkpoints, rebuild, replicas."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import asyncpg
import pytest

from accord_runtime.eventstore import EventStore, Metadata
from accord_runtime.migrations import migrate, migrations_in
from accord_runtime.projections import ProjectionRunner
from contracts import CloudEvent
from services.agreements.domain import Agreement, stream_id
from services.agreements.projections import AgreementHistory, AgreementSummaries
from tests.support import eventually

pytestmark = pytest.mark.servers


@pytest.fixture
async def agreements_schema(pool: asyncpg.Pool, schema: str) -> None:
    async with pool.acquire() as conn:
        await migrate(conn, schema, migrations_in("agreements", "services.agreements"))


async def seed(store: EventStore, count: int) -> None:
    client, provider = uuid.uuid4(), uuid.uuid4()
    for n in range(count):
        agreement = Agreement(uuid.uuid4())
        agreement.draft(title=f"Agreement {n}", summary="", client_organisation_id=client,
                        provider_organisation_id=provider, by_organisation_id=client)
        if n % 2:
            agreement.propose(client)
            agreement.accept(client)
        if n % 3 == 0 and agreement.status == "proposed":
            agreement.accept(provider)
        await store.append(stream_id(agreement.agreement_id), 0, agreement.pending, Metadata.new("user:t"))


async def snapshot(pool: asyncpg.Pool) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    summaries = await pool.fetch("SELECT * FROM agreement_summaries ORDER BY agreement_id")
    history = await pool.fetch("SELECT * FROM agreement_history ORDER BY agreement_id, sequence")
    return summaries, history


def runner(store: EventStore, pool: asyncpg.Pool, batch_size: int = 7) -> ProjectionRunner:
    return ProjectionRunner(store, pool, [AgreementSummaries(), AgreementHistory()], service="test",
                            batch_size=batch_size, rebuild_batch_size=batch_size + 4)


@pytest.mark.usefixtures("agreements_schema")
async def test_rebuild_equals_incremental(store: EventStore, pool: asyncpg.Pool) -> None:
    projections = runner(store, pool)
    for _ in range(4):  # incremental: catch up after each wave of commands
        await seed(store, 5)
        await projections.catch_up()
    incremental = await snapshot(pool)
    assert len(incremental[0]) == 20 and len(incremental[1]) > 20
    assert {r["status"] for r in incremental[0]} == {"draft", "proposed", "active"}
    rebuilt_events = await projections.rebuild()
    assert rebuilt_events == await pool.fetchval("SELECT count(*) FROM events")
    assert await snapshot(pool) == incremental
    assert await projections.catch_up() == 0  # checkpoint at the end: nothing applied twice


@pytest.mark.usefixtures("agreements_schema")
async def test_rebuilding_one_projection_leaves_the_other(store: EventStore, pool: asyncpg.Pool) -> None:
    projections = runner(store, pool)
    await seed(store, 3)
    await projections.catch_up()
    before = await snapshot(pool)
    await pool.execute("UPDATE agreement_summaries SET title = 'corrupted'")
    await projections.rebuild(["agreement_summaries"])
    assert await snapshot(pool) == before


@pytest.mark.usefixtures("agreements_schema")
async def test_replicas_never_apply_an_event_twice(store: EventStore, pool: asyncpg.Pool) -> None:
    """Two runners racing over the same store (a unique key in history would fail on a double apply)."""
    replicas = [runner(store, pool, batch_size=3), runner(store, pool, batch_size=5)]

    async def keep_catching_up(r: ProjectionRunner) -> None:
        for _ in range(30):
            await r.catch_up()
            await asyncio.sleep(0)

    await asyncio.gather(seed(store, 30), *(keep_catching_up(r) for r in replicas))
    await replicas[0].catch_up()
    summaries, history = await snapshot(pool)
    assert len(summaries) == 30
    assert len(history) == await pool.fetchval("SELECT count(*) FROM events")


@pytest.mark.usefixtures("agreements_schema")
async def test_a_rebuild_beside_a_running_runner_and_new_commands_applies_everything_once(
        store: EventStore, pool: asyncpg.Pool) -> None:
    """While a rebuild replays, commands go on and the service's runner keeps catching up: in the
    end each projection equals a fold of the store (history's unique key fails on a double apply)."""
    await seed(store, 20)
    live, rebuilding = runner(store, pool, batch_size=4), runner(store, pool, batch_size=3)
    await live.catch_up()

    async def commands_and_catch_ups() -> None:
        for _ in range(10):
            await seed(store, 2)
            await live.catch_up()

    rebuilt, _ = await asyncio.gather(rebuilding.rebuild(), commands_and_catch_ups())
    await live.catch_up()
    summaries, history = await snapshot(pool)
    assert len(summaries) == 40
    assert len(history) == await pool.fetchval("SELECT count(*) FROM events")
    assert rebuilt > 20


class Failing(AgreementHistory):
    """The history projection, failing on the agreement titled `poison`."""

    def __init__(self, poison: str) -> None:
        self.poison = poison

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[CloudEvent]) -> None:
        if any(e.data.get("title") == self.poison for e in events):
            raise RuntimeError("this projection fails on purpose")
        await super().apply_batch(conn, events)


@pytest.mark.usefixtures("agreements_schema")
async def test_a_projection_failing_in_a_rebuild_stops_it_with_its_error(
        store: EventStore, pool: asyncpg.Pool) -> None:
    """The rebuild raises the projection's own error; the other projection's transactions still
    running are cancelled; a rebuild of working projections afterwards gives the full read models."""
    await seed(store, 30)
    failing = ProjectionRunner(store, pool, [AgreementSummaries(), Failing("Agreement 17")], service="test",
                               rebuild_batch_size=6)
    with pytest.raises(RuntimeError, match="fails on purpose"):
        await failing.rebuild()
    assert await pool.fetchval("SELECT count(*) FROM agreement_history") < await pool.fetchval(
        "SELECT count(*) FROM events")
    await runner(store, pool).rebuild()
    summaries, history = await snapshot(pool)
    assert len(summaries) == 30
    assert len(history) == await pool.fetchval("SELECT count(*) FROM events")


@pytest.mark.usefixtures("agreements_schema")
async def test_running_runner_wakes_on_ring(store: EventStore, pool: asyncpg.Pool) -> None:
    projections = ProjectionRunner(store, pool, [AgreementSummaries()], service="test", poll_interval=30)
    store.on_append(projections.ring)
    task = asyncio.create_task(projections.run())
    try:
        await asyncio.sleep(0.05)
        started = asyncio.get_running_loop().time()
        await seed(store, 1)
        await eventually(lambda: pool.fetchval("SELECT count(*) FROM agreement_summaries"), interval=0.005)
        assert asyncio.get_running_loop().time() - started < 1.0  # far below the 30 s poll
    finally:
        projections.stop()
        await asyncio.wait_for(task, 5)


class _Settings:
    """A projection noting the transaction's `synchronous_commit` each time it is applied."""

    name = "settings_probe"

    def __init__(self, handles: frozenset[str]) -> None:
        self.handles = handles
        self.seen: list[str] = []

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        self.seen.append(await conn.fetchval("SELECT current_setting('synchronous_commit')"))

    async def clear(self, conn: asyncpg.Connection) -> None:
        pass


@pytest.mark.usefixtures("agreements_schema")
async def test_projection_batches_commit_without_waiting_for_the_flush_and_appends_still_do(
        store: EventStore, pool: asyncpg.Pool) -> None:
    """Batches and rebuild steps are replayed from the store if a crash loses them; appends are not."""
    probe = _Settings(AgreementSummaries.handles)
    projections = ProjectionRunner(store, pool, [AgreementSummaries(), probe], service="test")
    await seed(store, 2)
    await projections.catch_up()
    await projections.rebuild()
    assert probe.seen and set(probe.seen) == {"off"}
    assert await pool.fetchval("SELECT current_setting('synchronous_commit')") == "on"  # SET LOCAL ended


class _Appending(_Settings):
    """A projection that (wrongly) appends an event of its own for each one it sees."""

    def __init__(self, store: EventStore, handles: frozenset[str]) -> None:
        super().__init__(handles)
        self.store = store

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        agreement, client = Agreement(uuid.uuid4()), uuid.uuid4()
        agreement.draft(title="echo", summary="", client_organisation_id=client,
                        provider_organisation_id=uuid.uuid4(), by_organisation_id=client)
        await self.store.append(stream_id(agreement.agreement_id), 0, agreement.pending,
                                Metadata.new("user:t"), conn=conn)


@pytest.mark.usefixtures("agreements_schema")
async def test_a_runner_projection_that_appends_fails_and_leaves_nothing(
        store: EventStore, pool: asyncpg.Pool) -> None:
    """Its batch commits without a flush, so the relay could publish an event a crash then loses."""
    await seed(store, 1)
    events = await pool.fetchval("SELECT count(*) FROM events")
    projections = ProjectionRunner(store, pool, [AgreementSummaries(), _Appending(store, AgreementSummaries.handles)],
                                   service="test")
    with pytest.raises(RuntimeError, match="may write only its own tables"):
        await projections.catch_up()
    assert await pool.fetchval("SELECT count(*) FROM events") == events
    assert await pool.fetchval("SELECT count(*) FROM outbox") == events
    assert await pool.fetchval("SELECT count(*) FROM agreement_summaries") == 0
