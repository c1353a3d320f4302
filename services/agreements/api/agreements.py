"""The agreement itself: draft, propose, accept, suspend/resume/terminate/renew; reading it now or at any
point in time, the difference between two versions, and the whole agreement as a Markdown document."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import AfterValidator, AwareDatetime, BaseModel, WithJsonSchema

from accord_runtime.identity import CurrentPrincipal
from contracts.envelope import parse_type
from services.agreements import handlers
from services.agreements.api.common import context, execute, metadata, side_of_caller
from services.agreements.commands import (
    AcceptAgreement,
    AgreementState,
    ChangeLifecycle,
    DraftAgreement,
    ProposeAgreement,
    RenewAgreement,
)
from services.agreements.domain import Agreement
from services.agreements.projections import AGREEMENT_EVENTS
from services.agreements.rendering import diff, render_markdown

router = APIRouter(tags=["agreements"])


class Me(BaseModel):
    user_id: UUID
    organisation_id: UUID
    display_name: str
    organisation_name: str


class _AgreementHeader(BaseModel):
    """What both the list and the detail view say of an agreement."""

    agreement_id: UUID
    title: str
    summary: str
    status: str
    client_organisation_id: UUID
    provider_organisation_id: UUID
    drafted_by_side: str
    client_accepted: bool
    provider_accepted: bool
    agreement_version: int
    stream_version: int


class AgreementSummary(_AgreementHeader):
    created_at: datetime
    updated_at: datetime


class HistoryEntry(BaseModel):
    sequence: int
    event_id: UUID
    event_type: str
    actor: str
    occurred_at: datetime
    data: dict[str, Any]


class AgreementDetail(_AgreementHeader):
    """The agreement now (from the read model), or as of a time or version (replayed from its events)."""

    your_side: str
    as_of: datetime | None = None
    agreement: dict[str, Any]
    history: list[HistoryEntry]
    history_total: int  # entries up to this state; `history` holds the latest `history_limit` of them


class HistoryPage(BaseModel):
    """Entries of an agreement's history in order, those after the entry `after`."""

    items: list[HistoryEntry]
    total: int
    after: int
    limit: int
    next_after: int | None  # pass it as `after` for the next page; None when this page is the last


class AgreementPage(BaseModel):
    items: list[AgreementSummary]
    limit: int
    offset: int


class VersionDiff(BaseModel):
    agreement_id: UUID
    from_version: int
    to_version: int
    fields: dict[str, Any]
    parts: dict[str, Any]


AsOf = Annotated[AwareDatetime | None, Query(description="Replay the agreement as it was at this time.")]
Version = Annotated[int | None, Query(ge=1, description="Replay the agreement as of this agreement version.")]
HistoryLimit = Annotated[int | None, Query(ge=0, le=10_000, description=(
    "Only the latest entries of the history, this many (0: none); without it, all of them. Page "
    "through the whole history with GET /agreements/{agreement_id}/history."))]
_HISTORY = "SELECT sequence, event_id, event_type, actor, occurred_at, data FROM agreement_history"
#: The names of the events an agreement's history holds (`StatusUpdatePosted`, …), for `?type=`.
HISTORY_EVENT_NAMES = frozenset(parse_type(event_type)[1] for event_type in AGREEMENT_EVENTS)


def _history_event_name(name: str) -> str:
    if name not in HISTORY_EVENT_NAMES:
        raise ValueError(f"{name!r} is not an event of an agreement (one of {', '.join(sorted(HISTORY_EVENT_NAMES))})")
    return name


HistoryEventName = Annotated[str, AfterValidator(_history_event_name),
                             WithJsonSchema({"type": "string", "enum": sorted(HISTORY_EVENT_NAMES)})]
HistoryEventNames = Annotated[list[HistoryEventName] | None, Query(
    alias="type", max_length=len(HISTORY_EVENT_NAMES), description=(
        "Only events of these types, by name (e.g. StatusUpdatePosted); repeat it for several."))]
# The history's entries of the types asked for (all with $2 null), by name whatever their version.
_OF_TYPES = "agreement_id = $1 AND ($2::text[] IS NULL OR split_part(event_type, '.', 3) = ANY($2::text[]))"


