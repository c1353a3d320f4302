"""Read models of agreements: the list a user may see, and one agreement with its history."""

from __future__ import annotations

import asyncpg

from contracts import REGISTRY, CloudEvent
from contracts.agreements import (
    AgreementAccepted,
    AgreementActivated,
    AgreementDrafted,
    AgreementProposed,
)

AGREEMENT_EVENTS = frozenset(m.event_type() for m in (AgreementDrafted, AgreementProposed,
                                                       AgreementAccepted, AgreementActivated))


class AgreementSummaries:
    """One row per agreement: parties, status, who has accepted."""

    name = "agreement_summaries"
    handles = AGREEMENT_EVENTS

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        match REGISTRY.decode(event.type, event.data):
            case AgreementDrafted() as e:
                await conn.execute(
                    """INSERT INTO agreement_summaries (agreement_id, title, summary, status,
                           client_organisation_id, provider_organisation_id, drafted_by_side,
                           stream_version, created_at, updated_at)
                       VALUES ($1, $2, $3, 'draft', $4, $5, $6, $7, $8, $8)""",
                    e.agreement_id, e.title, e.summary, e.client_organisation_id,
                    e.provider_organisation_id, e.drafted_by_side, event.sequence, event.time)
            case AgreementProposed() as e:
                await self._update(conn, e.agreement_id, event,
                                   "status = 'proposed', client_accepted = false, provider_accepted = false")
            case AgreementAccepted(side="client") as e:
                await self._update(conn, e.agreement_id, event, "client_accepted = true")
            case AgreementAccepted(side="provider") as e:
                await self._update(conn, e.agreement_id, event, "provider_accepted = true")
            case AgreementActivated() as e:
                await conn.execute(
                    "UPDATE agreement_summaries SET status = 'active', agreement_version = $2,"
                    " stream_version = $3, updated_at = $4 WHERE agreement_id = $1",
                    e.agreement_id, e.agreement_version, event.sequence, event.time)

    @staticmethod
    async def _update(conn: asyncpg.Connection, agreement_id: object, event: CloudEvent, assignments: str) -> None:
        await conn.execute(
            f"UPDATE agreement_summaries SET {assignments}, stream_version = $2, updated_at = $3"
            " WHERE agreement_id = $1", agreement_id, event.sequence, event.time)

    async def clear(self, conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE agreement_summaries")


class AgreementHistory:
    """Every event of every agreement, as the parties see it in the agreement's history."""

    name = "agreement_history"
    handles = AGREEMENT_EVENTS

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        await conn.execute(
            "INSERT INTO agreement_history VALUES ($1, $2, $3, $4, $5, $6, $7)",
            event.data["agreement_id"], event.sequence, event.id, event.type, event.actor,
            event.time, event.data)

    async def clear(self, conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE agreement_history")
