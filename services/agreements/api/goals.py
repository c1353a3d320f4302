"""Goals (client states and revises; provider acknowledges or asks) and requirements (client documents;
provider accepts or asks for a clarification, which the queries service raises as a query)."""

from __future__ import annotations

from uuid import UUID, uuid4

from fastapi import APIRouter, Request, status

from accord_runtime.identity import CurrentPrincipal
from services.agreements.api.common import execute
from services.agreements.commands import (
    AcceptRequirement,
    AcknowledgeGoal,
    AgreementState,
    AskAboutGoal,
    AskAboutRequirement,
    DocumentRequirement,
    StateGoal,
)

router = APIRouter(prefix="/agreements/{agreement_id}", tags=["goals and requirements"])


@router.post("/goals", status_code=status.HTTP_201_CREATED, response_model=AgreementState)
async def state_goal(request: Request, agreement_id: UUID, body: StateGoal,
                     principal: CurrentPrincipal) -> AgreementState:
    goal_id = uuid4()
    return await execute(request, principal, agreement_id, lambda a, by, _: a.state_goal(
        by, goal_id=goal_id, outcome=body.outcome, success_measure=body.success_measure,
        constraints=list(body.constraints)), created_id=goal_id)


@router.post("/goals/{goal_id}/revisions", response_model=AgreementState)
async def revise_goal(request: Request, agreement_id: UUID, goal_id: UUID, body: StateGoal,
                      principal: CurrentPrincipal) -> AgreementState:
    return await execute(request, principal, agreement_id, lambda a, by, _: a.revise_goal(
        by, goal_id=goal_id, outcome=body.outcome, success_measure=body.success_measure,
        constraints=list(body.constraints)))


@router.post("/goals/{goal_id}/acknowledgement", response_model=AgreementState)
async def acknowledge_goal(request: Request, agreement_id: UUID, goal_id: UUID, body: AcknowledgeGoal,
                           principal: CurrentPrincipal) -> AgreementState:
    return await execute(request, principal, agreement_id, lambda a, by, _: a.acknowledge_goal(
        by, goal_id=goal_id, understanding=body.understanding, revision=body.revision))


@router.post("/goals/{goal_id}/clarification-requests", response_model=AgreementState)
async def ask_about_goal(request: Request, agreement_id: UUID, goal_id: UUID, body: AskAboutGoal,
                         principal: CurrentPrincipal) -> AgreementState:
    return await execute(request, principal, agreement_id, lambda a, by, _: a.request_goal_clarification(
        by, goal_id=goal_id, question=body.question, revision=body.revision))


@router.post("/requirements", status_code=status.HTTP_201_CREATED, response_model=AgreementState)
async def document_requirement(request: Request, agreement_id: UUID, body: DocumentRequirement,
                               principal: CurrentPrincipal) -> AgreementState:
    requirement_id = uuid4()
    return await execute(request, principal, agreement_id, lambda a, by, _: a.document_requirement(
        by, requirement_id=requirement_id, title=body.title, description=body.description,
        acceptance_criteria=list(body.acceptance_criteria), technical_specifications=body.technical_specifications,
        timeline=body.timeline, attachments=list(body.attachments)), created_id=requirement_id)


@router.post("/requirements/{requirement_id}/clarification-requests", status_code=status.HTTP_201_CREATED,
             response_model=AgreementState)
async def ask_about_requirement(request: Request, agreement_id: UUID, requirement_id: UUID,
                                body: AskAboutRequirement, principal: CurrentPrincipal) -> AgreementState:
    """The provider asks; `created_id` is the id of the query the queries service will raise."""
    query_id = uuid4()
    return await execute(request, principal, agreement_id, lambda a, by, _: a.request_requirement_clarification(
        by, requirement_id=requirement_id, query_id=query_id, question=body.question), created_id=query_id)


@router.post("/requirements/{requirement_id}/acceptance", response_model=AgreementState)
async def accept_requirement(request: Request, agreement_id: UUID, requirement_id: UUID,
                             principal: CurrentPrincipal, body: AcceptRequirement | None = None) -> AgreementState:
    revision = body.revision if body else None
    return await execute(request, principal, agreement_id, lambda a, by, _: a.accept_requirement(
        by, requirement_id=requirement_id, revision=revision))
