"""Deliverables, the communication plan and status updates, and customer-health check-ins."""

from __future__ import annotations

from uuid import UUID, uuid4

from fastapi import APIRouter, Request, status

from accord_runtime.identity import CurrentPrincipal
from contracts.agreements import ActionItem
from services.agreements.api.common import execute
from services.agreements.commands import (
    AgreementState,
    DefineDeliverable,
    Deliver,
    HoldCheckIn,
    PostStatusUpdate,
    RejectDeliverable,
    SetCheckInPlan,
    SetCommunicationPlan,
)

router = APIRouter(prefix="/agreements/{agreement_id}", tags=["deliverables, communication and check-ins"])


@router.post("/deliverables", status_code=status.HTTP_201_CREATED, response_model=AgreementState)
async def define_deliverable(request: Request, agreement_id: UUID, body: DefineDeliverable,
                             principal: CurrentPrincipal) -> AgreementState:
    deliverable_id = uuid4()
    return await execute(request, principal, agreement_id, lambda a, by, _: a.define_deliverable(
        by, deliverable_id=deliverable_id, title=body.title, expectations=body.expectations, due_on=body.due_on,
        requirement_ids=list(body.requirement_ids)), created_id=deliverable_id)


@router.post("/deliverables/{deliverable_id}/delivery", response_model=AgreementState)
async def deliver(request: Request, agreement_id: UUID, deliverable_id: UUID, principal: CurrentPrincipal,
                  body: Deliver | None = None) -> AgreementState:
    body = body or Deliver()
    return await execute(request, principal, agreement_id, lambda a, by, _: a.deliver(
        by, deliverable_id=deliverable_id, note=body.note, url=body.url))


@router.post("/deliverables/{deliverable_id}/acceptance", response_model=AgreementState)
async def accept_deliverable(request: Request, agreement_id: UUID, deliverable_id: UUID,
                             principal: CurrentPrincipal) -> AgreementState:
    return await execute(request, principal, agreement_id,
                         lambda a, by, _: a.accept_deliverable(by, deliverable_id=deliverable_id))


@router.post("/deliverables/{deliverable_id}/rejection", response_model=AgreementState)
async def reject_deliverable(request: Request, agreement_id: UUID, deliverable_id: UUID, body: RejectDeliverable,
                             principal: CurrentPrincipal) -> AgreementState:
    return await execute(request, principal, agreement_id, lambda a, by, _: a.reject_deliverable(
        by, deliverable_id=deliverable_id, reason=body.reason))


@router.put("/communication-plan", response_model=AgreementState)
async def set_communication_plan(request: Request, agreement_id: UUID, body: SetCommunicationPlan,
                                 principal: CurrentPrincipal) -> AgreementState:
    return await execute(request, principal, agreement_id, lambda a, by, now: a.set_communication_plan(
        by, status_update_every_seconds=body.status_update_every_seconds, meetings=body.meetings,
        channels=list(body.channels), now=now))


@router.post("/status-updates", status_code=status.HTTP_201_CREATED, response_model=AgreementState)
async def post_status_update(request: Request, agreement_id: UUID, body: PostStatusUpdate,
                             principal: CurrentPrincipal) -> AgreementState:
    update_id = uuid4()
    return await execute(request, principal, agreement_id, lambda a, by, now: a.post_status_update(
        by, update_id=update_id, summary=body.summary, now=now), created_id=update_id)


@router.put("/checkin-plan", response_model=AgreementState)
async def set_checkin_plan(request: Request, agreement_id: UUID, body: SetCheckInPlan,
                           principal: CurrentPrincipal) -> AgreementState:
    return await execute(request, principal, agreement_id, lambda a, by, _: a.set_checkin_plan(
        by, every_days=body.every_days, format=body.format))


@router.post("/checkins", status_code=status.HTTP_201_CREATED, response_model=AgreementState)
async def hold_checkin(request: Request, agreement_id: UUID, body: HoldCheckIn,
                       principal: CurrentPrincipal) -> AgreementState:
    checkin_id = uuid4()
    items = [ActionItem(owner_side=i.owner_side, description=i.description, due_on=i.due_on)
             for i in body.action_items]
    return await execute(request, principal, agreement_id, lambda a, by, _: a.hold_checkin(
        by, checkin_id=checkin_id, held_on=body.held_on, client_score=body.client_score,
        provider_score=body.provider_score, client_sentiment=body.client_sentiment,
        provider_sentiment=body.provider_sentiment, notes=body.notes, action_items=items), created_id=checkin_id)
