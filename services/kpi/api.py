"""HTTP API of the kpi service. Routes are thin: who the caller is (the parties replica), then one
handler per command; reads come from the read models, relationship KPIs from the event fold.

Either side may define KPIs and set health weights; only the provider reports values and publishes
reports; only the client acknowledges them (the domain says so with a 403 and a reason).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import BaseModel, ConfigDict

from accord_runtime.eventstore import Metadata
from accord_runtime.identity import CurrentPrincipal, Principal
from accord_runtime.parties import Side, side_of
from contracts.kpi import Direction, KpiSource, KpiStatus, ReportedKpi
from services.kpi import handlers
from services.kpi.commands import AcknowledgeReport, Created, DefineKpi, PublishReport, ReportKpiValue, SetHealthWeights
from services.kpi.evaluation import load_book, relationship, store_on
from services.kpi.relationship import RelationshipKpis

router = APIRouter(prefix="/agreements/{agreement_id}", tags=["kpi"])
Since = Annotated[datetime | None, Query(alias="from", description="Period start (inclusive).")]
Until = Annotated[datetime | None, Query(alias="to", description="Period end (exclusive).")]


def _context(request: Request) -> handlers.Context:
    return handlers.Context(store=request.app.state.store, pool=request.app.state.pool)


async def _caller(request: Request, principal: Principal, agreement_id: UUID) -> tuple[Side, Metadata]:
    side = await side_of(request.app.state.pool, principal, agreement_id)
    return side, Metadata(actor=principal.actor, correlation_id=request.state.correlation_id)


def _period(since: datetime | None, until: datetime | None) -> None:
    for value in (since, until):
        if value is not None and value.tzinfo is None:
            raise HTTPException(422, "from and to need a time zone")
    if since is not None and until is not None and until <= since:
        raise HTTPException(422, "to must be after from")


# --- what the reads return -------------------------------------------------------------------------

class Kpi(BaseModel):
    """A KPI as defined, with its latest value and status (None before the first value)."""

    kpi_id: UUID
    agreement_id: UUID
    name: str
    description: str
    unit: str
    direction: Direction
    target: float
    warning_threshold: float
    breach_threshold: float
    cadence_seconds: int
    source: KpiSource
    metric: str | None
    defined_by_side: Side | None  # None when Accord defined it
    defined_at: datetime
    status: KpiStatus | None
    last_value: float | None
    last_reported_at: datetime | None
    overdue_periods: int


class KpiValue(BaseModel):
    value: float
    status: KpiStatus
    period_start: datetime
    period_end: datetime
    evidence: str
    notes: str
    reported_by_side: Side | None  # None when Accord computed it
    reported_at: datetime


class ReportKpi(ReportedKpi):
    """A KPI of a report as the read model keeps it: the event's, read back from JSON (ids as text)."""

    model_config = ConfigDict(strict=False)


class Report(BaseModel):
    """A published period report and where its review stands."""

    report_id: UUID
    agreement_id: UUID
    title: str
    period_start: datetime
    period_end: datetime
    narrative: str
    kpis: list[ReportKpi]
    published_at: datetime
    review_due_at: datetime
    state: Literal["awaiting_review", "review_overdue", "acknowledged"]
    acknowledged_at: datetime | None
    delay_seconds: int | None
    late: bool | None
    comments: str | None
    questions: list[str] | None


# --- KPIs ------------------------------------------------------------------------------------------

@router.post("/kpis", status_code=status.HTTP_201_CREATED, response_model=Created)
async def define_kpi(request: Request, agreement_id: UUID, body: DefineKpi, principal: CurrentPrincipal) -> Created:
    side, meta = await _caller(request, principal, agreement_id)
    return await handlers.define_kpi(_context(request), agreement_id, side, body, meta)


@router.get("/kpis", response_model=list[Kpi])
async def kpis(request: Request, agreement_id: UUID, principal: CurrentPrincipal) -> list[Kpi]:
    """The agreement's KPIs with their latest value and status."""
    await _caller(request, principal, agreement_id)
    rows = await request.app.state.pool.fetch(
        "SELECT * FROM kpi_definitions WHERE agreement_id = $1 ORDER BY defined_at, name", agreement_id)
    return [Kpi(**r) for r in rows]


@router.post("/kpis/{kpi_id}/values", status_code=status.HTTP_201_CREATED, response_model=Created)
async def report_value(request: Request, agreement_id: UUID, kpi_id: UUID, body: ReportKpiValue,
                       principal: CurrentPrincipal) -> Created:
    side, meta = await _caller(request, principal, agreement_id)
    return await handlers.report_value(_context(request), agreement_id, kpi_id, side, body, meta)


