"""What the agreements service does on its own: the status-update clock (a durable timer) and the
reaction to answered clarification queries from the queries service (a bus consumer).

Both run inside a transaction someone else owns (the timer scheduler's, the consumer's), so they
read and append on that transaction's connection: the events commit with the timer's firing or
with the inbox row, or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
import structlog

from accord_runtime.eventstore import AppendResult, EventStore, Metadata, retry_on_conflict_in
from accord_runtime.folds import Folded, KeptFolds
from accord_runtime.timers import Timer, cancel, schedule
from contracts import REGISTRY, CloudEvent
from contracts.queries import QueryAnswered
from services.agreements.domain import Agreement, UnknownPart, stream_id

log = structlog.get_logger(__name__)

SOURCE = "/accord/agreements"
STATUS_UPDATE_DUE = "agreements.status_update_due"


def store_on(conn: asyncpg.Connection) -> EventStore:
    """The service's event store on the caller's connection (see the module docstring)."""
    return EventStore.on_connection(conn, SOURCE)


def evolve_by(agreement: Agreement, envelopes: Iterable[CloudEvent]) -> Agreement:
    """`agreement` evolved by the next events of its stream, as the store reads them."""
    return agreement.catch_up(REGISTRY.decode(e.type, e.data) for e in envelopes)


async def load(store: EventStore, agreement_id: UUID) -> Agreement:
    return evolve_by(Agreement(agreement_id), await store.read_stream(stream_id(agreement_id)))


#: Agreements as the last decision on them in this process left them (bench/history.py): commands,
#: timers and policies that decide on an agreement take it from here, read on by the events appended
#: since, instead of replaying a stream of thousands of events; what they append, they keep.
RECENT: KeptFolds[Agreement] = KeptFolds(Agreement, evolve_by, stream_id)


def keep_appended(agreement: Agreement, result: AppendResult) -> None:
    """Keep `agreement` for the next decision on it, its pending events appended as `result`."""
    agreement.pending.clear()
    agreement.version = result.version
    RECENT.keep(agreement.agreement_id, Folded(agreement, result.version, result.envelopes[-1].id))


# --- the status-update clock --------------------------------------------------------------------

def _timer_key(agreement_id: UUID, period: int) -> str:
    return f"{agreement_id}/{period}"


async def keep_status_clock(conn: asyncpg.Connection, agreement: Agreement, period_before: int,
                            start: datetime) -> None:
    """Re-arm the status-update timer if the decision restarted the clock (call before appending).

    One timer per period: the previous period's timer is cancelled (a timer still firing holds
    its row, so this waits for it, and the append after it then meets its events), and the new
    one is set `cadence` after `start` — if the agreement is active with a cadence at all.
    """
    if agreement.status_update_period == period_before:
        return
    await cancel(conn, STATUS_UPDATE_DUE, _timer_key(agreement.agreement_id, period_before))
    cadence = agreement.status_update_cadence
    if cadence is not None:
        period = agreement.status_update_period
        await schedule(conn, STATUS_UPDATE_DUE, _timer_key(agreement.agreement_id, period),
                       start + timedelta(seconds=cadence),
                       {"agreement_id": str(agreement.agreement_id), "period": period})


async def status_update_due(conn: asyncpg.Connection, timer: Timer) -> None:
    """Timer handler: the cadence passed without a status update; record it and arm the next period."""
    agreement_id, period = UUID(timer.payload["agreement_id"]), int(timer.payload["period"])
    store = store_on(conn)

    async def attempt() -> None:
        folded = await RECENT.take(store, agreement_id)
        agreement = folded.state
        if not agreement.record_status_update_overdue(period=period, due_at=timer.due_at):
            RECENT.keep(agreement_id, folded)  # decided nothing: as it was
            return  # stale: an update arrived, the plan changed, or the agreement is not active
        cadence = agreement.status_update_cadence
        assert cadence is not None
        next_due = timer.due_at + timedelta(seconds=cadence)
        start = timer.due_at if next_due > datetime.now(UTC) else datetime.now(UTC)
        await keep_status_clock(conn, agreement, period, start)
        keep_appended(agreement, await store.append(stream_id(agreement_id), agreement.version, agreement.pending,
                                                    Metadata.new("system:agreements"), conn=conn))

    await retry_on_conflict_in(conn, attempt)


# --- clarifications answered in the queries service ---------------------------------------------

class RequirementClarifications:
    """Records a requirement's clarified revision when its clarification query is answered.

    A policy, not a read model: it appends events and owns no tables, so it has no `clear` and a
    rebuild never replays it; applying an answer twice records nothing the second time.
    """

    name = "requirement_clarifications"
    handles = frozenset({QueryAnswered.event_type()})

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        answered = REGISTRY.decode(event.type, event.data)
        assert isinstance(answered, QueryAnswered)
        if answered.about_kind != "requirement" or answered.purpose != "clarification" or answered.about_id is None:
            return
        requirement_id = answered.about_id
        store = store_on(conn)

        async def attempt() -> None:
            folded = await RECENT.take(store, answered.agreement_id)
            agreement = folded.state
            if agreement.status == "new":
                raise UnknownPart(f"no agreement {answered.agreement_id} for answered query {answered.query_id}")
            if agreement.clarify_requirement(requirement_id=requirement_id, query_id=answered.query_id,
                                             answer=answered.answer):
                keep_appended(agreement, await store.append(
                    stream_id(answered.agreement_id), agreement.version, agreement.pending,
                    Metadata(event.actor, event.correlationid, event.id), conn=conn))
            else:
                RECENT.keep(answered.agreement_id, folded)  # decided nothing: as it was
                log.info("clarification answer changes nothing", requirement_id=str(requirement_id),
                         query_id=str(answered.query_id))

        await retry_on_conflict_in(conn, attempt)
