"""People (contacts, personnel changes, the escalation matrix) and the SLA policy."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from fastapi import APIRouter, Request, status
from pydantic import BaseModel

from accord_runtime.identity import CurrentPrincipal
from services.agreements.api.common import execute, side_of_caller
from services.agreements.commands import AgreementState, AssignContact, ChangePersonnel, RemoveContact, SetSLAPolicy

router = APIRouter(prefix="/agreements/{agreement_id}", tags=["people and SLA policy"])


class ContactView(BaseModel):
    contact_id: UUID
    side: str
    role: str
    name: str
    email: str
    escalation_level: int | None


class EscalationLevel(BaseModel):
    level: int
    client: list[ContactView]
    provider: list[ContactView]


@router.post("/contacts", status_code=status.HTTP_201_CREATED, response_model=AgreementState)
async def assign_contact(request: Request, agreement_id: UUID, body: AssignContact,
                         principal: CurrentPrincipal) -> AgreementState:
    """Name one of your own organisation's people for a role (and an escalation level)."""
    contact_id = uuid4()
    return await execute(request, principal, agreement_id, lambda a, by, _: a.assign_contact(
        by, contact_id=contact_id, role=body.role, name=body.name, email=body.email,
        escalation_level=body.escalation_level), created_id=contact_id)


@router.post("/contacts/{contact_id}/replacement", status_code=status.HTTP_201_CREATED,
             response_model=AgreementState)
async def change_personnel(request: Request, agreement_id: UUID, contact_id: UUID, body: ChangePersonnel,
                           principal: CurrentPrincipal) -> AgreementState:
    """Someone else takes over the contact's role; `created_id` is the new contact's id."""
    new_id = uuid4()
    return await execute(request, principal, agreement_id, lambda a, by, _: a.change_personnel(
        by, contact_id=contact_id, replaced_by_contact_id=new_id, name=body.name, email=body.email,
        handover_notes=body.handover_notes), created_id=new_id)


@router.post("/contacts/{contact_id}/removal", response_model=AgreementState)
async def remove_contact(request: Request, agreement_id: UUID, contact_id: UUID, principal: CurrentPrincipal,
                         body: RemoveContact | None = None) -> AgreementState:
    body = body or RemoveContact()
    return await execute(request, principal, agreement_id,
                         lambda a, by, _: a.remove_contact(by, contact_id=contact_id, reason=body.reason))


@router.get("/contacts", response_model=list[ContactView])
async def list_contacts(request: Request, agreement_id: UUID, principal: CurrentPrincipal) -> list[ContactView]:
    await side_of_caller(request, principal, agreement_id)
    rows = await request.app.state.pool.fetch(
        "SELECT contact_id, side, role, name, email, escalation_level FROM agreement_contacts"
        " WHERE agreement_id = $1 ORDER BY side, escalation_level NULLS LAST, role, name", agreement_id)
    return [ContactView(**dict(r)) for r in rows]


@router.get("/escalation-matrix", response_model=list[EscalationLevel])
async def escalation_matrix(request: Request, agreement_id: UUID,
                            principal: CurrentPrincipal) -> list[EscalationLevel]:
    """Who to escalate to, per level and side: derived from the current contacts' roles."""
    contacts = await list_contacts(request, agreement_id, principal)
    levels: dict[int, dict[str, list[Any]]] = {}
    for contact in contacts:
        if contact.escalation_level is not None:
            levels.setdefault(contact.escalation_level, {"client": [], "provider": []})[contact.side].append(contact)
    return [EscalationLevel(level=level, **sides) for level, sides in sorted(levels.items())]


@router.post("/sla-policies", status_code=status.HTTP_201_CREATED, response_model=AgreementState)
async def set_sla_policy(request: Request, agreement_id: UUID, body: SetSLAPolicy,
                         principal: CurrentPrincipal) -> AgreementState:
    """A new SLA policy from `effective_from` (default: now); never back-dated."""
    return await execute(request, principal, agreement_id, lambda a, by, now: a.set_sla_policy(
        by, policy=body.policy, now=now, effective_from=body.effective_from))
