"""Operating procedures and their breakdowns, scope changes, and staying in sync (disagreements)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from fastapi import APIRouter, Request, status
from pydantic import BaseModel

from accord_runtime.identity import CurrentPrincipal
from contracts.agreements import ProcedureStep
from services.agreements.api.common import execute, side_of_caller
from services.agreements.commands import (
    AgreementState,
    AssessScopeChange,
    DefineProcedure,
    ProposeResolution,
    RecordDisagreement,
    RejectScopeChange,
    ReportBreakdown,
    RequestScopeChange,
    ResolveBreakdown,
)

router = APIRouter(prefix="/agreements/{agreement_id}", tags=["procedures, scope and sync"])


class OpenBreakdown(BaseModel):
    breakdown_id: UUID
    procedure_id: UUID
    procedure_name: str
    step_id: UUID
    step_title: str
    step_owner_side: str
    reported_by_side: str
    what_broke: str
    impact: str
    reported_at: datetime


class OpenScopeChange(BaseModel):
    change_id: UUID
    title: str
    what: str
    why: str
    requested_by_side: str
    status: str
    assessment: dict[str, Any] | None
    requested_at: datetime


def _steps(body: DefineProcedure) -> list[ProcedureStep]:
    return [ProcedureStep(step_id=s.step_id or uuid4(), title=s.title, owner_side=s.owner_side,
                          owner_role=s.owner_role, needs_from_other_side=list(s.needs_from_other_side))
            for s in body.steps]


@router.post("/procedures", status_code=status.HTTP_201_CREATED, response_model=AgreementState)
async def define_procedure(request: Request, agreement_id: UUID, body: DefineProcedure,
                           principal: CurrentPrincipal) -> AgreementState:
    procedure_id, steps = uuid4(), _steps(body)
    return await execute(request, principal, agreement_id, lambda a, by, _: a.define_procedure(
        by, procedure_id=procedure_id, name=body.name, steps=steps), created_id=procedure_id)


@router.put("/procedures/{procedure_id}", response_model=AgreementState)
async def redefine_procedure(request: Request, agreement_id: UUID, procedure_id: UUID, body: DefineProcedure,
                             principal: CurrentPrincipal) -> AgreementState:
    """Replace a procedure's steps (keep a step's `step_id` to keep it)."""
    steps = _steps(body)
    return await execute(request, principal, agreement_id, lambda a, by, _: a.define_procedure(
        by, procedure_id=procedure_id, name=body.name, steps=steps, replacing=True))


@router.post("/procedures/{procedure_id}/breakdowns", status_code=status.HTTP_201_CREATED,
             response_model=AgreementState)
async def report_breakdown(request: Request, agreement_id: UUID, procedure_id: UUID, body: ReportBreakdown,
                           principal: CurrentPrincipal) -> AgreementState:
    breakdown_id = uuid4()
    return await execute(request, principal, agreement_id, lambda a, by, _: a.report_breakdown(
        by, breakdown_id=breakdown_id, procedure_id=procedure_id, step_id=body.step_id,
        what_broke=body.what_broke, impact=body.impact), created_id=breakdown_id)


@router.post("/breakdowns/{breakdown_id}/resolution", response_model=AgreementState)
async def resolve_breakdown(request: Request, agreement_id: UUID, breakdown_id: UUID, body: ResolveBreakdown,
                            principal: CurrentPrincipal) -> AgreementState:
    return await execute(request, principal, agreement_id,
                         lambda a, by, _: a.resolve_breakdown(by, breakdown_id=breakdown_id, fix=body.fix))


@router.get("/breakdowns", response_model=list[OpenBreakdown])
async def open_breakdowns(request: Request, agreement_id: UUID, principal: CurrentPrincipal) -> list[OpenBreakdown]:
    await side_of_caller(request, principal, agreement_id)
    rows = await request.app.state.pool.fetch(
        "SELECT * FROM open_breakdowns WHERE agreement_id = $1 ORDER BY reported_at, breakdown_id", agreement_id)
    return [OpenBreakdown(**{k: v for k, v in dict(r).items() if k != "agreement_id"}) for r in rows]


@router.post("/scope-changes", status_code=status.HTTP_201_CREATED, response_model=AgreementState)
async def request_scope_change(request: Request, agreement_id: UUID, body: RequestScopeChange,
                               principal: CurrentPrincipal) -> AgreementState:
    change_id = uuid4()
    return await execute(request, principal, agreement_id, lambda a, by, _: a.request_scope_change(
        by, change_id=change_id, title=body.title, what=body.what, why=body.why), created_id=change_id)


@router.post("/scope-changes/{change_id}/assessment", response_model=AgreementState)
async def assess_scope_change(request: Request, agreement_id: UUID, change_id: UUID, body: AssessScopeChange,
                              principal: CurrentPrincipal) -> AgreementState:
    return await execute(request, principal, agreement_id, lambda a, by, _: a.assess_scope_change(
        by, change_id=change_id, effort_hours=body.effort_hours, cost_minor_units=body.cost_minor_units,
        currency=body.currency, timeline_impact_days=body.timeline_impact_days, notes=body.notes))


@router.post("/scope-changes/{change_id}/approval", response_model=AgreementState)
async def approve_scope_change(request: Request, agreement_id: UUID, change_id: UUID,
                               principal: CurrentPrincipal) -> AgreementState:
    return await execute(request, principal, agreement_id,
                         lambda a, by, _: a.approve_scope_change(by, change_id=change_id))


@router.post("/scope-changes/{change_id}/rejection", response_model=AgreementState)
async def reject_scope_change(request: Request, agreement_id: UUID, change_id: UUID, body: RejectScopeChange,
                              principal: CurrentPrincipal) -> AgreementState:
    return await execute(request, principal, agreement_id,
                         lambda a, by, _: a.reject_scope_change(by, change_id=change_id, reason=body.reason))


@router.get("/scope-changes", response_model=list[OpenScopeChange])
async def open_scope_changes(request: Request, agreement_id: UUID,
                             principal: CurrentPrincipal) -> list[OpenScopeChange]:
    """Scope changes awaiting an assessment or a decision."""
    await side_of_caller(request, principal, agreement_id)
    rows = await request.app.state.pool.fetch(
        "SELECT * FROM open_scope_changes WHERE agreement_id = $1 ORDER BY requested_at, change_id", agreement_id)
    return [OpenScopeChange(**{k: v for k, v in dict(r).items() if k != "agreement_id"}) for r in rows]


@router.post("/disagreements", status_code=status.HTTP_201_CREATED, response_model=AgreementState)
async def record_disagreement(request: Request, agreement_id: UUID, body: RecordDisagreement,
                              principal: CurrentPrincipal) -> AgreementState:
    disagreement_id = uuid4()
    return await execute(request, principal, agreement_id, lambda a, by, _: a.record_disagreement(
        by, disagreement_id=disagreement_id, topic=body.topic, description=body.description),
        created_id=disagreement_id)


@router.post("/disagreements/{disagreement_id}/resolution-proposals", response_model=AgreementState)
async def propose_resolution(request: Request, agreement_id: UUID, disagreement_id: UUID, body: ProposeResolution,
                             principal: CurrentPrincipal) -> AgreementState:
    return await execute(request, principal, agreement_id, lambda a, by, _: a.propose_resolution(
        by, disagreement_id=disagreement_id, resolution=body.resolution))


@router.post("/disagreements/{disagreement_id}/resolution", response_model=AgreementState)
async def confirm_resolution(request: Request, agreement_id: UUID, disagreement_id: UUID,
                             principal: CurrentPrincipal) -> AgreementState:
    """The other side confirms the proposed resolution: both sides have now recorded it."""
    return await execute(request, principal, agreement_id,
                         lambda a, by, _: a.confirm_resolution(by, disagreement_id=disagreement_id))