@router.get("/me", response_model=Me)
async def me(request: Request, principal: CurrentPrincipal) -> Me:
    row = await request.app.state.pool.fetchrow(
        "SELECT u.user_id, u.organisation_id, u.display_name, o.display_name AS organisation_name"
        " FROM users u JOIN organisations o USING (organisation_id) WHERE u.user_id = $1", principal.user_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "user not found")
    return Me(**dict(row))


@router.post("/agreements", status_code=status.HTTP_201_CREATED, response_model=AgreementState)
async def draft_agreement(request: Request, body: DraftAgreement, principal: CurrentPrincipal) -> AgreementState:
    return await handlers.draft_agreement(
        context(request), body, metadata(request, principal), principal.organisation_id)


@router.post("/agreements/{agreement_id}/proposal", response_model=AgreementState)
async def propose_agreement(request: Request, agreement_id: UUID, principal: CurrentPrincipal) -> AgreementState:
    return await handlers.propose_agreement(context(request), ProposeAgreement(agreement_id=agreement_id),
                                            metadata(request, principal), principal.organisation_id)


@router.post("/agreements/{agreement_id}/acceptance", response_model=AgreementState)
async def accept_agreement(request: Request, agreement_id: UUID, principal: CurrentPrincipal) -> AgreementState:
    return await handlers.accept_agreement(context(request), AcceptAgreement(agreement_id=agreement_id),
                                           metadata(request, principal), principal.organisation_id)


@router.post("/agreements/{agreement_id}/suspension", response_model=AgreementState)
async def suspend_agreement(request: Request, agreement_id: UUID, body: ChangeLifecycle,
                            principal: CurrentPrincipal) -> AgreementState:
    return await execute(request, principal, agreement_id, lambda a, by, _: a.suspend(by, body.reason))


@router.post("/agreements/{agreement_id}/resumption", response_model=AgreementState)
async def resume_agreement(request: Request, agreement_id: UUID, body: ChangeLifecycle,
                           principal: CurrentPrincipal) -> AgreementState:
    return await execute(request, principal, agreement_id, lambda a, by, _: a.resume(by, body.reason))


@router.post("/agreements/{agreement_id}/termination", response_model=AgreementState)
async def terminate_agreement(request: Request, agreement_id: UUID, body: ChangeLifecycle,
                              principal: CurrentPrincipal) -> AgreementState:
    return await execute(request, principal, agreement_id, lambda a, by, _: a.terminate(by, body.reason))


@router.post("/agreements/{agreement_id}/renewal", response_model=AgreementState)
async def renew_agreement(request: Request, agreement_id: UUID, body: RenewAgreement,
                          principal: CurrentPrincipal) -> AgreementState:
    return await execute(request, principal, agreement_id,
                         lambda a, by, _: a.renew(by, body.reason, body.renewed_until))


