"""HTTP API of the queries service. Routes are thin: authorize by side, parse, call a handler or a view.

Reads are authorized by the caller's side of the agreement (`side_of`: 404 unknown, 403 not a party);
commands on a query by the domain, which knows its parties and which side may do what.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import AwareDatetime, BaseModel

from accord_runtime.eventstore import Metadata
from accord_runtime.identity import CurrentPrincipal, Principal
from accord_runtime.parties import side_of
from contracts import REGISTRY
from contracts.agreements import Side
from contracts.sla import Priority, SLAPolicyInput
from services.queries import handlers, views
from services.queries.clock import Outcome
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
from services.queries.domain import stream_id
from services.queries.metrics import gauges_refreshed
from services.queries.whatif import Verdict, what_if

router = APIRouter(tags=["queries"], lifespan=gauges_refreshed)

Limit = Annotated[int, Query(ge=1, le=200)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


def _context(request: Request) -> handlers.Context:
    return handlers.Context(store=request.app.state.store, pool=request.app.state.pool)


def _metadata(request: Request, principal: Principal) -> Metadata:
    return Metadata(actor=principal.actor, correlation_id=request.state.correlation_id)


# --- commands --------------------------------------------------------------------------------------

@router.post("/agreements/{agreement_id}/queries", status_code=status.HTTP_201_CREATED, response_model=QueryState)
async def raise_query(request: Request, agreement_id: UUID, body: RaiseQuery,
                      principal: CurrentPrincipal) -> QueryState:
    """Either side asks the other; the agreement must be active (409 otherwise)."""
    await side_of(request.app.state.pool, principal, agreement_id)
    return await handlers.raise_query(_context(request), agreement_id, body, _metadata(request, principal),
                                      principal)


@router.post("/queries/{query_id}/comments", status_code=status.HTTP_201_CREATED, response_model=QueryState)
async def comment(request: Request, query_id: UUID, body: CommentOnQuery, principal: CurrentPrincipal) -> QueryState:
    return await handlers.comment(_context(request), query_id, body, _metadata(request, principal), principal)


@router.post("/queries/{query_id}/information-requests", status_code=status.HTTP_201_CREATED,
             response_model=QueryState)
async def request_information(request: Request, query_id: UUID, body: RequestInformation,
                              principal: CurrentPrincipal) -> QueryState:
    """The answering side needs more: the clocks pause until the asker provides it."""
    return await handlers.request_information(_context(request), query_id, body, _metadata(request, principal),
                                              principal)


@router.post("/queries/{query_id}/information", response_model=QueryState)
async def provide_information(request: Request, query_id: UUID, body: ProvideInformation,
                              principal: CurrentPrincipal) -> QueryState:
    """The asker answers the information request: the clocks run again."""
    return await handlers.provide_information(_context(request), query_id, body, _metadata(request, principal),
                                              principal)


@router.post("/queries/{query_id}/answer", response_model=QueryState)
async def answer(request: Request, query_id: UUID, body: AnswerQuery, principal: CurrentPrincipal) -> QueryState:
    return await handlers.answer(_context(request), query_id, body, _metadata(request, principal), principal)


@router.post("/queries/{query_id}/reopening", response_model=QueryState)
async def reopen(request: Request, query_id: UUID, body: ReopenQuery, principal: CurrentPrincipal) -> QueryState:
    return await handlers.reopen(_context(request), query_id, body, _metadata(request, principal), principal)


@router.post("/queries/{query_id}/closure", response_model=QueryState)
async def close(request: Request, query_id: UUID, principal: CurrentPrincipal) -> QueryState:
    return await handlers.close(_context(request), query_id, _metadata(request, principal), principal)


@router.post("/queries/{query_id}/withdrawal", response_model=QueryState)
async def withdraw(request: Request, query_id: UUID, principal: CurrentPrincipal,
                   body: WithdrawQuery | None = None) -> QueryState:
    return await handlers.withdraw(_context(request), query_id, body or WithdrawQuery(),
                                   _metadata(request, principal), principal)


# --- reads -----------------------------------------------------------------------------------------

@router.get("/agreements/{agreement_id}/queries", response_model=views.QueryPage)
async def list_queries(request: Request, agreement_id: UUID, principal: CurrentPrincipal,
                       status: views.ListedStatus | None = None, side: Side | None = None,
                       priority: Priority | None = None, limit: Limit = 50, offset: Offset = 0) -> views.QueryPage:
    """The agreement's queries, newest first. `side`: the side they are addressed to;
    `status=unfinished`: open, awaiting information or answered."""
    pool = request.app.state.pool
    await side_of(pool, principal, agreement_id)
    return await views.list_queries(pool, agreement_id, status=status, side=side, priority=priority,
                                    limit=limit, offset=offset)


@router.get("/agreements/{agreement_id}/queries/at-risk", response_model=views.QueryPage)
async def at_risk(request: Request, agreement_id: UUID, principal: CurrentPrincipal, side: Side | None = None,
                  priority: Priority | None = None, limit: Limit = 50, offset: Offset = 0) -> views.QueryPage:
    """Unfinished queries past a warning point of a clock but not overdue, the next deadline first."""
    pool = request.app.state.pool
    await side_of(pool, principal, agreement_id)
    return await views.list_queries(pool, agreement_id, status="unfinished", side=side, priority=priority,
                                    flag="at_risk", limit=limit, offset=offset)


@router.get("/agreements/{agreement_id}/queries/overdue", response_model=views.QueryPage)
async def overdue(request: Request, agreement_id: UUID, principal: CurrentPrincipal, side: Side | None = None,
                  priority: Priority | None = None, limit: Limit = 50, offset: Offset = 0) -> views.QueryPage:
    """Unfinished queries with a clock past its due time."""
    pool = request.app.state.pool
    await side_of(pool, principal, agreement_id)
    return await views.list_queries(pool, agreement_id, status="unfinished", side=side, priority=priority,
                                    flag="overdue", limit=limit, offset=offset)


@router.get("/queries/{query_id}", response_model=views.QueryDetail)
async def query_detail(request: Request, query_id: UUID, principal: CurrentPrincipal) -> views.QueryDetail:
    """One query with its thread, its pauses (who, why, how long) and where its clocks stood after each event."""
    pool = request.app.state.pool
    agreement_id = await views.agreement_of(pool, query_id)
    if agreement_id is not None:
        await side_of(pool, principal, agreement_id)
        detail = await views.query_detail(pool, query_id)
        if detail is not None:
            return detail
    raise HTTPException(status.HTTP_404_NOT_FOUND, f"query {query_id} does not exist")


@router.get("/agreements/{agreement_id}/query-stats", response_model=views.QueryStatistics)
async def query_stats(request: Request, agreement_id: UUID, principal: CurrentPrincipal) -> views.QueryStatistics:
    """First-response times per answering side (p50, p90 in business seconds), share within SLA, breaches."""
    pool = request.app.state.pool
    await side_of(pool, principal, agreement_id)
    return await views.statistics(pool, agreement_id)


# --- what-if ---------------------------------------------------------------------------------------

class WhatIfRequest(BaseModel):
    policy: SLAPolicyInput
    as_of: AwareDatetime | None = None


class VerdictView(BaseModel):
    first_response: Outcome
    resolution: Outcome
    overall: Outcome


class ChangedQueryView(BaseModel):
    query_id: UUID
    current: VerdictView
    proposed: VerdictView


class PriorityComparisonView(BaseModel):
    priority: Priority
    count: int
    current_met: int
    current_missed: int
    proposed_met: int
    proposed_missed: int
    changed: list[ChangedQueryView]


class WhatIfView(BaseModel):
    as_of: datetime
    priorities: list[PriorityComparisonView]


@router.post("/agreements/{agreement_id}/sla-what-if", response_model=WhatIfView)
async def sla_what_if(request: Request, agreement_id: UUID, body: WhatIfRequest,
                      principal: CurrentPrincipal) -> WhatIfView:
    """How the agreement's queries would have fared under `policy`, compared with their own terms."""
    pool, store = request.app.state.pool, request.app.state.store
    await side_of(pool, principal, agreement_id)
    histories = []
    for query_id in await views.agreement_query_ids(pool, agreement_id):
        envelopes = await store.read_stream(stream_id(query_id))
        histories.append([REGISTRY.decode(e.type, e.data) for e in envelopes])
    report = what_if(histories, body.policy, body.as_of or datetime.now(UTC))

    def verdict(v: Verdict) -> VerdictView:
        return VerdictView(first_response=v.first_response, resolution=v.resolution, overall=v.overall)

    return WhatIfView(as_of=report.as_of, priorities=[PriorityComparisonView(
        priority=c.priority, count=c.count, current_met=c.current_met, current_missed=c.current_missed,
        proposed_met=c.proposed_met, proposed_missed=c.proposed_missed,
        changed=[ChangedQueryView(query_id=q.query_id, current=verdict(q.current), proposed=verdict(q.proposed))
                 for q in c.changed]) for c in report.priorities])