@router.get("/kpis/{kpi_id}/series", response_model=list[KpiValue])
async def series(request: Request, agreement_id: UUID, kpi_id: UUID, principal: CurrentPrincipal,
                 since: Since = None, until: Until = None) -> list[KpiValue]:
    """The KPI's values whose periods end within [from, to), oldest first."""
    await _caller(request, principal, agreement_id)
    _period(since, until)
    rows = await request.app.state.pool.fetch(
        "SELECT value, status, period_start, period_end, evidence, notes, reported_by_side, reported_at"
        " FROM kpi_values WHERE kpi_id = $1 AND agreement_id = $2"
        " AND ($3::timestamptz IS NULL OR period_end >= $3) AND ($4::timestamptz IS NULL OR period_end < $4)"
        " ORDER BY period_end, reported_at", kpi_id, agreement_id, since, until)
    return [KpiValue(**r) for r in rows]


# --- reports ---------------------------------------------------------------------------------------

@router.post("/reports", status_code=status.HTTP_201_CREATED, response_model=Created)
async def publish_report(request: Request, agreement_id: UUID, body: PublishReport,
                         principal: CurrentPrincipal) -> Created:
    side, meta = await _caller(request, principal, agreement_id)
    return await handlers.publish_report(_context(request), agreement_id, side, body, meta)


@router.post("/reports/{report_id}/acknowledgement", response_model=Created)
async def acknowledge_report(request: Request, agreement_id: UUID, report_id: UUID, body: AcknowledgeReport,
                             principal: CurrentPrincipal) -> Created:
    side, meta = await _caller(request, principal, agreement_id)
    return await handlers.acknowledge_report(_context(request), agreement_id, report_id, side, body, meta)


@router.get("/reports", response_model=list[Report])
async def reports(request: Request, agreement_id: UUID, principal: CurrentPrincipal) -> list[Report]:
    """Published reports, newest first, with their acknowledgement state."""
    await _caller(request, principal, agreement_id)
    rows = await request.app.state.pool.fetch(
        "SELECT * FROM kpi_reports WHERE agreement_id = $1 ORDER BY published_at DESC", agreement_id)
    return [Report(**r) for r in rows]


# --- relationship KPIs and health ------------------------------------------------------------------

@router.get("/relationship-kpis", response_model=RelationshipKpis)
async def relationship_kpis(request: Request, agreement_id: UUID, principal: CurrentPrincipal,
                            since: Since = None, until: Until = None) -> RelationshipKpis:
    """Per side, now — or for the past period [from, to), recomputed from the events."""
    await _caller(request, principal, agreement_id)
    _period(since, until)
    async with request.app.state.pool.acquire() as conn:
        book = await load_book(store_on(conn), agreement_id)
        return await relationship(conn, book, since, until)


class Health(BaseModel):
    score: float
    band: str
    components: list[dict[str, Any]]
    moved: list[str]
    cause: str
    recorded_at: datetime


@router.get("/health", response_model=Health)
async def current_health(request: Request, agreement_id: UUID, principal: CurrentPrincipal) -> Health:
    """The health score now, with every component's points and shortfall."""
    await _caller(request, principal, agreement_id)
    row = await request.app.state.pool.fetchrow("SELECT * FROM health_current WHERE agreement_id = $1",
                                                agreement_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no health score yet for this agreement")
    return Health(**{k: v for k, v in dict(row).items() if k != "agreement_id"})


@router.get("/health/history", response_model=list[Health])
async def health_history(
    request: Request, agreement_id: UUID, principal: CurrentPrincipal, since: Since = None, until: Until = None,
    latest: Annotated[int | None, Query(ge=1, le=10_000, description=(
        "Only the latest scores of the period, this many (a score is recorded on every event that moves"
        " it, so a long relationship has thousands); without it, all of them."))] = None,
) -> list[Health]:
    """Every recorded score of the period (or its latest), oldest first, with the components that moved it."""
    await _caller(request, principal, agreement_id)
    _period(since, until)
    rows = await request.app.state.pool.fetch(
        "SELECT * FROM (SELECT * FROM health_history WHERE agreement_id = $1"
        " AND ($2::timestamptz IS NULL OR recorded_at >= $2) AND ($3::timestamptz IS NULL OR recorded_at < $3)"
        " ORDER BY recorded_at DESC LIMIT $4) AS latest ORDER BY recorded_at", agreement_id, since, until, latest)
    return [Health(**{k: v for k, v in dict(r).items() if k not in ("agreement_id", "event_id")}) for r in rows]


@router.put("/health/weights", response_model=Created)
async def set_health_weights(request: Request, agreement_id: UUID, body: SetHealthWeights,
                             principal: CurrentPrincipal) -> Created:
    side, meta = await _caller(request, principal, agreement_id)
    return await handlers.set_health_weights(_context(request), agreement_id, side, body, meta)
