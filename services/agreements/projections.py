"""Read models of agreements: the list a user may see, each agreement's history, and the shared
agreement's current state with its contacts, open scope changes and open breakdowns."""

from __future__ import annotations

import json
from datetime import datetime
from uuid import UUID

import asyncpg

from contracts import REGISTRY, CloudEvent
from contracts.agreements import (
    AgreementAccepted,
    AgreementActivated,
    AgreementAmended,
    AgreementDrafted,
    AgreementProposed,
    AgreementRenewed,
    AgreementResumed,
    AgreementSuspended,
    AgreementTerminated,
    BreakdownReported,
    ScopeChangeRequested,
)
from services.agreements.domain import Agreement
from services.agreements.reactions import store_on

#: Every event type of an agreement's stream (each carries `agreement_id`).
AGREEMENT_EVENTS = frozenset(m.event_type() for m in REGISTRY
                             if m.EVENT_SERVICE == "agreements" and "agreement_id" in m.model_fields)
LIFECYCLE_EVENTS = frozenset(m.event_type() for m in (
    AgreementDrafted, AgreementProposed, AgreementAccepted, AgreementActivated, AgreementAmended, AgreementRenewed,
    AgreementSuspended, AgreementResumed, AgreementTerminated))


class AgreementSummaries:
    """One row per agreement: parties, status, who has accepted, the agreement version."""

    name = "agreement_summaries"
    handles = LIFECYCLE_EVENTS

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
                await self._update(conn, e.agreement_id, event, "status = 'active', agreement_version = $4",
                                   e.agreement_version)
            case AgreementAmended() | AgreementRenewed() as e:
                await self._update(conn, e.agreement_id, event, "agreement_version = $4", e.agreement_version)
            case AgreementSuspended() as e:
                await self._update(conn, e.agreement_id, event, "status = 'suspended'")
            case AgreementResumed() as e:
                await self._update(conn, e.agreement_id, event, "status = 'active'")
            case AgreementTerminated() as e:
                await self._update(conn, e.agreement_id, event, "status = 'terminated'")

    @staticmethod
    async def _update(conn: asyncpg.Connection, agreement_id: object, event: CloudEvent, assignments: str,
                      *args: object) -> None:
        await conn.execute(
            f"UPDATE agreement_summaries SET {assignments}, stream_version = $2, updated_at = $3"
            " WHERE agreement_id = $1", agreement_id, event.sequence, event.time, *args)

    async def clear(self, conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE agreement_summaries")


class AgreementHistory:
    """Every event of every agreement, as the parties see it in the agreement's history."""

    name = "agreement_history"
    handles = AGREEMENT_EVENTS

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        await conn.execute(
            "INSERT INTO agreement_history VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            event.data["agreement_id"], event.sequence, event.id, event.type, event.actor,
            event.time, event.data)

    async def clear(self, conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE agreement_history")


class SharedAgreements:
    """The agreement as of each event, replayed from its stream: the snapshot (detail view), the
    contacts (escalation matrix), open scope changes and open breakdowns.

    Each event rewrites the agreement's rows from the replay up to that event, so applying it
    again writes the same rows. (A replay per event costs O(events²) per agreement on rebuild;
    agreements have hundreds of events, not millions.)
    """

    name = "shared_agreements"
    handles = AGREEMENT_EVENTS

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        agreement_id = UUID(str(event.data["agreement_id"]))
        stored = await conn.fetchval(
            "SELECT stream_version FROM agreement_documents WHERE agreement_id = $1", agreement_id)
        if stored is not None and stored > event.sequence:
            return  # never move a read model backwards
        envelopes = [e for e in await store_on(conn).read_stream(event.subject) if e.sequence <= event.sequence]
        events = [REGISTRY.decode(e.type, e.data) for e in envelopes]
        agreement = Agreement.replay(agreement_id, events)
        since: dict[UUID, datetime] = {}
        for envelope, decoded in zip(envelopes, events, strict=True):
            if isinstance(decoded, BreakdownReported):
                since[decoded.breakdown_id] = envelope.time
            elif isinstance(decoded, ScopeChangeRequested):
                since[decoded.change_id] = envelope.time
        await conn.execute(
            """INSERT INTO agreement_documents VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (agreement_id) DO UPDATE SET stream_version = EXCLUDED.stream_version,
                   agreement_version = EXCLUDED.agreement_version, status = EXCLUDED.status,
                   snapshot = EXCLUDED.snapshot, updated_at = EXCLUDED.updated_at""",
            agreement_id, agreement.version, agreement.agreement_version, agreement.status, agreement.snapshot(),
            event.time)
        for table in ("agreement_contacts", "open_scope_changes", "open_breakdowns"):
            await conn.execute(f"DELETE FROM {table} WHERE agreement_id = $1", agreement_id)
        await conn.executemany(
            "INSERT INTO agreement_contacts VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [(agreement_id, c.contact_id, c.side, c.role, c.name, c.email, c.escalation_level)
             for c in agreement.contacts.values()])
        await conn.executemany(
            "INSERT INTO open_scope_changes VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            [(agreement_id, s.change_id, s.title, s.what, s.why, s.requested_by_side, s.status,
              json.loads(json.dumps(s.assessment.__dict__)) if s.assessment else None, since[s.change_id])
             for s in agreement.scope_changes.values() if s.open])
        rows = []
        for b in agreement.open_breakdowns():
            procedure = agreement.procedures[b.procedure_id]
            step = next(s for s in procedure.steps if s.step_id == b.step_id)
            rows.append((agreement_id, b.breakdown_id, b.procedure_id, procedure.name, b.step_id, step.title,
                         step.owner_side, b.reported_by_side, b.what_broke, b.impact, since[b.breakdown_id]))
        await conn.executemany("INSERT INTO open_breakdowns VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                               rows)

    async def clear(self, conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE agreement_documents, agreement_contacts, open_scope_changes, open_breakdowns")
