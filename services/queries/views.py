"""Reading the query read models: the shapes the API returns and the SQL behind them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

import asyncpg
from pydantic import BaseModel

from contracts.agreements import Side
from contracts.sla import Priority
from services.queries.domain import Status

ListedStatus = Literal["open", "awaiting_information", "answered", "closed", "withdrawn", "unfinished"]
SIDES: tuple[Side, Side] = ("client", "provider")


class QuerySummary(BaseModel):
    query_id: UUID
    agreement_id: UUID
    subject: str
    priority: Priority
    purpose: str
    about_kind: str
    about_id: UUID | None
    raised_by_side: Side
    addressed_to_side: Side
    addressee_role: str | None
    status: Status
    raised_at: datetime
    first_response_state: str | None
    first_response_due_at: datetime | None
    resolution_state: str | None
    resolution_due_at: datetime | None
    next_deadline_at: datetime | None
    at_risk: bool
    overdue: bool
    breached: bool
    first_answered_at: datetime | None
    first_response_business_seconds: int | None
    first_response_target_seconds: int | None
    closed_at: datetime | None
    version: int
    updated_at: datetime


class QueryPage(BaseModel):
    items: list[QuerySummary]
    total: int
    limit: int
    offset: int


class ThreadEntry(BaseModel):
    position: int
    kind: str
    side: Side
    user_id: UUID | None
    body: str
    at: datetime | None


class PauseEntry(BaseModel):
    """One stop of the clocks: who, why, which clocks, and for how long in business seconds."""

    position: int
    kind: str
    reason: str
    side: Side
    user_id: UUID | None
    clocks: list[str]
    started_at: datetime
    ended_at: datetime | None
    business_seconds: int | None


class ClockPoint(BaseModel):
    """Where both clocks stood right after one event of the query."""

    sequence: int
    event_type: str
    at: datetime
    first_response_state: str | None
    first_response_due_at: datetime | None
    resolution_state: str | None
    resolution_due_at: datetime | None


class QueryDetail(QuerySummary):
    thread: list[ThreadEntry]
    pauses: list[PauseEntry]
    clock_history: list[ClockPoint]


class SideStatistics(BaseModel):
    """First-response times of the queries addressed to one side, in business seconds."""

    side: Side
    unfinished: int
    overdue: int
    answered: int
    p50_business_seconds: float | None
    p90_business_seconds: float | None
    within_sla_share: float | None  # of answered queries with an SLA target: answered within it
    breached: int


class QueryStatistics(BaseModel):
    agreement_id: UUID
    sides: list[SideStatistics]


UNFINISHED_SQL = "status IN ('open', 'awaiting_information', 'answered')"


async def list_queries(pool: asyncpg.Pool, agreement_id: UUID, *, status: ListedStatus | None, side: Side | None,
                       priority: Priority | None, flag: Literal["at_risk", "overdue"] | None = None,
                       limit: int, offset: int) -> QueryPage:
    """The agreement's queries, newest first; `side` is the side they are addressed to."""
    where: list[str] = ["agreement_id = $1"]
    args: list[object] = [agreement_id]
    if status == "unfinished":
        where.append(UNFINISHED_SQL)
    elif status is not None:
        args.append(status)
        where.append(f"status = ${len(args)}")
    for column, value in (("addressed_to_side", side), ("priority", priority)):
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    if flag is not None:
        where.append(flag)  # a column name from the Literal above
    condition = " AND ".join(where)
    total = await pool.fetchval(f"SELECT count(*) FROM queries WHERE {condition}", *args)
    order = "next_deadline_at NULLS LAST, raised_at" if flag else "raised_at DESC, query_id"
    rows = await pool.fetch(
        f"SELECT * FROM queries WHERE {condition} ORDER BY {order}"
        f" LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}", *args, limit, offset)
    return QueryPage(items=[QuerySummary(**row) for row in rows], total=total, limit=limit, offset=offset)


async def agreement_of(pool: asyncpg.Pool, query_id: UUID) -> UUID | None:
    agreement_id: UUID | None = await pool.fetchval("SELECT agreement_id FROM queries WHERE query_id = $1", query_id)
    return agreement_id


async def query_detail(pool: asyncpg.Pool, query_id: UUID) -> QueryDetail | None:
    row = await pool.fetchrow("SELECT * FROM queries WHERE query_id = $1", query_id)
    if row is None:
        return None
    thread = await pool.fetch("SELECT * FROM query_thread WHERE query_id = $1 ORDER BY position", query_id)
    pauses = await pool.fetch("SELECT * FROM query_pauses WHERE query_id = $1 ORDER BY position", query_id)
    history = await pool.fetch("SELECT * FROM query_clock_history WHERE query_id = $1 ORDER BY sequence", query_id)
    return QueryDetail(**row, thread=[ThreadEntry(**_without_id(r)) for r in thread],
                       pauses=[PauseEntry(**_without_id(r)) for r in pauses],
                       clock_history=[ClockPoint(**_without_id(r)) for r in history])


def _without_id(row: asyncpg.Record) -> dict[str, object]:
    return {key: value for key, value in row.items() if key != "query_id"}


async def statistics(pool: asyncpg.Pool, agreement_id: UUID) -> QueryStatistics:
    rows = await pool.fetch(
        f"""SELECT addressed_to_side AS side,
                  count(*) FILTER (WHERE {UNFINISHED_SQL}) AS unfinished,
                  count(*) FILTER (WHERE {UNFINISHED_SQL} AND overdue) AS overdue,
                  count(first_response_business_seconds) AS answered,
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY first_response_business_seconds) AS p50,
                  percentile_cont(0.9) WITHIN GROUP (ORDER BY first_response_business_seconds) AS p90,
                  avg((first_response_business_seconds <= first_response_target_seconds)::int)
                      FILTER (WHERE first_response_business_seconds IS NOT NULL) AS within_sla,
                  count(*) FILTER (WHERE breached) AS breached
           FROM queries WHERE agreement_id = $1 GROUP BY addressed_to_side""",
        agreement_id)
    found = {row["side"]: row for row in rows}
    sides = []
    for side in SIDES:
        row = found.get(side)
        sides.append(SideStatistics(
            side=side, unfinished=row["unfinished"] if row else 0, overdue=row["overdue"] if row else 0,
            answered=row["answered"] if row else 0, p50_business_seconds=row["p50"] if row else None,
            p90_business_seconds=row["p90"] if row else None,
            within_sla_share=float(row["within_sla"]) if row and row["within_sla"] is not None else None,
            breached=row["breached"] if row else 0))
    return QueryStatistics(agreement_id=agreement_id, sides=sides)


async def agreement_query_ids(pool: asyncpg.Pool, agreement_id: UUID) -> list[UUID]:
    return [row["query_id"] for row in await pool.fetch(
        "SELECT query_id FROM queries WHERE agreement_id = $1 ORDER BY raised_at", agreement_id)]
