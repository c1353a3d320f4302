"""The notifier's HTTP API: escalations of an agreement with their history, and acknowledgement.

Acknowledging takes a bearer token of a party to the agreement, or the signed link a notification
carries (the signature is the credential). The router's lifespan runs the delivery worker, so it
starts after the runtime opened storage and stops before the runtime closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, status
from pydantic import BaseModel

from accord_runtime.eventstore import Metadata
from accord_runtime.identity import CurrentPrincipal
from accord_runtime.parties import side_of
from services.notifier import handlers
from services.notifier.bootstrap import Notifier
from services.notifier.outbox import DeliveryWorker
from services.notifier.signing import InvalidToken


class HistoryEntry(BaseModel):
    sequence: int
    event_type: str
    actor: str
    occurred_at: datetime
    data: dict[str, Any]


class EscalationView(BaseModel):
    escalation_id: UUID
    matter: str
    occurrence: int
    rule: str
    agreement_id: UUID
    status: str
    level: int
    levels: int
    trigger_type: str
    started_at: datetime
    updated_at: datetime
    closed_by: str | None
    history: list[HistoryEntry]


class AgreementEscalations(BaseModel):
    open: list[EscalationView]
    closed: list[EscalationView]


class AcknowledgementView(BaseModel):
    escalation_id: UUID
    status: str
    cancelled_notifications: int


_COLUMNS = ("escalation_id, matter, occurrence, rule, agreement_id, status, level, levels, trigger_type, started_at,"
            " updated_at, closed_by")


async def _views(request: Request, where: str, *args: object) -> list[EscalationView]:
    pool = request.app.state.pool
    rows = await pool.fetch(f"SELECT {_COLUMNS} FROM escalations WHERE {where} ORDER BY started_at", *args)
    history = await pool.fetch(
        "SELECT escalation_id, sequence, event_type, actor, occurred_at, data FROM escalation_history"
        " WHERE escalation_id = ANY($1::uuid[]) ORDER BY escalation_id, sequence",
        [row["escalation_id"] for row in rows])
    by_escalation: dict[UUID, list[HistoryEntry]] = {}
    for entry in history:
        by_escalation.setdefault(entry["escalation_id"], []).append(
            HistoryEntry(**{k: entry[k] for k in ("sequence", "event_type", "actor", "occurred_at", "data")}))
    return [EscalationView(**dict(row), history=by_escalation.get(row["escalation_id"], [])) for row in rows]


def build_router(notifier: Notifier) -> APIRouter:
    @contextlib.asynccontextmanager
    async def deliveries(app: FastAPI) -> AsyncIterator[None]:
        worker = DeliveryWorker(app.state.pool, app.state.store, notifier)
        app.state.store.on_append(worker.wake)  # levels queue notifications along with their events
        task = asyncio.create_task(worker.run(), name="notifier deliveries")
        try:
            yield
        finally:
            worker.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=10)
            await notifier.close_senders()

    router = APIRouter(tags=["escalations"], lifespan=deliveries)

    @router.get("/agreements/{agreement_id}/escalations", response_model=AgreementEscalations)
    async def agreement_escalations(
        request: Request, agreement_id: UUID, principal: CurrentPrincipal,
        closed_latest: Annotated[int | None, Query(ge=0, le=10_000, description=(
            "Only the latest closed escalations, this many (0: none); without it, all of them."))] = None,
    ) -> AgreementEscalations:
        """The agreement's open escalations and the closed ones (or the latest of them), each with its
        history, in the order they started."""
        await side_of(request.app.state.pool, principal, agreement_id)
        views = await _views(
            request, "agreement_id = $1 AND (status = 'open' OR escalation_id IN (SELECT escalation_id"
            " FROM escalations WHERE agreement_id = $1 AND status <> 'open' ORDER BY started_at DESC LIMIT $2))",
            agreement_id, closed_latest)
        return AgreementEscalations(open=[v for v in views if v.status == "open"],
                                    closed=[v for v in views if v.status != "open"])

    @router.get("/escalations/{escalation_id}", response_model=EscalationView)
    async def escalation(request: Request, escalation_id: UUID, principal: CurrentPrincipal) -> EscalationView:
        _, agreement_id = await handlers.matter_of(request.app.state.pool, escalation_id)
        await side_of(request.app.state.pool, principal, agreement_id)
        return (await _views(request, "escalation_id = $1", escalation_id))[0]

    @router.post("/escalations/{escalation_id}/acknowledgement", response_model=AcknowledgementView)
    async def acknowledge(request: Request, escalation_id: UUID, principal: CurrentPrincipal) -> AcknowledgementView:
        """Take the matter on: the chain stops and its pending notifications are cancelled (409 if it is
        already acknowledged or resolved)."""
        _, agreement_id = await handlers.matter_of(request.app.state.pool, escalation_id)
        await side_of(request.app.state.pool, principal, agreement_id)
        done = await handlers.acknowledge(
            request.app.state.pool, request.app.state.store, escalation_id, by=principal.actor, via="api",
            meta=Metadata(principal.actor, request.state.correlation_id))
        return AcknowledgementView(**vars(done))

    @router.get("/escalations/{escalation_id}/ack", response_model=AcknowledgementView)
    async def acknowledge_by_link(request: Request, escalation_id: UUID, token: str) -> AcknowledgementView:
        """The signed link a notification carries: no bearer token, the signature is the credential."""
        if notifier.ack_signer is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "acknowledge links are not enabled")
        try:
            verified = notifier.ack_signer.verify(escalation_id, token)
        except InvalidToken as error:
            raise HTTPException(status.HTTP_403_FORBIDDEN, str(error)) from None
        actor = f"link:{verified.recipient}"
        done = await handlers.acknowledge(
            request.app.state.pool, request.app.state.store, escalation_id, by=actor, via="link",
            meta=Metadata(actor, request.state.correlation_id))
        return AcknowledgementView(**vars(done))

    return router