@router.get("/agreements", response_model=AgreementPage)
async def list_agreements(
    request: Request,
    principal: CurrentPrincipal,
    status_filter: Annotated[str | None, Query(
        alias="status", pattern="^(draft|proposed|active|suspended|terminated)$")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> AgreementPage:
    rows = await request.app.state.pool.fetch(
        "SELECT * FROM agreement_summaries"
        " WHERE (client_organisation_id = $1 OR provider_organisation_id = $1)"
        "   AND ($2::text IS NULL OR status = $2)"
        " ORDER BY created_at DESC, agreement_id LIMIT $3 OFFSET $4",
        principal.organisation_id, status_filter, limit, offset)
    return AgreementPage(items=[AgreementSummary(**dict(r)) for r in rows], limit=limit, offset=offset)


@router.get("/agreements/{agreement_id}", response_model=AgreementDetail)
async def get_agreement(request: Request, agreement_id: UUID, principal: CurrentPrincipal,
                        as_of: AsOf = None, version: Version = None,
                        history_limit: HistoryLimit = None) -> AgreementDetail:
    """The agreement now; with `as_of` or `version`, as it was then (replayed from its events)."""
    pool = request.app.state.pool
    if as_of is None and version is None:
        # The snapshot's text, which the read model keeps for restoring agreements; documents
        # written before the text was kept have only the jsonb copy, until their next event.
        row = await pool.fetchrow("SELECT coalesce(state, snapshot::text) AS snapshot FROM agreement_documents"
                                  " WHERE agreement_id = $1", agreement_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"agreement {agreement_id} does not exist")
        snapshot: dict[str, Any] = json.loads(row["snapshot"])
    else:
        agreement = await handlers.agreement_at(request.app.state.store, agreement_id, as_of=as_of, version=version)
        snapshot = agreement.snapshot()
    if str(principal.organisation_id) == snapshot["client_organisation_id"]:
        side = "client"
    elif str(principal.organisation_id) == snapshot["provider_organisation_id"]:
        side = "provider"
    else:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "your organisation is not a party to this agreement")
    # The latest `history_limit` entries up to the snapshot's version (a stream's versions have no gaps).
    first = 1 if history_limit is None else snapshot["version"] - history_limit + 1
    history = await pool.fetch(f"{_HISTORY} WHERE agreement_id = $1 AND sequence BETWEEN $2 AND $3"
                               " ORDER BY sequence", agreement_id, first, snapshot["version"])
    return AgreementDetail(
        agreement_id=agreement_id, title=snapshot["title"], summary=snapshot["summary"], status=snapshot["status"],
        client_organisation_id=snapshot["client_organisation_id"],
        provider_organisation_id=snapshot["provider_organisation_id"],
        drafted_by_side=snapshot["drafted_by_side"], client_accepted="client" in snapshot["accepted_by"],
        provider_accepted="provider" in snapshot["accepted_by"], agreement_version=snapshot["agreement_version"],
        stream_version=snapshot["version"], your_side=side, as_of=as_of, agreement=snapshot,
        history=[HistoryEntry(**dict(h)) for h in history], history_total=snapshot["version"])


@router.get("/agreements/{agreement_id}/history", response_model=HistoryPage)
async def agreement_history(
    request: Request, agreement_id: UUID, principal: CurrentPrincipal,
    after: Annotated[int, Query(ge=0, le=2**31 - 1, description="The sequence of the last entry already read.")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    types: HistoryEventNames = None,
) -> HistoryPage:
    """Every event of the agreement as the parties see it (or those of the types asked for), oldest
    first, a page at a time. `total` counts the entries of those types."""
    await side_of_caller(request, principal, agreement_id)
    pool = request.app.state.pool
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(f"{_HISTORY} WHERE {_OF_TYPES} AND sequence > $3 ORDER BY sequence LIMIT $4",
                                agreement_id, types, after, limit + 1)
        total = await conn.fetchval(f"SELECT count(*) FROM agreement_history WHERE {_OF_TYPES}", agreement_id, types)
    items = [HistoryEntry(**dict(r)) for r in rows[:limit]]
    return HistoryPage(items=items, total=total, after=after, limit=limit,
                       next_after=items[-1].sequence if len(rows) > limit else None)


async def _replayed(request: Request, principal: CurrentPrincipal, agreement_id: UUID, *,
                    as_of: datetime | None = None, version: int | None = None) -> Agreement:
    agreement = await handlers.agreement_at(request.app.state.store, agreement_id, as_of=as_of, version=version)
    agreement.side_of(principal.organisation_id)  # NotAParty: 403
    return agreement


@router.get("/agreements/{agreement_id}/diff", response_model=VersionDiff)
async def diff_versions(request: Request, agreement_id: UUID, principal: CurrentPrincipal,
                        from_version: Annotated[int, Query(alias="from", ge=1)],
                        to_version: Annotated[int, Query(alias="to", ge=1)]) -> VersionDiff:
    """What changed from one agreement version to another (added/removed/changed per part)."""
    before = await _replayed(request, principal, agreement_id, version=from_version)
    after = await _replayed(request, principal, agreement_id, version=to_version)
    return VersionDiff(agreement_id=agreement_id, from_version=from_version, to_version=to_version,
                       **diff(before.snapshot(), after.snapshot()))


@router.get("/agreements/{agreement_id}/document", response_class=Response,
            responses={200: {"content": {"text/markdown": {}}}})
async def agreement_document(request: Request, agreement_id: UUID, principal: CurrentPrincipal,
                             as_of: AsOf = None, version: Version = None) -> Response:
    """The whole shared agreement as one Markdown document (now, or as of a time or version)."""
    agreement = await _replayed(request, principal, agreement_id, as_of=as_of, version=version)
    rows = await request.app.state.pool.fetch(
        "SELECT organisation_id, display_name FROM organisations WHERE organisation_id = ANY($1::uuid[])",
        [agreement.client_organisation_id, agreement.provider_organisation_id])
    names = {r["organisation_id"]: r["display_name"] for r in rows}
    return Response(render_markdown(agreement, names), media_type="text/markdown; charset=utf-8")
