"""Catch-up projections over the event store: checkpoints, rebuild, replicas."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import pytest

from accord_runtime.eventstore import EventStore, Metadata
from accord_runtime.migrations import migrate, migrations_in
from accord_runtime.projections import ProjectionRunner
from contracts import CloudEvent
from contracts.agreements import ProcedureStep
from services.agreements.domain import Agreement, stream_id
from services.agreements.domain.agreement import state_format
from services.agreements.projections import AgreementHistory, AgreementSummaries, SharedAgreements
from tests.support import eventually, rows_of

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


def _long_lived(client: uuid.UUID, provider: uuid.UUID) -> tuple[Agreement, list[list[object]]]:
    """An active agreement, and its later events in waves: breakdowns and scope changes opened in
    one wave and resolved, assessed or left open in later ones, contacts changing, status updates."""
    agreement = Agreement(uuid.uuid4())
    agreement.draft(title="Bookkeeping", summary="", client_organisation_id=client,
                    provider_organisation_id=provider, by_organisation_id=client)
    steps = [ProcedureStep(step_id=uuid.uuid4(), title="send receipts", owner_side="client", owner_role="office"),
             ProcedureStep(step_id=uuid.uuid4(), title="book them", owner_side="provider", owner_role="bookkeeper")]
    procedure_id = uuid.uuid4()
    agreement.define_procedure(provider, procedure_id=procedure_id, name="Month end", steps=steps)
    agreement.propose(client)
    agreement.accept(client)
    agreement.accept(provider)
    waves: list[list[object]] = [list(agreement.pending)]
    agreement.pending.clear()
    now = datetime.now(UTC)
    opened: list[uuid.UUID] = []
    for wave in range(6):
        breakdown_id, change_id, contact_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        agreement.report_breakdown(client, breakdown_id=breakdown_id, procedure_id=procedure_id,
                                   step_id=steps[wave % 2].step_id, what_broke=f"wave {wave}", impact="late")
        agreement.request_scope_change(client, change_id=change_id, title=f"wave {wave}", what="more", why="growth")
        agreement.assign_contact(provider, contact_id=contact_id, role="accountant", name=f"Person {wave}",
                                 email=f"p{wave}@example.com", escalation_level=1 + wave % 3)
        if opened:
            agreement.resolve_breakdown(provider, breakdown_id=opened.pop(0), fix="fixed")
        if wave % 2:
            agreement.assess_scope_change(provider, change_id=change_id, effort_hours=wave, cost_minor_units=100,
                                          currency="EUR", timeline_impact_days=1)
        for n in range(wave):
            agreement.post_status_update(provider, update_id=uuid.uuid4(), summary=f"{wave}.{n}", now=now)
        opened.append(breakdown_id)
        waves.append(list(agreement.pending))
        agreement.pending.clear()
    return agreement, waves


async def _shared_rows(pool: asyncpg.Pool) -> list[list[str]]:
    tables = ("agreement_documents", "agreement_contacts", "open_scope_changes", "open_breakdowns")
    return [await rows_of(pool, table) for table in tables]


@pytest.mark.usefixtures("agreements_schema")
async def test_shared_agreements_restored_wave_by_wave_equal_a_replay_of_the_streams(
        store: EventStore, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    restored: list[str | bytes] = []
    original = Agreement.restore.__func__  # type: ignore[attr-defined]

    def restore(cls: type[Agreement], text: str | bytes) -> Agreement:
        restored.append(text)
        return original(cls, text)  # type: ignore[no-any-return]

    monkeypatch.setattr(Agreement, "restore", classmethod(restore))
    client, provider, meta = uuid.uuid4(), uuid.uuid4(), Metadata.new("user:t")
    projections = ProjectionRunner(store, pool, [SharedAgreements()], service="test", batch_size=5,
                                   rebuild_batch_size=1000)
    agreements = [_long_lived(client, provider) for _ in range(3)]
    versions = [0] * len(agreements)
    for wave in range(7):
        for n, (agreement, waves) in enumerate(agreements):
            result = await store.append(stream_id(agreement.agreement_id), versions[n], waves[wave], meta)  # type: ignore[arg-type]
            versions[n] = result.version
        await projections.catch_up()
    incremental = await _shared_rows(pool)
    assert restored  # batches after the first of each agreement started from its stored snapshot
    documents = {r["agreement_id"]: r for r in await pool.fetch("SELECT * FROM agreement_documents")}
    for agreement, _ in agreements:
        agreement.version = sum(len(wave) for wave in _)
        assert json.loads(documents[agreement.agreement_id]["state"]) == agreement.snapshot()
        assert documents[agreement.agreement_id]["snapshot"] is None  # the jsonb copy is no longer written
        assert documents[agreement.agreement_id]["state_format"] == state_format()
    assert len(incremental[3]) == 3 and len(incremental[2]) == 6 * 3  # open breakdowns, open scope changes
    await projections.rebuild()  # every stream replayed from its start, in batches of 1,000
    assert await _shared_rows(pool) == incremental


@pytest.mark.usefixtures("agreements_schema")
async def test_a_document_of_another_state_format_is_replayed_not_restored(
        store: EventStore, pool: asyncpg.Pool) -> None:
    client, provider, meta = uuid.uuid4(), uuid.uuid4(), Metadata.new("user:t")
    projections = ProjectionRunner(store, pool, [SharedAgreements()], service="test")
    agreement, waves = _long_lived(client, provider)
    result = await store.append(stream_id(agreement.agreement_id), 0, waves[0], meta)  # type: ignore[arg-type]
    await projections.catch_up()
    # as an older build would have left it: another shape, here a title the stream never had
    await pool.execute("UPDATE agreement_documents SET state_format = 'older',"
                       " state = replace(state, '\"Bookkeeping\"', '\"Stale\"')")
    await store.append(stream_id(agreement.agreement_id), result.version, waves[1], meta)  # type: ignore[arg-type]
    await projections.catch_up()
    row = await pool.fetchrow("SELECT state, state_format FROM agreement_documents")
    assert row is not None and json.loads(row["state"])["title"] == "Bookkeeping"
    assert row["state_format"] == state_format()
    # the same stale state in this build's format is restored (which is what the format guards)
    await pool.execute("UPDATE agreement_documents SET state = replace(state, '\"Bookkeeping\"', '\"Stale\"')")
    await store.append(stream_id(agreement.agreement_id), result.version + len(waves[1]), waves[2], meta)  # type: ignore[arg-type]
    await projections.catch_up()
    assert json.loads(await pool.fetchval("SELECT state FROM agreement_documents"))["title"] == "Stale"
