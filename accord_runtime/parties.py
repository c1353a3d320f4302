"""The parties of every agreement, and the side a caller is on — what every service authorizes by.

Only the organisations named as client and provider of an agreement may see or change anything
of it. Services other than agreements keep this table from the bus (`with_parties()`), so
they authorize without asking the agreements service.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal
from uuid import UUID

import asyncpg
from fastapi import HTTPException, status

from accord_runtime.identity import IdentityProjection, Principal
from accord_runtime.projections import EventHandler, uuid_from
from accord_runtime.service import ConsumerDefinition
from contracts import REGISTRY, CloudEvent, EventData
from contracts.agreements import (
    AgreementActivated,
    AgreementDrafted,
    AgreementProposed,
    AgreementRenewed,
    AgreementResumed,
    AgreementSuspended,
    AgreementTerminated,
)

Side = Literal["client", "provider"]

_STATUS: dict[type[EventData], str] = {
    AgreementProposed: "proposed",
    AgreementActivated: "active",
    AgreementSuspended: "suspended",
    AgreementResumed: "active",
    AgreementTerminated: "terminated",
    AgreementRenewed: "active",
}


class AgreementParties:
    """agreement id → client and provider organisations, title and lifecycle status."""

    name = "agreement_parties"
    handles = frozenset([AgreementDrafted.event_type(), *(m.event_type() for m in _STATUS)])

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        await self.apply_batch(conn, [event])

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[CloudEvent]) -> None:
        """Insert the drafted agreements, then apply the status changes in order (one round trip each)."""
        drafted, changes = [], []
        for event in events:
            data = REGISTRY.decode(event.type, event.data)
            if isinstance(data, AgreementDrafted):
                drafted.append((data.agreement_id, data.client_organisation_id, data.provider_organisation_id,
                                data.title, event.time))
            else:
                changes.append((uuid_from(event.data["agreement_id"]), _STATUS[type(data)], event.time))
        if drafted:
            await conn.executemany("INSERT INTO agreement_parties VALUES ($1, $2, $3, $4, 'draft', $5)"
                                   " ON CONFLICT (agreement_id) DO NOTHING", drafted)
        if changes:
            await conn.executemany("UPDATE agreement_parties SET status = $2, updated_at = $3"
                                   " WHERE agreement_id = $1 AND updated_at <= $3", changes)

    async def clear(self, conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE agreement_parties")


async def organisations_of(conn: asyncpg.Pool | asyncpg.Connection, agreement_id: UUID) -> tuple[UUID, UUID] | None:
    """The agreement's (client, provider) organisations, if it is known here."""
    row = await conn.fetchrow(
        "SELECT client_organisation_id, provider_organisation_id FROM agreement_parties WHERE agreement_id = $1",
        agreement_id)
    return None if row is None else (row["client_organisation_id"], row["provider_organisation_id"])


async def side_of(pool: asyncpg.Pool | asyncpg.Connection, principal: Principal, agreement_id: UUID) -> Side:
    """The caller's side of the agreement: 404 if the agreement is unknown here, 403 if not a party."""
    organisations = await organisations_of(pool, agreement_id)
    if organisations is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"agreement {agreement_id} does not exist")
    client, provider = organisations
    if principal.organisation_id == client:
        return "client"
    if principal.organisation_id == provider:
        return "provider"
    raise HTTPException(status.HTTP_403_FORBIDDEN, "your organisation is not a party to this agreement")


def with_parties(name: str, *handlers: EventHandler) -> ConsumerDefinition:
    """A consumer of the agreements service's events that first keeps what a service other than
    agreements authenticates and authorizes callers by: the identity events (tokens) and the
    agreements' parties. One queue for both, so each event is received and stored once: the
    parties had a queue of their own (consumer "parties") until 2026-11, which is drained and
    deleted at start (`ConsumerDefinition.formerly`)."""
    parties = (IdentityProjection(), AgreementParties())
    former = ConsumerDefinition(FORMER_PARTIES_CONSUMER, parties)
    return ConsumerDefinition(name, (*parties, *handlers), formerly=(former,))


FORMER_PARTIES_CONSUMER = "parties"
