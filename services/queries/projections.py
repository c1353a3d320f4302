"""Read models of queries: the query list (with its clocks' state, at-risk and overdue flags and the
first-response time), each query's thread, its pause audit and its clock history.

Each event rewrites its query's rows from a replay of the stream up to that event, so applying an
event again writes the same rows and a rebuild equals the incremental build. (A replay per event
costs O(events²) per query; a query has tens of events.)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from contracts import REGISTRY, CloudEvent, EventData
from contracts.queries import Clock
from services.queries.clock import OVERDUE, SLAClock, business_seconds
from services.queries.deadlines import store_on
from services.queries.domain import UNFINISHED, Query

QUERY_EVENTS = frozenset(m.event_type() for m in REGISTRY if m.EVENT_SERVICE == "queries")


def clock_state(clock: SLAClock | None) -> str | None:
    if clock is None:
        return None
    return "stopped" if clock.is_stopped else "running" if clock.is_running else "paused"


def _instant(event: EventData, envelope: CloudEvent) -> datetime:
    """When the event happened: its own `*_at` field (announcements have none: when recorded)."""
    for name in ("raised_at", "commented_at", "requested_at", "provided_at", "answered_at", "reopened_at",
                 "closed_at", "withdrawn_at"):
        value = getattr(event, name, None)
        if isinstance(value, datetime):
            return value
    return envelope.time


def _flags(query: Query) -> tuple[bool, bool]:
    """(at risk, overdue): a clock not yet stopped announced a warning point, or its due time."""
    if query.status not in UNFINISHED:
        return False, False
    live: dict[Clock, float] = {name: level for name, level in query.signalled.items()
                                if not query.clocks[name].is_stopped}
    overdue = any(level >= OVERDUE for level in live.values())
    return (not overdue and bool(live)), overdue


class QueryViews:
    name = "query_views"
    handles = QUERY_EVENTS

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        query_id = UUID(str(event.data["query_id"]))
        stored = await conn.fetchval("SELECT version FROM queries WHERE query_id = $1", query_id)
        if stored is not None and stored > event.sequence:
            return  # never move a read model backwards
        envelopes = [e for e in await store_on(conn).read_stream(event.subject) if e.sequence <= event.sequence]
        query, history = Query(query_id), []
        for envelope in envelopes:
            data = REGISTRY.decode(envelope.type, envelope.data)
            query.evolve(data)
            query.version += 1
            first, resolution = query.clocks.get("first_response"), query.clocks.get("resolution")
            history.append((query_id, envelope.sequence, envelope.type.split(".")[2], _instant(data, envelope),
                            clock_state(first), query.due_at("first_response"), clock_state(resolution),
                            query.due_at("resolution")))
        await self._write_query(conn, query, event.time)
        await conn.execute("DELETE FROM query_thread WHERE query_id = $1", query_id)
        await conn.executemany("INSERT INTO query_thread VALUES ($1, $2, $3, $4, $5, $6, $7)", [
            (query_id, n, t.kind, t.side, t.user_id, t.body, t.at) for n, t in enumerate(query.thread, start=1)])
        await conn.execute("DELETE FROM query_pauses WHERE query_id = $1", query_id)
        await conn.executemany("INSERT INTO query_pauses VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)", [
            (query_id, n, p.kind, p.reason, p.actor_side, p.actor_user_id, list(p.clocks), p.started_at, p.ended_at,
             None if p.business_duration is None else business_seconds(p.business_duration))
            for n, p in enumerate(query.pauses, start=1)])
        await conn.execute("DELETE FROM query_clock_history WHERE query_id = $1", query_id)
        await conn.executemany("INSERT INTO query_clock_history VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", history)

    @staticmethod
    async def _write_query(conn: asyncpg.Connection, query: Query, updated_at: datetime) -> None:
        first = query.clocks.get("first_response")
        first_answer = next((t.at for t in query.thread if t.kind == "answer"), None)
        answered_in = first.elapsed(first_answer) if first is not None and first_answer is not None else None
        deadline = query.next_deadline()
        at_risk, overdue = _flags(query)
        closed = query.last_at if query.status in ("closed", "withdrawn") else None
        row: dict[str, Any] = {
            "query_id": query.query_id, "agreement_id": query.agreement_id, "subject": query.subject,
            "priority": query.priority, "purpose": query.purpose, "about_kind": query.about_kind,
            "about_id": query.about_id, "raised_by_side": query.asker, "addressed_to_side": query.responder,
            "addressee_role": query.addressee_role, "status": query.status, "raised_at": query.raised_at,
            "first_response_state": clock_state(first), "first_response_due_at": query.due_at("first_response"),
            "resolution_state": clock_state(query.clocks.get("resolution")),
            "resolution_due_at": query.due_at("resolution"),
            "next_deadline_at": deadline.at if deadline else None, "at_risk": at_risk, "overdue": overdue,
            "breached": bool(query.breaches), "first_answered_at": first_answer,
            "first_response_business_seconds": None if answered_in is None else business_seconds(answered_in),
            "first_response_target_seconds": None if first is None else business_seconds(first.target),
            "closed_at": closed, "version": query.version, "updated_at": updated_at,
        }
        columns = ", ".join(row)
        placeholders = ", ".join(f"${n}" for n in range(1, len(row) + 1))
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in row if c != "query_id")
        await conn.execute(f"INSERT INTO queries ({columns}) VALUES ({placeholders})"
                           f" ON CONFLICT (query_id) DO UPDATE SET {updates}", *row.values())

    async def clear(self, conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE queries, query_thread, query_pauses, query_clock_history")
