"""Commands of the notifier: acknowledging an escalation (through the API or a signed link)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from uuid import UUID

import asyncpg

from accord_runtime.eventstore import EventStore, Metadata, retry_on_conflict
from accord_runtime.postgres import transaction
from services.notifier.chain import load, stop_chain
from services.notifier.domain import UnknownEscalation, stream_id


@dataclass(frozen=True)
class Acknowledged:
    escalation_id: UUID
    status: str
    cancelled_notifications: int


async def matter_of(pool: asyncpg.Pool, escalation_id: UUID) -> tuple[str, UUID]:
    """The escalation's matter and agreement, or `UnknownEscalation`."""
    row = await pool.fetchrow("SELECT matter, agreement_id FROM escalations WHERE escalation_id = $1", escalation_id)
    if row is None:
        raise UnknownEscalation(f"escalation {escalation_id} does not exist")
    return row["matter"], row["agreement_id"]


async def acknowledge(pool: asyncpg.Pool, store: EventStore, escalation_id: UUID, *, by: str,
                      via: Literal["api", "link"], meta: Metadata) -> Acknowledged:
    """Stop the chain: cancel its next level and every pending notification with the acknowledgement,
    in one transaction. Refused (`EscalationClosed`) once resolved or already acknowledged; racing a
    resolution, one of the two appends first and the other sees it on its retry."""
    matter, _ = await matter_of(pool, escalation_id)

    async def attempt() -> Acknowledged:
        async with transaction(pool) as conn:
            escalation = await load(EventStore.on_connection(conn, store.source), matter)
            escalation.ensure_acknowledgeable(escalation_id)  # an earlier occurrence of the matter is closed
            cancelled = await stop_chain(conn, escalation)
            escalation.acknowledge(escalation_id, by=by, via=via, cancelled=cancelled, now=datetime.now(UTC))
            await store.append(stream_id(matter), escalation.version, escalation.pending, meta, conn=conn)
        store.notify_appended()
        return Acknowledged(escalation_id, "acknowledged", cancelled)

    return await retry_on_conflict(attempt)
