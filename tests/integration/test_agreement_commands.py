"""Commands on an agreement through `handlers.change_agreement`: the agreement a command left is
read on by the events appended since (`accord_runtime.folds`), never decided on as it was."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from accord_runtime.eventstore import EventStore, Metadata
from accord_runtime.migrations import migrate, migrations_in
from contracts.agreements import AgreementResumed, AgreementSuspended
from services.agreements import handlers
from services.agreements.domain import Agreement, InvalidTransition, stream_id
from services.agreements.reactions import RECENT, keep_appended, store_on
from tests.support import stream_reads

pytestmark = [pytest.mark.servers, pytest.mark.usefixtures("agreements_schema")]

CLIENT, PROVIDER = uuid.uuid4(), uuid.uuid4()
META = Metadata.new("user:t")


@pytest.fixture
async def agreements_schema(pool: asyncpg.Pool, schema: str) -> None:
    async with pool.acquire() as conn:
        await migrate(conn, schema, migrations_in("agreements", "services.agreements"))


@pytest.fixture
def reads(store: EventStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The `from_version` of every stream read of the store."""
    return stream_reads(store, monkeypatch)


async def active(store: EventStore) -> uuid.UUID:
    agreement = Agreement(uuid.uuid4())
    agreement.draft(title="Bookkeeping", summary="", client_organisation_id=CLIENT,
                    provider_organisation_id=PROVIDER, by_organisation_id=CLIENT)
    agreement.propose(CLIENT)
    agreement.accept(CLIENT)
    agreement.accept(PROVIDER)
    await store.append(stream_id(agreement.agreement_id), 0, agreement.pending, META)
    return agreement.agreement_id


def post_update(summary: str) -> handlers.Decision:
    return lambda a, now: a.post_status_update(PROVIDER, update_id=uuid.uuid4(), summary=summary, now=now)


async def test_the_next_command_reads_only_the_events_after_the_last_one(
        store: EventStore, pool: asyncpg.Pool, reads: list[int]) -> None:
    ctx = handlers.Context(store, pool)
    agreement_id = await active(store)
    first = await handlers.change_agreement(ctx, agreement_id, META, post_update("one"))
    second = await handlers.change_agreement(ctx, agreement_id, META, post_update("two"))
    assert (first.version, second.version) == (6, 7)
    assert reads == [1, 6]  # the whole stream once, then from the first command's event on
    events = await store.read_stream(stream_id(agreement_id))
    assert [e.data.get("summary") for e in events[-2:]] == ["one", "two"]


async def test_events_appended_by_others_are_caught_up_before_deciding(
        store: EventStore, pool: asyncpg.Pool, reads: list[int]) -> None:
    ctx = handlers.Context(store, pool)
    agreement_id = await active(store)
    await handlers.change_agreement(ctx, agreement_id, META, post_update("one"))
    # another replica suspends the agreement: resuming it is now allowed, posting is not
    await store.append(stream_id(agreement_id), 6, [AgreementSuspended(
        agreement_id=agreement_id, side="client", reason="audit")], META)
    with pytest.raises(InvalidTransition):
        await handlers.change_agreement(ctx, agreement_id, META, post_update("refused"))
    resumed = await handlers.change_agreement(ctx, agreement_id, META, lambda a, _: a.resume(CLIENT, "done"))
    assert resumed.status == "active" and resumed.version == 8
    events = await store.read_stream(stream_id(agreement_id))
    assert [e.type for e in events[-2:]] == [AgreementSuspended.event_type(), AgreementResumed.event_type()]
    assert reads[:2] == [1, 6]  # caught up by the one event, not replayed (the refused command replays)


async def test_a_refused_decision_leaves_nothing_behind(store: EventStore, pool: asyncpg.Pool) -> None:
    ctx = handlers.Context(store, pool)
    agreement_id = await active(store)
    await handlers.change_agreement(ctx, agreement_id, META, post_update("one"))

    def half_done(agreement: Agreement, now: object) -> None:
        agreement.post_status_update(PROVIDER, update_id=uuid.uuid4(), summary="never appended", now=now)  # type: ignore[arg-type]
        raise InvalidTransition("changed its mind")

    with pytest.raises(InvalidTransition):
        await handlers.change_agreement(ctx, agreement_id, META, half_done)
    after = await handlers.change_agreement(ctx, agreement_id, META, post_update("two"))
    assert after.version == 7
    replayed = await handlers.load_agreement(store, agreement_id)
    assert replayed.status_updates_posted == 2 and replayed.last_status_update is not None
    assert replayed.last_status_update.summary == "two"


async def test_a_decision_kept_in_a_transaction_that_rolled_back_is_not_seen(
        store: EventStore, pool: asyncpg.Pool) -> None:
    """Timers and policies keep what they decide before their caller's transaction commits."""
    ctx = handlers.Context(store, pool)
    agreement_id = await active(store)
    await handlers.change_agreement(ctx, agreement_id, META, post_update("one"))
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        on_conn = store_on(conn)
        agreement = (await RECENT.take(on_conn, agreement_id)).state
        agreement.suspend(CLIENT, "audit")
        keep_appended(agreement, await on_conn.append(stream_id(agreement_id), agreement.version,
                                                      agreement.pending, META, conn=conn))
        await tx.rollback()
    # another replica appends at the version the rolled-back suspension had
    elsewhere = await handlers.load_agreement(store, agreement_id)
    post_update("elsewhere")(elsewhere, datetime.now(UTC))
    await store.append(stream_id(agreement_id), elsewhere.version, elsewhere.pending, META)
    # the suspension never happened: resuming is refused, posting is allowed
    with pytest.raises(InvalidTransition):
        await handlers.change_agreement(ctx, agreement_id, META, lambda a, _: a.resume(CLIENT, "done"))
    posted = await handlers.change_agreement(ctx, agreement_id, META, post_update("two"))
    assert posted.status == "active" and posted.version == 8
