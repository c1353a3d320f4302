"""Read models of agreements: the list a user may see, each agreement's history, and the shared
agreement's current state with its contacts, open scope changes and open breakdowns."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from accord_runtime.projections import uuid_from
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
_DRAFTED = AgreementDrafted.event_type()


_SUMMARY_COLUMNS = ("agreement_id", "title", "summary", "status", "client_organisation_id",
                    "provider_organisation_id", "drafted_by_side", "client_accepted", "provider_accepted",
                    "agreement_version", "stream_version", "created_at", "updated_at")
_UPSERT_SUMMARY = (
    f"INSERT INTO agreement_summaries ({', '.join(_SUMMARY_COLUMNS)})"
    f" VALUES ({', '.join(f'${n}' for n in range(1, len(_SUMMARY_COLUMNS) + 1))})"
    " ON CONFLICT (agreement_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _SUMMARY_COLUMNS[1:])
)


class AgreementSummaries:
    """One row per agreement: parties, status, who has accepted, the agreement version.

    A batch folds its events into the touched rows in memory and writes each row once.
    """

    name = "agreement_summaries"
    handles = LIFECYCLE_EVENTS

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        await self.apply_batch(conn, [event])

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[CloudEvent]) -> None:
        # A drafted event writes its agreement's whole row, so only the others' rows are read.
        drafted = {uuid_from(e.data["agreement_id"]) for e in events if e.type == _DRAFTED}
        ids = list({uuid_from(e.data["agreement_id"]) for e in events} - drafted)
        rows = {r["agreement_id"]: dict(r) for r in await conn.fetch(
            "SELECT * FROM agreement_summaries WHERE agreement_id = ANY($1::uuid[])", ids)} if ids else {}
        for event in events:
            self._fold(rows, event)
        await conn.executemany(_UPSERT_SUMMARY, [tuple(row[c] for c in _SUMMARY_COLUMNS) for row in rows.values()])

    @staticmethod
    def _fold(rows: dict[UUID, dict[str, Any]], event: CloudEvent) -> None:
        decoded = REGISTRY.decode(event.type, event.data)
        if isinstance(decoded, AgreementDrafted):
            rows[decoded.agreement_id] = {
                "agreement_id": decoded.agreement_id, "title": decoded.title, "summary": decoded.summary,
                "status": "draft", "client_organisation_id": decoded.client_organisation_id,
                "provider_organisation_id": decoded.provider_organisation_id,
                "drafted_by_side": decoded.drafted_by_side, "client_accepted": False, "provider_accepted": False,
                "agreement_version": 0, "stream_version": event.sequence, "created_at": event.time,
                "updated_at": event.time}
            return
        row = rows.get(uuid_from(event.data["agreement_id"]))
        if row is None or row["stream_version"] >= event.sequence:
            return  # drafted events come first in a stream; never move a row backwards
        match decoded:
            case AgreementProposed():
                row.update(status="proposed", client_accepted=False, provider_accepted=False)
            case AgreementAccepted(side=side):
                row[f"{side}_accepted"] = True
            case AgreementActivated(agreement_version=version):
                row.update(status="active", agreement_version=version)
            case AgreementAmended(agreement_version=version) | AgreementRenewed(agreement_version=version):
                row["agreement_version"] = version
            case AgreementSuspended():
                row["status"] = "suspended"
            case AgreementResumed():
                row["status"] = "active"
            case AgreementTerminated():
                row["status"] = "terminated"
        row.update(stream_version=event.sequence, updated_at=event.time)

    async def clear(self, conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE agreement_summaries")


class AgreementHistory:
    """Every event of every agreement, as the parties see it in the agreement's history."""

    name = "agreement_history"
    handles = AGREEMENT_EVENTS

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        await self.apply_batch(conn, [event])

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[CloudEvent]) -> None:
        await conn.executemany(
            "INSERT INTO agreement_history VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            [(e.data["agreement_id"], e.sequence, e.id, e.type, e.actor, e.time, e.data) for e in events])

    async def clear(self, conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE agreement_history")


class SharedAgreements:
    """The agreement as of its latest event, replayed from its stream: the snapshot (detail view),
    the contacts (escalation matrix), open scope changes and open breakdowns.

    A batch replays each agreement it touches once, up to its last event in the batch, and
    rewrites that agreement's rows, so applying events again writes the same rows.
    """

    name = "shared_agreements"
    handles = AGREEMENT_EVENTS

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        await self.apply_batch(conn, [event])

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[CloudEvent]) -> None:
        in_batch: dict[str, list[CloudEvent]] = {}
        for event in events:  # in global order: each stream's events in version order
            in_batch.setdefault(event.subject, []).append(event)
        stored = {r["agreement_id"]: r["stream_version"] for r in await conn.fetch(
            "SELECT agreement_id, stream_version FROM agreement_documents WHERE agreement_id = ANY($1::uuid[])",
            [uuid_from(batch[0].data["agreement_id"]) for batch in in_batch.values()])}
        # A stream whose first event is in the batch is replayed from the batch (a batch is a run of
        # the global order, so it holds every later version up to its last); the others are read.
        older = [subject for subject, batch in in_batch.items() if batch[0].sequence > 1]
        streams = await store_on(conn).read_streams(older, conn=conn) if older else {}
        views = []
        for subject, batch in in_batch.items():
            last = batch[-1]
            agreement_id = uuid_from(last.data["agreement_id"])
            if stored.get(agreement_id, 0) > last.sequence:
                continue  # never move a read model backwards
            history = [e for e in streams[subject] if e.sequence <= last.sequence] if subject in streams else batch
            views.append(_AgreementView.of(agreement_id, history, last.time))
        if not views:
            return
        await conn.executemany(
            """INSERT INTO agreement_documents VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (agreement_id) DO UPDATE SET stream_version = EXCLUDED.stream_version,
                   agreement_version = EXCLUDED.agreement_version, status = EXCLUDED.status,
                   snapshot = EXCLUDED.snapshot, updated_at = EXCLUDED.updated_at""",
            [v.document for v in views])
        # The other rows of an agreement are written with its document: without one, there are none.
        if replaced := [v.agreement_id for v in views if v.agreement_id in stored]:
            await conn.execute(
                """WITH contacts AS (DELETE FROM agreement_contacts WHERE agreement_id = ANY($1::uuid[])),
                        scope_changes AS (DELETE FROM open_scope_changes WHERE agreement_id = ANY($1::uuid[]))
                   DELETE FROM open_breakdowns WHERE agreement_id = ANY($1::uuid[])""",
                replaced)
        for statement, rows in (
                ("INSERT INTO agreement_contacts VALUES ($1, $2, $3, $4, $5, $6, $7)",
                 [row for v in views for row in v.contacts]),
                ("INSERT INTO open_scope_changes VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                 [row for v in views for row in v.scope_changes]),
                ("INSERT INTO open_breakdowns VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                 [row for v in views for row in v.breakdowns])):
            if rows:
                await conn.executemany(statement, rows)

    async def clear(self, conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE agreement_documents, agreement_contacts, open_scope_changes, open_breakdowns")


@dataclass(frozen=True)
class _AgreementView:
    """The rows of one agreement in the shared-agreement read model."""

    agreement_id: UUID
    document: tuple[Any, ...]
    contacts: list[tuple[Any, ...]]
    scope_changes: list[tuple[Any, ...]]
    breakdowns: list[tuple[Any, ...]]

    @classmethod
    def of(cls, agreement_id: UUID, envelopes: list[CloudEvent], updated_at: datetime) -> _AgreementView:
        events = [REGISTRY.decode(e.type, e.data) for e in envelopes]
        agreement = Agreement.replay(agreement_id, events)
        since: dict[UUID, datetime] = {}
        for envelope, decoded in zip(envelopes, events, strict=True):
            if isinstance(decoded, BreakdownReported):
                since[decoded.breakdown_id] = envelope.time
            elif isinstance(decoded, ScopeChangeRequested):
                since[decoded.change_id] = envelope.time
        breakdowns = []
        for b in agreement.open_breakdowns():
            procedure = agreement.procedures[b.procedure_id]
            step = next(s for s in procedure.steps if s.step_id == b.step_id)
            breakdowns.append((agreement_id, b.breakdown_id, b.procedure_id, procedure.name, b.step_id, step.title,
                               step.owner_side, b.reported_by_side, b.what_broke, b.impact, since[b.breakdown_id]))
        return cls(
            agreement_id=agreement_id,
            document=(agreement_id, agreement.version, agreement.agreement_version, agreement.status,
                      agreement.snapshot(), updated_at),
            contacts=[(agreement_id, c.contact_id, c.side, c.role, c.name, c.email, c.escalation_level)
                      for c in agreement.contacts.values()],
            scope_changes=[(agreement_id, s.change_id, s.title, s.what, s.why, s.requested_by_side, s.status,
                            json.loads(json.dumps(s.assessment.__dict__)) if s.assessment else None,
                            since[s.change_id])
                           for s in agreement.scope_changes.values() if s.open],
            breakdowns=breakdowns,
        )
