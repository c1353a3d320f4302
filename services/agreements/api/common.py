"""What every route of the agreements API shares: the handler context, metadata and the caller's side."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from uuid import UUID

from fastapi import Request

from accord_runtime.eventstore import Metadata
from accord_runtime.identity import Principal
from accord_runtime.parties import side_of
from services.agreements import handlers
from services.agreements.commands import AgreementState
from services.agreements.domain import Agreement

#: A decision on the agreement by the caller's organisation, at the command's time.
Decide = Callable[[Agreement, UUID, datetime], None]


def context(request: Request) -> handlers.Context:
    return handlers.Context(store=request.app.state.store, pool=request.app.state.pool)


def metadata(request: Request, principal: Principal) -> Metadata:
    return Metadata(actor=principal.actor, correlation_id=request.state.correlation_id)


async def execute(request: Request, principal: Principal, agreement_id: UUID, decide: Decide,
                  created_id: UUID | None = None) -> AgreementState:
    """Run one command on an agreement for the caller; the domain decides who may do it."""
    organisation_id = principal.organisation_id
    return await handlers.change_agreement(
        context(request), agreement_id, metadata(request, principal),
        lambda agreement, now: decide(agreement, organisation_id, now), created_id=created_id)


async def side_of_caller(request: Request, principal: Principal, agreement_id: UUID) -> str:
    """The caller's side of the agreement (from the parties read model), or 404/403."""
    return await side_of(request.app.state.pool, principal, agreement_id)
