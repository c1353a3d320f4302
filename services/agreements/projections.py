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
from pydantic import ValidationError

from accord_runtime.projections import uuid_from
from contracts import REGISTRY, CloudEvent, EventData
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
from services.agreements.domain.agreement import state_format
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
    """The agreement as of its latest event: the snapshot (detail view), the contacts (escalation
    matrix), open scope changes and open breakdowns.

    A batch brings each agreement it touches up to its last event in the batch and rewrites that
    agreement's rows, so applying events again writes the same rows. An agreement is restored
    from its stored snapshot and evolved by the batch's events, so a batch costs the same on an
    agreement of ten events as on one of ten thousand; it is replayed from its stream only when
    the stream starts in the batch, or when the stored snapshot is not the one right before the
    batch or of another `state_format()` (a build whose agreement state had another shape).
    """

    name = "shared_agreements"
    handles = AGREEMENT_EVENTS

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        await self.apply_batch(conn, [event])

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[CloudEvent]) -> None:
        in_batch: dict[str, list[CloudEvent]] = {}
        for event in events:  # in global order: each stream's events in version order
            in_batch.setdefault(event.subject, []).append(event)
        ids = {subject: uuid_from(batch[0].data["agreement_id"]) for subject, batch in in_batch.items()}
        stored = {r["agreement_id"]: r for r in await conn.fetch(
            "SELECT agreement_id, stream_version, state_format, state FROM agreement_documents"
            " WHERE agreement_id = ANY($1::uuid[])", list(ids.values()))}
        agreements = {subject: agreement for subject, batch in in_batch.items()
                      if (agreement := _restored(stored.get(ids[subject]), batch[0].sequence)) is not None}
        # A stream whose first event is in the batch is replayed from the batch (a batch is a run of
        # the global order, so it holds every later version up to its last); the others are read.
        older = [subject for subject, batch in in_batch.items() if batch[0].sequence > 1 and subject not in agreements]
        streams = await store_on(conn).read_streams(older, conn=conn) if older else {}
        since = await _open_since(conn, [ids[subject] for subject in agreements]) if agreements else {}
        views = []
        for subject, batch in in_batch.items():
            last = batch[-1]
            row = stored.get(ids[subject])
            if row is not None and row["stream_version"] > last.sequence:
                continue  # never move a read model backwards
            if subject in agreements:
                agreement, applied = agreements[subject], batch
            else:
                agreement = Agreement(ids[subject])
                applied = [e for e in streams[subject] if e.sequence <= last.sequence] if subject in streams else batch
            decoded = [REGISTRY.decode(e.type, e.data) for e in applied]
            agreement.catch_up(decoded)
            views.append(_AgreementView.of(agreement, _opened(applied, decoded, since), last.time))
        if not views:
            return
        await conn.executemany(
            """INSERT INTO agreement_documents (agreement_id, stream_version, agreement_version, status, state,
                                                updated_at, state_format)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (agreement_id) DO UPDATE SET stream_version = EXCLUDED.stream_version,
                   agreement_version = EXCLUDED.agreement_version, status = EXCLUDED.status,
                   state = EXCLUDED.state, updated_at = EXCLUDED.updated_at, state_format = EXCLUDED.state_format,
                   snapshot = NULL""",
            [(*v.document, state_format()) for v in views])
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
    def of(cls, agreement: Agreement, since: dict[UUID, datetime], updated_at: datetime) -> _AgreementView:
        """The rows of `agreement`; `since` holds when each of its open breakdowns and scope changes
        was reported or requested."""
        agreement_id = agreement.agreement_id
        breakdowns = []
        for b in agreement.open_breakdowns():
            procedure = agreement.procedures[b.procedure_id]
            step = next(s for s in procedure.steps if s.step_id == b.step_id)
            breakdowns.append((agreement_id, b.breakdown_id, b.procedure_id, procedure.name, b.step_id, step.title,
                               step.owner_side, b.reported_by_side, b.what_broke, b.impact, since[b.breakdown_id]))
        return cls(
            agreement_id=agreement_id,
            document=(agreement_id, agreement.version, agreement.agreement_version, agreement.status,
                      agreement.snapshot_json().decode(), updated_at),
            contacts=[(agreement_id, c.contact_id, c.side, c.role, c.name, c.email, c.escalation_level)
                      for c in agreement.contacts.values()],
            scope_changes=[(agreement_id, s.change_id, s.title, s.what, s.why, s.requested_by_side, s.status,
                            json.loads(json.dumps(s.assessment.__dict__)) if s.assessment else None,
                            since[s.change_id])
                           for s in agreement.scope_changes.values() if s.open],
            breakdowns=breakdowns,
        )


def _restored(row: asyncpg.Record | None, first: int) -> Agreement | None:
    """The agreement from its stored snapshot, if that is the one right before stream version
    `first` and of this build's `state_format()`; else None (replay it)."""
    if (row is None or first == 1 or row["stream_version"] != first - 1 or row["state"] is None
            or row["state_format"] != state_format()):
        return None
    try:
        return Agreement.restore(row["state"])
    except ValidationError:
        return None  # unreadable after all: the stream still holds the truth


async def _open_since(conn: asyncpg.Connection, agreement_ids: list[UUID]) -> dict[UUID, datetime]:
    """When the open breakdowns and scope changes of restored agreements were reported or requested."""
    rows = await conn.fetch(
        "SELECT breakdown_id AS id, reported_at AS since FROM open_breakdowns WHERE agreement_id = ANY($1::uuid[])"
        " UNION ALL"
        " SELECT change_id, requested_at FROM open_scope_changes WHERE agreement_id = ANY($1::uuid[])",
        agreement_ids)
    return {row["id"]: row["since"] for row in rows}


def _opened(applied: list[CloudEvent], decoded: list[EventData],
            since: dict[UUID, datetime]) -> dict[UUID, datetime]:
    """`since`, with the breakdowns and scope changes that the events `applied` opened."""
    opened = dict(since)
    for envelope, event in zip(applied, decoded, strict=True):
        if isinstance(event, BreakdownReported):
            opened[event.breakdown_id] = envelope.time
        elif isinstance(event, ScopeChangeRequested):
            opened[event.change_id] = envelope.time
    return opened
