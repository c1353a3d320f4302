"""One handler per command: load the query, let the domain decide, append — with its deadline timer.

The append and the re-set timer commit in one transaction (see `services.queries.deadlines`);
a concurrent change of the same query (another command, a firing timer) makes the attempt start
again from the events.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar
from uuid import UUID, uuid4

from accord_runtime.eventstore import Metadata, retry_on_conflict
from accord_runtime.identity import Principal
from accord_runtime.postgres import transaction
from accord_runtime.service import Context as Context
from accord_runtime.service import NotFound as NotFound
from services.queries import metrics
from services.queries.commands import (
    AnswerQuery,
    CommentOnQuery,
    ProvideInformation,
    QueryState,
    RaiseQuery,
    ReopenQuery,
    RequestInformation,
    WithdrawQuery,
)
from services.queries.deadlines import keep_deadline, load
from services.queries.domain import InvalidTransition, Query, stream_id
from services.queries.replica import policy_for

T = TypeVar("T")
Decision = Callable[[Query, datetime], None]


def state(query: Query) -> QueryState:
    deadline = query.next_deadline()
    assert query.agreement_id is not None
    return QueryState(query_id=query.query_id, agreement_id=query.agreement_id, status=query.status,
                          version=query.version + len(query.pending),
                          next_deadline_at=deadline.at if deadline else None)


async def _commit(ctx: Context, query: Query, meta: Metadata) -> None:
    async with transaction(ctx.pool) as conn:
        await keep_deadline(conn, query)
        await ctx.store.append(stream_id(query.query_id), query.version, query.pending, meta, conn=conn)
    ctx.store.notify_appended()
    metrics.record(query, query.pending)


async def raise_query(ctx: Context, agreement_id: UUID, cmd: RaiseQuery, meta: Metadata, by: Principal,
                      *, at: datetime | None = None) -> QueryState:
    """Raise a query on an active agreement, under the SLA policy in force at `at` (default: now)."""
    agreement = await ctx.pool.fetchrow("SELECT status, client_organisation_id, provider_organisation_id"
                                        " FROM agreement_parties WHERE agreement_id = $1", agreement_id)
    if agreement is None:
        raise NotFound(f"agreement {agreement_id} does not exist")
    if agreement["status"] != "active":
        raise InvalidTransition(f"queries can only be raised on an active agreement; this one is {agreement['status']}")
    at = at or datetime.now(UTC)
    query = Query(uuid4())
    query.raise_query(agreement_id=agreement_id, client_organisation_id=agreement["client_organisation_id"],
                      provider_organisation_id=agreement["provider_organisation_id"],
                      by_organisation_id=by.organisation_id,
                      by_user_id=by.user_id, priority=cmd.priority, subject=cmd.subject, body=cmd.body,
                      addressee_role=cmd.addressee_role, about_kind=cmd.about_kind, about_id=cmd.about_id,
                      policy=await policy_for(ctx.pool, agreement_id, at), at=at)
    await _commit(ctx, query, meta)
    return state(query)


async def change_query(ctx: Context, query_id: UUID, meta: Metadata, decide: Decision) -> QueryState:
    """Load the query, let `decide` record events, append them and re-set the deadline timer."""
    async def attempt() -> QueryState:
        query = await load(ctx.store, query_id)
        if query.status == "new":
            raise NotFound(f"query {query_id} does not exist")
        decide(query, datetime.now(UTC))
        await _commit(ctx, query, meta)
        return state(query)

    return await retry_on_conflict(attempt)


async def comment(ctx: Context, query_id: UUID, cmd: CommentOnQuery, meta: Metadata,
                  by: Principal) -> QueryState:
    return await change_query(ctx, query_id, meta, lambda q, now: q.comment(
        by_organisation_id=by.organisation_id, by_user_id=by.user_id, body=cmd.body, at=now))


async def request_information(ctx: Context, query_id: UUID, cmd: RequestInformation, meta: Metadata,
                              by: Principal) -> QueryState:
    return await change_query(ctx, query_id, meta, lambda q, now: q.request_information(
        by_organisation_id=by.organisation_id, by_user_id=by.user_id, reason=cmd.reason, at=now))


async def provide_information(ctx: Context, query_id: UUID, cmd: ProvideInformation, meta: Metadata,
                              by: Principal) -> QueryState:
    return await change_query(ctx, query_id, meta, lambda q, now: q.provide_information(
        by_organisation_id=by.organisation_id, by_user_id=by.user_id, body=cmd.body, at=now))


async def answer(ctx: Context, query_id: UUID, cmd: AnswerQuery, meta: Metadata, by: Principal) -> QueryState:
    return await change_query(ctx, query_id, meta, lambda q, now: q.answer(
        by_organisation_id=by.organisation_id, by_user_id=by.user_id, answer=cmd.answer, at=now))


async def reopen(ctx: Context, query_id: UUID, cmd: ReopenQuery, meta: Metadata, by: Principal) -> QueryState:
    return await change_query(ctx, query_id, meta, lambda q, now: q.reopen(
        by_organisation_id=by.organisation_id, by_user_id=by.user_id, reason=cmd.reason, at=now))


async def close(ctx: Context, query_id: UUID, meta: Metadata, by: Principal) -> QueryState:
    return await change_query(ctx, query_id, meta, lambda q, now: q.close(
        by_organisation_id=by.organisation_id, by_user_id=by.user_id, at=now))


async def withdraw(ctx: Context, query_id: UUID, cmd: WithdrawQuery, meta: Metadata,
                   by: Principal) -> QueryState:
    return await change_query(ctx, query_id, meta, lambda q, now: q.withdraw(
        by_organisation_id=by.organisation_id, by_user_id=by.user_id, reason=cmd.reason, at=now))
