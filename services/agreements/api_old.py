"""HTTP API of the agreements service. Routes are thin: parse, authorize, call a handler."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import BaseModel

from accord_runtime.eventstore import Metadata
from accord_runtime.identity import CurrentPrincipal, Principal
from services.agreements import handlers
from services.agreements.commands import (
    AcceptAgreement,
    AgreementState,
    DraftAgreement,
    ProposeAgreement,
)

router = APIRouter()


class Me(BaseModel):
    user_id: UUID
    organisation_id: UUID
    display_name: str
    organisation_name: str


class AgreementSummary(BaseModel):
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
    created_at: datetime
    updated_at: datetime


class HistoryEntry(BaseModel):
    sequence: int
    event_id: UUID
    event_type: str
    actor: str
    occurred_at: datetime
    data: dict[str, Any]


class AgreementDetail(AgreementSummary):
    your_side: str
    history: list[HistoryEntry]


class AgreementPage(BaseModel):
    items: list[AgreementSummary]
    limit: int
    offset: int


def _context(request: Request) -> handlers.Context:
    return handlers.Context(store=request.app.state.store, pool=request.app.state.pool)


def _metadata(request: Request, principal: Principal) -> Metadata:
    return Metadata(actor=principal.actor, correlation_id=request.state.correlation_id)


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
        _context(request), body, _metadata(request, principal), principal.organisation_id)


@router.post("/agreements/{agreement_id}/proposal", response_model=AgreementState)
async def propose_agreement(request: Request, agreement_id: UUID, principal: CurrentPrincipal) -> AgreementState:
    command = ProposeAgreement(agreement_id=agreement_id)
    return await handlers.propose_agreement(
        _context(request), command, _metadata(request, principal), principal.organisation_id)


@router.post("/agreements/{agreement_id}/acceptance", response_model=AgreementState)
async def accept_agreement(request: Request, agreement_id: UUID, principal: CurrentPrincipal) -> AgreementState:
    command = AcceptAgreement(agreement_id=agreement_id)
    return await handlers.accept_agreement(
        _context(request), command, _metadata(request, principal), principal.organisation_id)


@router.get("/agreements", response_model=AgreementPage)
async def list_agreements(
    request: Request,
    principal: CurrentPrincipal,
    status_filter: Annotated[str | None, Query(alias="status", pattern="^(draft|proposed|active)$")] = None,
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
async def get_agreement(request: Request, agreement_id: UUID, principal: CurrentPrincipal) -> AgreementDetail:
    pool = request.app.state.pool
    row = await pool.fetchrow("SELECT * FROM agreement_summaries WHERE agreement_id = $1", agreement_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"agreement {agreement_id} does not exist")
    if principal.organisation_id == row["client_organisation_id"]:
        side = "client"
    elif principal.organisation_id == row["provider_organisation_id"]:
        side = "provider"
    else:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "your organisation is not a party to this agreement")
    history = await pool.fetch(
        "SELECT sequence, event_id, event_type, actor, occurred_at, data FROM agreement_history"
        " WHERE agreement_id = $1 ORDER BY sequence", agreement_id)
    return AgreementDetail(**dict(row), your_side=side, history=[HistoryEntry(**dict(h)) for h in history])
