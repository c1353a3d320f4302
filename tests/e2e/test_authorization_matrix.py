"""Who may call what: every route of every service, by {no token, a party of another agreement, the wrong
side, the right side}, against the four services running in this process over the real servers.

The table `ROUTES` names, per (service, method, path), how to build a valid request for the fixture
agreement and which side may call it. `test_the_matrix_covers_every_route` fails when a service gains
a route without a row, so a new route cannot skip its authorization check.

Expected answers, as designed (README: "401 without a valid token, 403 for someone else's agreement or
the wrong side, 409 with a reason for an illegal transition"):

* no token → 401, everywhere;
* a valid token of an organisation that is a party to another agreement only → 403 on every route of an
  agreement (or of one of its parts: a query, an escalation). The routes that are not about one agreement
  answer for the caller's own organisation: `GET /me` and `GET /agreements` → 200 (and the list does not
  contain the fixture agreement); `POST /agreements` naming two other organisations → 403. No route hides
  an existing agreement behind a 404: 404 is only for an id that does not exist (in that service's replica);
* the wrong side of a one-side-only command → 403 with the reason ("only the provider …");
* the right side → the route's 2xx. Every row prepares a fresh target in the state its command needs
  (a new goal to acknowledge, an answered query to close, a fresh agreement to suspend), so no row
  depends on another row's side effects and no repeat is refused with a 409.

Also here: tokens (API tokens and signed acknowledge links) never reach a log line, and the repository's
tracked files hold no secrets beyond the documented dev-only compose defaults.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import re
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import structlog

from accord_runtime.logs import configure_logging
from accord_runtime.service import ServiceDefinition, ServiceRuntime
from accord_runtime.settings import ServiceSettings
from services.agreements.main import DEFINITION as AGREEMENTS
from services.kpi.main import DEFINITION as KPI
from services.notifier.main import definition as notifier_definition
from services.notifier.settings import NotifierSettings
from services.notifier.signing import AckSigner
from services.queries.main import DEFINITION as QUERIES
from tests.conftest import RUN_ID
from tests.e2e.conftest import Party, delete_broker_objects, register_party
from tests.support import eventually

Service = Literal["agreements", "queries", "kpi", "notifier"]
Side = Literal["client", "provider", "either"]

SERVICES: tuple[Service, ...] = ("agreements", "queries", "kpi", "notifier")
#: Not about any agreement, or not behind a bearer token: outside the matrix.
OPERATIONAL = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/docs"),
               ("GET", "/openapi.json")}
#: Its credential is the signed link itself: tested on its own below.
SIGNED_LINK = ("notifier", "GET", "/escalations/{escalation_id}/ack")
ACK_KEY = "matrix-test-ack-key-0123456789"  # this test's own signing key

ALL_DAY = {"timezone": "UTC", "working_periods": [
    {"weekday": d, "start": "00:00:00", "end": "23:59:59.999999"} for d in range(7)]}
SLA_POLICY = {"calendar": ALL_DAY, "targets": [
    {"priority": "normal", "first_response_minutes": 60, "resolution_minutes": 240}]}


def _free_port() -> int:
    """A loopback port nothing listens on (the notifier's SMTP deliveries fail there, harmlessly)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the four services and the fixture agreement ---------------------------------------------------

@dataclass
class World:
    """The four services in this process, two parties of the fixture agreement and an outsider (a party
    to another agreement), with helpers to prepare the parts a route needs."""

    runtimes: dict[Service, ServiceRuntime]
    apis: dict[Service, httpx.AsyncClient]
    client: Party
    provider: Party
    outsider: Party
    agreement_id: str = ""
    other_agreement_id: str = ""

    def party(self, side: str) -> Party:
        return self.client if side == "client" else self.provider

    async def call(self, service: Service, method: str, path: str, by: Party | None, body: Any = None,
                   params: dict[str, Any] | None = None) -> httpx.Response:
        return await self.apis[service].request(method, path, headers=by.headers if by else {}, json=body,
                                                params=params)

    async def ok(self, service: Service, method: str, path: str, by: Party, body: Any = None) -> Any:
        response = await self.call(service, method, path, by, body)
        assert response.is_success, (service, method, path, response.status_code, response.text)
        return response.json()

    async def a(self, method: str, sub: str, by: Party, body: Any = None, agreement: str | None = None) -> Any:
        """A call of the agreements service on the fixture agreement (or `agreement`)."""
        return await self.ok("agreements", method, f"/agreements/{agreement or self.agreement_id}{sub}", by, body)

    async def created(self, sub: str, by: Party, body: Any) -> str:
        return str((await self.a("POST", sub, by, body))["created_id"])

    # -- fresh parts, each in the state a command needs --

    async def agreement(self, status: str = "draft", by: Party | None = None) -> str:
        drafted = await self.ok("agreements", "POST", "/agreements", by or self.client, {
            "title": "Outsourced IT", "client_organisation_id": str(self.client.organisation_id),
            "provider_organisation_id": str(self.provider.organisation_id)})
        agreement_id = str(drafted["agreement_id"])
        if status in ("proposed", "active", "suspended"):
            await self.a("POST", "/proposal", self.client, agreement=agreement_id)
        if status in ("active", "suspended"):
            for party in (self.client, self.provider):
                await self.a("POST", "/acceptance", party, agreement=agreement_id)
        if status == "suspended":
            await self.a("POST", "/suspension", self.client, {"reason": "audit"}, agreement=agreement_id)
        return agreement_id

    async def goal(self) -> str:
        return await self.created("/goals", self.client, {"outcome": "Close in 5 days", "success_measure": "Days"})

    async def requirement(self) -> str:
        return await self.created("/requirements", self.client, {
            "title": "Bank feeds", "description": "Daily", "acceptance_criteria": ["All accounts"]})

    async def deliverable(self, delivered: bool = False) -> str:
        deliverable_id = await self.created("/deliverables", self.client, {
            "title": "Close pack", "expectations": "Reconciled", "due_on": "2030-01-31"})
        if delivered:
            await self.a("POST", f"/deliverables/{deliverable_id}/delivery", self.provider, {"note": "done"})
        return deliverable_id

    async def contact(self) -> str:
        return await self.created("/contacts", self.provider, {
            "role": "delivery lead", "name": "Ann", "email": "ann@provider.test", "escalation_level": 1})

    async def procedure(self) -> tuple[str, str]:
        step_id = str(uuid.uuid4())
        procedure_id = await self.created("/procedures", self.client, {
            "name": "Month-end close", "steps": [{"step_id": step_id, "title": "Reconcile", "owner_side": "provider"}]})
        return procedure_id, step_id

    async def breakdown(self) -> str:
        procedure_id, step_id = await self.procedure()
        return await self.created(f"/procedures/{procedure_id}/breakdowns", self.client, {
            "step_id": step_id, "what_broke": "Late statements", "impact": "Close slips"})

    async def scope_change(self, assessed: bool = False) -> str:
        change_id = await self.created("/scope-changes", self.client, {
            "title": "Payroll", "what": "Add payroll", "why": "Growth"})
        if assessed:
            await self.a("POST", f"/scope-changes/{change_id}/assessment", self.provider, ASSESSMENT)
        return change_id

    async def disagreement(self, proposed_by: Party | None = None) -> str:
        disagreement_id = await self.created("/disagreements", self.client, {
            "topic": "Scope", "description": "Is payroll in?"})
        if proposed_by is not None:
            await self.a("POST", f"/disagreements/{disagreement_id}/resolution-proposals", proposed_by,
                         {"resolution": "It is not"})
        return disagreement_id

    async def query(self, status: str = "open") -> str:
        """A query the client asked the provider (the client is its asker, the provider its responder)."""
        raised = await self.ok("queries", "POST", f"/agreements/{self.agreement_id}/queries", self.client,
                               {"subject": "VAT", "body": "Which rate?"})
        query_id = str(raised["query_id"])
        if status == "awaiting_information":
            await self.ok("queries", "POST", f"/queries/{query_id}/information-requests", self.provider,
                          {"reason": "Which country?"})
        if status == "answered":
            await self.ok("queries", "POST", f"/queries/{query_id}/answer", self.provider, {"answer": "19 %"})
        return query_id

    async def kpi(self) -> str:
        created = await self.ok("kpi", "POST", f"/agreements/{self.agreement_id}/kpis", self.client, kpi_definition())
        return str(created["id"])

    async def report(self) -> str:
        created = await self.ok("kpi", "POST", f"/agreements/{self.agreement_id}/reports", self.provider,
                                report_body())
        return str(created["id"])

    async def escalation(self) -> str:
        """A new open escalation: the packaged rules escalate every requested scope change."""
        known = await self.escalation_ids()
        await self.scope_change()

        async def started() -> str | None:
            new = (await self.escalation_ids()) - known
            return new.pop() if new else None

        found = await eventually(started)
        assert found is not None
        return found

    async def escalation_ids(self) -> set[str]:
        rows = await self.runtimes["notifier"].pool.fetch("SELECT escalation_id FROM escalations")
        return {str(r["escalation_id"]) for r in rows}


ASSESSMENT = {"effort_hours": 10, "cost_minor_units": 100_000, "currency": "EUR", "timeline_impact_days": 5}


def kpi_definition() -> dict[str, Any]:
    """A KPI of a name of its own (names are unique per agreement)."""
    return {"name": f"On-time close {uuid.uuid4().hex[:8]}", "unit": "%", "direction": "higher_is_better",
            "target": 95, "warning_threshold": 90, "breach_threshold": 80, "cadence_seconds": 86_400}


def report_body() -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"title": "March", "period_start": (now - timedelta(days=31)).isoformat(), "period_end": now.isoformat(),
            "narrative": "On time"}


def value_body() -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"value": 96, "period_start": (now - timedelta(days=1)).isoformat(), "period_end": now.isoformat()}


async def _start(stack: contextlib.AsyncExitStack, definition: ServiceDefinition,
                 settings: ServiceSettings, name: Service) -> tuple[ServiceRuntime, httpx.AsyncClient]:
    runtime = ServiceRuntime(definition, settings)
    app = runtime.app()
    await stack.enter_async_context(app.router.lifespan_context(app))
    runtime.http = app  # type: ignore[attr-defined]
    api = await stack.enter_async_context(
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{name}"))
    return runtime, api


@contextlib.asynccontextmanager
async def running_world(database_url: str, amqp_url: str) -> AsyncIterator[World]:
    """The four services (own schemas, one exchange of their own), the parties, and an active fixture
    agreement known to every service's replica. The consumers start before any event is published."""
    suffix = uuid.uuid4().hex[:10]
    base = ServiceSettings(service_name="agreements", database_url=database_url, database_schema=f"am_{suffix}",
                           amqp_url=amqp_url, exchange=f"accord.test.{RUN_ID}.{suffix}",
                           queue_prefix=f"test.{RUN_ID}.{suffix}",
                           database_pool_size=4)  # four services on a server others test on too
    notifier_settings = NotifierSettings(**{
        **base.model_dump(), "service_name": "notifier", "database_schema": f"nm_{suffix}",
        "notifier_ack_key": ACK_KEY, "notifier_ack_base_url": "http://notifier",
        "notifier_smtp_port": _free_port(), "notifier_poll_seconds": 0.2})
    plan: list[tuple[Service, ServiceDefinition, ServiceSettings]] = [
        ("queries", QUERIES, base.model_copy(update={"service_name": "queries", "database_schema": f"qm_{suffix}"})),
        ("kpi", KPI, base.model_copy(update={"service_name": "kpi", "database_schema": f"km_{suffix}"})),
        ("notifier", notifier_definition(notifier_settings), notifier_settings),
        ("agreements", AGREEMENTS, base),
    ]
    runtimes: dict[Service, ServiceRuntime] = {}
    apis: dict[Service, httpx.AsyncClient] = {}
    try:
        async with contextlib.AsyncExitStack() as stack:
            for name, definition, settings in plan:
                runtimes[name], apis[name] = await _start(stack, definition, settings, name)
            agreements = runtimes["agreements"]
            client, provider, outsider, partner = [
                await register_party(agreements, name) for name in ("client", "provider", "outsider", "partner")]
            world = World(runtimes, apis, client, provider, outsider)
            other = await world.ok("agreements", "POST", "/agreements", outsider, {
                "title": "Another agreement", "client_organisation_id": str(outsider.organisation_id),
                "provider_organisation_id": str(partner.organisation_id)})
            world.other_agreement_id = str(other["agreement_id"])
            world.agreement_id = await world.agreement("draft")
            await world.a("POST", "/sla-policies", provider, {"policy": SLA_POLICY})
            await world.a("POST", "/proposal", client)
            for party in (client, provider):
                await world.a("POST", "/acceptance", party)
            fixture = uuid.UUID(world.agreement_id)
            for replica in (runtimes["queries"], runtimes["kpi"], runtimes["notifier"]):
                await eventually(partial(_replicated, replica, fixture))
            await eventually(lambda: _shown(world))  # the agreements read model too
            queries_pool = runtimes["queries"].pool
            await eventually(lambda: queries_pool.fetchval(
                "SELECT count(*) > 0 FROM sla_policy_versions WHERE agreement_id = $1", fixture))
            yield world
    finally:
        for runtime in runtimes.values():
            await delete_broker_objects(amqp_url, runtime)


async def _replicated(runtime: ServiceRuntime, agreement_id: uuid.UUID) -> bool:
    """The service knows the four parties' tokens and the fixture agreement as active."""
    tokens = await runtime.pool.fetchval("SELECT count(*) FROM api_tokens")
    status = await runtime.pool.fetchval("SELECT status FROM agreement_parties WHERE agreement_id = $1",
                                         agreement_id)
    return bool(tokens == 4 and status == "active")


async def _shown(world: World) -> bool:
    response = await world.call("agreements", "GET", f"/agreements/{world.agreement_id}", world.client)
    return response.status_code == 200 and response.json()["status"] == "active"


# --- the table -------------------------------------------------------------------------------------

@dataclass
class Call:
    """A valid request of a route for the fixture agreement: its path parameters, body and query."""

    path: dict[str, str] = field(default_factory=dict)
    body: Any = None
    query: dict[str, Any] | None = None


Prepare = Callable[[World], Awaitable[Call]]


def body(value: Any = None, **query: Any) -> Prepare:
    """A route of the fixture agreement itself, with a fixed body (a callable: built per call)."""
    async def prepare(w: World) -> Call:
        return Call(body=value() if callable(value) else value, query=query or None)

    return prepare


@dataclass(frozen=True)
class Route:
    service: Service
    method: str
    path: str
    side: Side  # who may call it: one side only, or either party
    prepare: Prepare
    ok: int = 200
    outsider: int = 403  # a party to another agreement
    note: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return self.service, self.method, self.path


def _lifecycle(status: str, reason: dict[str, Any] | None) -> Prepare:
    async def prepare(w: World) -> Call:
        return Call({"agreement_id": await w.agreement(status)}, reason)

    return prepare


def _part(name: str, make: Callable[[World], Awaitable[str]], value: Any = None) -> Prepare:
    async def prepare(w: World) -> Call:
        return Call({name: await make(w)}, value() if callable(value) else value)

    return prepare


async def _draft_body(w: World) -> Call:
    return Call(body={"title": "Another", "client_organisation_id": str(w.client.organisation_id),
                      "provider_organisation_id": str(w.provider.organisation_id)})


async def _breakdown_on_new_procedure(w: World) -> Call:
    procedure_id, step_id = await w.procedure()
    return Call({"procedure_id": procedure_id}, {"step_id": step_id, "what_broke": "Late", "impact": "Slips"})


async def _versions_one_and_two(w: World) -> Call:
    await w.goal()  # a change of the active agreement: version 2 (at least) exists
    return Call(query={"from": 1, "to": 2})


async def _health_recorded(w: World) -> Call:
    """Health is scored once a relationship event arrives: a check-in, then wait for the score."""
    await w.a("POST", "/checkins", w.client, CHECKIN)

    async def scored() -> bool:
        response = await w.call("kpi", "GET", f"/agreements/{w.agreement_id}/health", w.client)
        return response.status_code == 200

    await eventually(scored)
    return Call()


async def _recorded_query(w: World) -> Call:
    """A query the queries service's read model already shows."""
    query_id = await w.query()

    async def shown() -> bool:
        return (await w.call("queries", "GET", f"/queries/{query_id}", w.client)).status_code == 200

    await eventually(shown)
    return Call({"query_id": query_id})


CHECKIN = {"held_on": "2026-03-31", "client_score": 8, "provider_score": 8, "client_sentiment": "positive",
           "provider_sentiment": "positive"}
STEP = {"title": "Reconcile", "owner_side": "provider"}
A = "/agreements/{agreement_id}"

ROUTES: list[Route] = [
    # agreements: not about one agreement
    Route("agreements", "GET", "/me", "either", body(), outsider=200,
          note="the caller's own identity: any valid token"),
    Route("agreements", "GET", "/agreements", "either", body(), outsider=200,
          note="lists the caller's own agreements only (asserted: not the fixture agreement)"),
    Route("agreements", "POST", "/agreements", "either", _draft_body, ok=201,
          note="the outsider names two other organisations: 403 (NotAParty)"),
    # agreements: lifecycle, each on a fresh agreement in the state it needs
    Route("agreements", "POST", f"{A}/proposal", "either", _lifecycle("draft", None)),
    Route("agreements", "POST", f"{A}/acceptance", "either", _lifecycle("proposed", None)),
    Route("agreements", "POST", f"{A}/suspension", "either", _lifecycle("active", {"reason": "audit"})),
    Route("agreements", "POST", f"{A}/resumption", "either", _lifecycle("suspended", {"reason": "audit done"})),
    Route("agreements", "POST", f"{A}/termination", "either", _lifecycle("active", {"reason": "moving on"})),
    Route("agreements", "POST", f"{A}/renewal", "either", _lifecycle("active", {"reason": "another year"})),
    Route("agreements", "GET", A, "either", body()),
    Route("agreements", "GET", f"{A}/diff", "either", _versions_one_and_two),
    Route("agreements", "GET", f"{A}/document", "either", body()),
    Route("agreements", "GET", f"{A}/history", "either", body()),
    # goals and requirements
    Route("agreements", "POST", f"{A}/goals", "client", body({"outcome": "Faster close", "success_measure": "Days"}),
          ok=201),
    Route("agreements", "POST", f"{A}/goals/{{goal_id}}/revisions", "client",
          _part("goal_id", World.goal, {"outcome": "Faster close", "success_measure": "4 days"})),
    Route("agreements", "POST", f"{A}/goals/{{goal_id}}/acknowledgement", "provider",
          _part("goal_id", World.goal, {"understanding": "Understood"})),
    Route("agreements", "POST", f"{A}/goals/{{goal_id}}/clarification-requests", "provider",
          _part("goal_id", World.goal, {"question": "Which entities?"})),
    Route("agreements", "POST", f"{A}/requirements", "client",
          body({"title": "Feeds", "description": "Daily", "acceptance_criteria": ["All"]}), ok=201),
    Route("agreements", "POST", f"{A}/requirements/{{requirement_id}}/clarification-requests", "provider",
          _part("requirement_id", World.requirement, {"question": "Which banks?"}), ok=201),
    Route("agreements", "POST", f"{A}/requirements/{{requirement_id}}/acceptance", "provider",
          _part("requirement_id", World.requirement, {})),
    # deliverables, communication, check-ins
    Route("agreements", "POST", f"{A}/deliverables", "either",
          body({"title": "Pack", "expectations": "Reconciled", "due_on": "2030-01-31"}), ok=201),
    Route("agreements", "POST", f"{A}/deliverables/{{deliverable_id}}/delivery", "provider",
          _part("deliverable_id", World.deliverable, {"note": "done"})),
    Route("agreements", "POST", f"{A}/deliverables/{{deliverable_id}}/acceptance", "client",
          _part("deliverable_id", lambda w: w.deliverable(delivered=True))),
    Route("agreements", "POST", f"{A}/deliverables/{{deliverable_id}}/rejection", "client",
          _part("deliverable_id", lambda w: w.deliverable(delivered=True), {"reason": "Incomplete"})),
    Route("agreements", "PUT", f"{A}/communication-plan", "either",
          body({"status_update_every_seconds": 604_800, "channels": ["email"]})),
    Route("agreements", "POST", f"{A}/status-updates", "provider", body({"summary": "On track"}), ok=201),
    Route("agreements", "PUT", f"{A}/checkin-plan", "either", body({"every_days": 30})),
    Route("agreements", "POST", f"{A}/checkins", "either", body(CHECKIN), ok=201),
    # people and SLA policy
    Route("agreements", "POST", f"{A}/contacts", "either",
          body({"role": "lead", "name": "Bo", "email": "bo@example.test"}), ok=201),
    Route("agreements", "GET", f"{A}/contacts", "either", body()),
    Route("agreements", "POST", f"{A}/contacts/{{contact_id}}/replacement", "provider",
          _part("contact_id", World.contact, {"name": "Cy", "email": "cy@provider.test", "handover_notes": "All"}),
          ok=201, note="a contact of the provider: only its own side replaces it"),
    Route("agreements", "POST", f"{A}/contacts/{{contact_id}}/removal", "provider",
          _part("contact_id", World.contact, {}), note="a contact of the provider"),
    Route("agreements", "GET", f"{A}/escalation-matrix", "either", body()),
    Route("agreements", "POST", f"{A}/sla-policies", "either", body({"policy": SLA_POLICY}), ok=201),
    # procedures, scope changes, disagreements
    Route("agreements", "POST", f"{A}/procedures", "either", body({"name": "Close", "steps": [STEP]}), ok=201),
    Route("agreements", "PUT", f"{A}/procedures/{{procedure_id}}", "either",
          _part("procedure_id", lambda w: _first(w.procedure()), {"name": "Close v2", "steps": [STEP]})),
    Route("agreements", "POST", f"{A}/procedures/{{procedure_id}}/breakdowns", "either",
          _breakdown_on_new_procedure, ok=201),
    Route("agreements", "POST", f"{A}/breakdowns/{{breakdown_id}}/resolution", "either",
          _part("breakdown_id", World.breakdown, {"fix": "Bank feed"})),
    Route("agreements", "GET", f"{A}/breakdowns", "either", body()),
    Route("agreements", "POST", f"{A}/scope-changes", "either",
          body({"title": "Payroll", "what": "Add payroll", "why": "Growth"}), ok=201),
    Route("agreements", "GET", f"{A}/scope-changes", "either", body()),
    Route("agreements", "POST", f"{A}/scope-changes/{{change_id}}/assessment", "provider",
          _part("change_id", World.scope_change, ASSESSMENT)),
    Route("agreements", "POST", f"{A}/scope-changes/{{change_id}}/approval", "client",
          _part("change_id", lambda w: w.scope_change(assessed=True))),
    Route("agreements", "POST", f"{A}/scope-changes/{{change_id}}/rejection", "client",
          _part("change_id", World.scope_change, {"reason": "Not now"})),
    Route("agreements", "POST", f"{A}/disagreements", "either", body({"topic": "Scope", "description": "?"}), ok=201),
    Route("agreements", "POST", f"{A}/disagreements/{{disagreement_id}}/resolution-proposals", "either",
          _part("disagreement_id", World.disagreement, {"resolution": "Not in scope"})),
    Route("agreements", "POST", f"{A}/disagreements/{{disagreement_id}}/resolution", "provider",
          _part("disagreement_id", lambda w: w.disagreement(proposed_by=w.client)),
          note="the client proposed the resolution: only the other side (provider) confirms it"),
    # queries: every query here is the client's (asker) to the provider (responder)
    Route("queries", "POST", f"{A}/queries", "either", body({"subject": "VAT", "body": "Which rate?"}), ok=201),
    Route("queries", "GET", f"{A}/queries", "either", body()),
    Route("queries", "GET", f"{A}/queries/at-risk", "either", body()),
    Route("queries", "GET", f"{A}/queries/overdue", "either", body()),
    Route("queries", "GET", f"{A}/query-stats", "either", body()),
    Route("queries", "POST", f"{A}/sla-what-if", "either", body({"policy": SLA_POLICY})),
    Route("queries", "GET", "/queries/{query_id}", "either", _recorded_query),
    Route("queries", "POST", "/queries/{query_id}/comments", "either",
          _part("query_id", World.query, {"body": "Any news?"}), ok=201),
    Route("queries", "POST", "/queries/{query_id}/information-requests", "provider",
          _part("query_id", World.query, {"reason": "Which country?"}), ok=201),
    Route("queries", "POST", "/queries/{query_id}/information", "client",
          _part("query_id", lambda w: w.query("awaiting_information"), {"body": "Germany"})),
    Route("queries", "POST", "/queries/{query_id}/answer", "provider",
          _part("query_id", World.query, {"answer": "19 %"})),
    Route("queries", "POST", "/queries/{query_id}/reopening", "client",
          _part("query_id", lambda w: w.query("answered"), {"reason": "And food?"})),
    Route("queries", "POST", "/queries/{query_id}/closure", "client",
          _part("query_id", lambda w: w.query("answered"))),
    Route("queries", "POST", "/queries/{query_id}/withdrawal", "client", _part("query_id", World.query, {})),
    # kpi
    Route("kpi", "POST", f"{A}/kpis", "either", body(kpi_definition), ok=201),
    Route("kpi", "GET", f"{A}/kpis", "either", body()),
    Route("kpi", "POST", f"{A}/kpis/{{kpi_id}}/values", "provider", _part("kpi_id", World.kpi, value_body), ok=201),
    Route("kpi", "GET", f"{A}/kpis/{{kpi_id}}/series", "either", _part("kpi_id", World.kpi)),
    Route("kpi", "POST", f"{A}/reports", "provider", body(report_body), ok=201),
    Route("kpi", "GET", f"{A}/reports", "either", body()),
    Route("kpi", "POST", f"{A}/reports/{{report_id}}/acknowledgement", "client",
          _part("report_id", World.report, {"comments": "Thanks"})),
    Route("kpi", "GET", f"{A}/relationship-kpis", "either", body()),
    Route("kpi", "GET", f"{A}/health", "either", _health_recorded),
    Route("kpi", "GET", f"{A}/health/history", "either", body()),
    Route("kpi", "PUT", f"{A}/health/weights", "either",
          body({"weights": [{"component": "kpi_attainment", "weight": 1}]})),
    # notifier
    Route("notifier", "GET", f"{A}/escalations", "either", body()),
    Route("notifier", "GET", "/escalations/{escalation_id}", "either", _part("escalation_id", World.escalation)),
    Route("notifier", "POST", "/escalations/{escalation_id}/acknowledgement", "either",
          _part("escalation_id", World.escalation), note="either party takes the matter on"),
]


async def _listed_agreements(world: World, party: Party) -> set[str]:
    response = await world.call("agreements", "GET", "/agreements", party)
    return {item["agreement_id"] for item in response.json()["items"]}


async def _first(pair: Awaitable[tuple[str, str]]) -> str:
    return (await pair)[0]


def openapi_operations(runtimes: dict[Service, ServiceRuntime]) -> set[tuple[str, str, str]]:
    """Every (service, method, path) the running apps document, less the operational ones."""
    found: set[tuple[str, str, str]] = set()
    for name, runtime in runtimes.items():
        app = runtime.http  # type: ignore[attr-defined]
        for path, operations in app.openapi()["paths"].items():
            for method in operations:
                if (method.upper(), path) not in OPERATIONAL:
                    found.add((name, method.upper(), path))
    return found


# --- the tests -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
async def world(database_url: str, amqp_url: str) -> AsyncIterator[World]:
    """One world for the module: every row prepares targets of its own, so the tests share it safely."""
    async with running_world(database_url, amqp_url) as started:
        yield started


@pytest.mark.servers
async def test_the_matrix_covers_every_route(world: World) -> None:
    documented = openapi_operations(world.runtimes)
    table = Counter(route.key for route in ROUTES)
    assert [key for key, n in table.items() if n > 1] == [], "a route has two rows"
    missing = documented - set(table) - {SIGNED_LINK}
    assert not missing, f"routes without a row in the authorization matrix: {sorted(missing)}"
    stale = set(table) - documented
    assert not stale, f"rows for routes that no longer exist: {sorted(stale)}"
    assert SIGNED_LINK in documented


@pytest.mark.servers
async def test_every_route_answers_each_caller_as_designed(world: World) -> None:
    """Per route: no token, an outsider, the wrong side (one-side-only routes), then the right side —
    every mismatch is collected and reported at once."""
    mismatches: list[str] = []
    answered = Counter[str]()

    def expect(route: Route, caller: str, response: httpx.Response, wanted: int, reason: str = "") -> None:
        answered[caller] += 1
        if response.status_code != wanted or (reason and reason not in response.text):
            because = f" with {reason!r}" if reason else ""
            mismatches.append(f"{route.service} {route.method} {route.path} as {caller}: wanted {wanted}{because},"
                              f" got {response.status_code} {response.text[:200]}")

    for route in ROUTES:
        call = await route.prepare(world)
        path = route.path.format(**{"agreement_id": world.agreement_id, **call.path})

        async def by(party: Party | None, route: Route = route, call: Call = call, path: str = path) -> httpx.Response:
            return await world.call(route.service, route.method, path, party, call.body, call.query)

        expect(route, "no token", await by(None), 401)
        expect(route, "outsider", await by(world.outsider), route.outsider)
        if route.side != "either":
            wrong = world.provider if route.side == "client" else world.client
            expect(route, "wrong side", await by(wrong), 403, reason="only the")  # "only the provider …"
        right = world.party(route.side if route.side != "either" else "client")
        response = await by(right)
        expect(route, "right side", response, route.ok)
        if route.key == ("agreements", "GET", "/agreements"):
            listed = await eventually(lambda: _listed_agreements(world, world.outsider))
            if listed != {world.other_agreement_id}:
                mismatches.append(f"GET /agreements as outsider lists {listed}, not only its own agreement")
    assert not mismatches, f"{len(mismatches)} of {sum(answered.values())} calls answered otherwise:\n" + \
        "\n".join(mismatches)
    assert answered["no token"] == answered["outsider"] == answered["right side"] == len(ROUTES)


@pytest.mark.servers
async def test_either_side_routes_answer_the_provider_too(world: World) -> None:
    """`either` means both: the provider gets the same 2xx the client got (reads and shared commands)."""
    mismatches = []
    for route in ROUTES:
        if route.side != "either" or route.key == ("agreements", "POST", "/agreements"):
            continue
        call = await route.prepare(world)
        path = route.path.format(**{"agreement_id": world.agreement_id, **call.path})
        response = await world.call(route.service, route.method, path, world.provider, call.body, call.query)
        if response.status_code != route.ok:
            mismatches.append(f"{route.service} {route.method} {route.path}: {response.status_code} {response.text}")
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.servers
async def test_unknown_ids_are_404_not_403_or_500(world: World) -> None:
    """An agreement (or query, escalation) that does not exist is a 404 for any authenticated caller."""
    unknown = str(uuid.uuid4())
    for service, path in (("agreements", f"/agreements/{unknown}"), ("queries", f"/queries/{unknown}"),
                          ("queries", f"/agreements/{unknown}/queries"), ("kpi", f"/agreements/{unknown}/kpis"),
                          ("notifier", f"/escalations/{unknown}"),
                          ("notifier", f"/agreements/{unknown}/escalations")):
        response = await world.call(service, "GET", path, world.client)  # type: ignore[arg-type]
        assert response.status_code == 404, (service, path, response.status_code, response.text)


@pytest.mark.servers
async def test_the_signed_acknowledge_link_is_its_own_credential(world: World) -> None:
    """`GET /escalations/{id}/ack?token=…` takes no bearer token: a valid signature acknowledges; a
    tampered, foreign or expired one is 403 with the reason; a repeat is 409."""
    escalation_id = uuid.UUID(await world.escalation())
    other_escalation = uuid.UUID(await world.escalation())
    signer = AckSigner(ACK_KEY.encode(), ttl_seconds=3600)
    valid = signer.token(escalation_id, "ann")
    mac = valid.rsplit(".", 1)[1]
    tampered_mac = valid[: -len(mac)] + ("0" if mac[0] != "0" else "1") + mac[1:]
    cases = {
        "tampered signature": (tampered_mac, "invalid acknowledge token"),
        "another recipient": (valid.replace(".ann.", ".bob."), "invalid acknowledge token"),
        "another escalation's link": (signer.token(other_escalation, "ann"), "invalid acknowledge token"),
        "another key": (AckSigner(b"some-other-key-0123456789").token(escalation_id, "ann"),
                        "invalid acknowledge token"),
        "expired": (signer.token(escalation_id, "ann", now=time.time() - 7200), "expired"),
        "malformed": ("not-a-token", "malformed"),
    }
    api = world.apis["notifier"]
    for case, (token, reason) in cases.items():
        response = await api.get(f"/escalations/{escalation_id}/ack", params={"token": token})
        assert response.status_code == 403, (case, response.status_code, response.text)
        assert reason in response.json()["detail"], (case, response.text)
    missing = await api.get(f"/escalations/{escalation_id}/ack")
    assert missing.status_code == 422
    bearer_only = await api.get(f"/escalations/{escalation_id}/ack", headers=world.client.headers)
    assert bearer_only.status_code == 422  # a bearer token is no substitute for the signature
    accepted = await api.get(f"/escalations/{escalation_id}/ack", params={"token": valid})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "acknowledged"
    again = await api.get(f"/escalations/{escalation_id}/ack", params={"token": valid})
    assert again.status_code == 409 and "already acknowledged" in again.json()["detail"]


# --- tokens never logged ---------------------------------------------------------------------------

@contextlib.contextmanager
def json_logs_captured() -> Any:
    """The services' structlog JSON lines (as `configure_logging` sets them up, at DEBUG) and the stdlib
    log records (asyncpg, aio-pika, …), into one buffer; the previous structlog configuration is restored
    afterwards."""
    previous = structlog.get_config()
    buffer = io.StringIO()
    configure_logging("DEBUG", json=True)
    # the same processors, but into the buffer and without caching loggers beyond this test
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(buffer), cache_logger_on_first_use=False)
    handler = logging.StreamHandler(buffer)
    handler.setLevel(logging.DEBUG)
    # not the test's own HTTP client: it logs the URLs it requests, the signed links among them
    handler.addFilter(lambda record: not record.name.startswith(("httpx", "httpcore")))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        structlog.reset_defaults()
        structlog.configure(**previous)


@pytest.mark.servers
async def test_tokens_never_reach_the_logs(world: World) -> None:
    escalation_id = uuid.UUID(await world.escalation())
    link_token = AckSigner(ACK_KEY.encode()).token(escalation_id, "ann")
    revoked_looking = "acc_" + "x" * 43  # an invalid token is a secret too (a typo of a real one)
    with json_logs_captured() as logs:
        for party in (world.client, world.provider, world.outsider):
            for service in SERVICES:
                await world.call(service, "GET", f"/agreements/{world.agreement_id}/" + {
                    "agreements": "contacts", "queries": "queries", "kpi": "kpis", "notifier": "escalations"}[service],
                    party)
        await world.call("agreements", "POST", f"/agreements/{world.agreement_id}/goals", world.provider,
                         {"outcome": "x", "success_measure": "y"})  # refused: 403, logged
        await world.apis["agreements"].get("/me", headers={"Authorization": f"Bearer {revoked_looking}"})
        await world.apis["notifier"].get(f"/escalations/{escalation_id}/ack", params={"token": link_token})
        await world.apis["notifier"].get(f"/escalations/{escalation_id}/ack", params={"token": link_token + "0"})
        await world.escalation()  # the bus, the consumers and the delivery worker log too
    text = logs.getvalue()
    lines = [line for line in text.splitlines() if line.startswith("{")]
    assert len(lines) > 10, text[:2000]  # the capture works: JSON lines of the requests above
    assert any(json.loads(line).get("event") == "http request" for line in lines)
    secrets = {"client token": world.client.token, "provider token": world.provider.token,
               "outsider token": world.outsider.token, "invalid token": revoked_looking,
               "acknowledge link token": link_token, "acknowledge link signature": link_token.rsplit(".", 1)[1]}
    leaked = [f"{name}: {line}" for name, secret in secrets.items() for line in text.splitlines() if secret in line]
    assert not leaked, "in the logs:\n" + "\n".join(leaked)


# --- secrets only from the environment -------------------------------------------------------------

#: Allowed in any tracked file: RabbitMQ's built-in account, which only connects from localhost (the
#: documented default AMQP URL).
ALLOWED_SECRETS = {"guest:guest"}
SECRET_PATTERNS = {
    # a secret's default in `${VAR:-default}` (compose): only the allowlisted dev-only ones below
    "default of a secret variable": re.compile(r"\$\{[A-Z_]*(?:PASSWORD|SECRET|KEY|TOKEN)[A-Z_]*:?-([^}]*)\}"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "Slack webhook": re.compile(r"hooks\.slack\.com/services/[A-Za-z0-9/]+"),
    "Accord API token": re.compile(r"\bacc_[A-Za-z0-9_-]{40,}"),
    "password in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:([^@\s/'\"]+)@"),
    "assigned secret": re.compile(
        r"(?i)\b[a-z_]*(?:password|passwd|secret|api_?key|token|ack_key)[a-z_]*\s*[:=]\s*['\"]([^'\"\s$]{8,})['\"]"),
}
#: A long run of base64 or hex characters with high entropy: a key or token pasted into a file.
BLOB = re.compile(r"[A-Za-z0-9+/_-]{32,}={0,2}")


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _looks_random(blob: str) -> bool:
    if re.fullmatch(r"[0-9a-f]+", blob):
        return len(blob) >= 40 and _entropy(blob) > 3.5  # hex digests, keys
    classes = sum(bool(re.search(p, blob)) for p in ("[a-z]", "[A-Z]", "[0-9]"))
    return classes == 3 and _entropy(blob) > 4.5


def _tracked_files() -> list[Path]:
    root = Path(__file__).resolve().parents[2]
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True, timeout=30)
    return [root / name for name in listed.stdout.decode().split("\0") if name]


#: (file, value) pairs that look secret and are not. docker-compose.yml's dev-only defaults (README: "for
#: local development only: set your own in the environment or a `.env` file"), and the tests' own keys.
COMPOSE_DEV_DEFAULTS = ("accord-dev-only", "dev-only-webhook-secret", "dev-only-ack-key")
ALLOWED_IN_FILE = {
    *((name, value) for name in ("docker-compose.yml", "README.md") for value in COMPOSE_DEV_DEFAULTS),
    ("tests/e2e/test_notifier.py", "test-webhook-secret"),
    ("tests/e2e/test_notifier.py", "test-ack-key-0123456789"),
    ("tests/e2e/test_authorization_matrix.py", "matrix-test-ack-key-0123456789"),
}


def test_tracked_files_hold_no_secrets() -> None:
    """Secrets come from the environment: no tracked file holds a key, token or password, except the
    documented dev-only compose defaults and the tests' own throwaway keys."""
    root = Path(__file__).resolve().parents[2]
    findings = []
    files = _tracked_files()
    assert len(files) > 50
    for path in files:
        relative = path.relative_to(root).as_posix()
        if relative.startswith(("contracts/schemas/", "deploy/")) or not path.is_file():
            continue  # generated JSON Schema; vendored Compose Specification
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # binary
        for number, line in enumerate(text.splitlines(), 1):
            for name, pattern in SECRET_PATTERNS.items():
                for match in pattern.finditer(line):
                    value = match.group(match.lastindex or 0)
                    if _allowed(relative, match.group(0), value, line):
                        continue
                    if relative.startswith("tests/") and name == "assigned secret" and not _looks_random(value):
                        continue  # a test's made-up credential ("acc_not-a-token"); a pasted real one is random
                    findings.append(f"{relative}:{number}: {name}: {line.strip()[:160]}")
            for match in BLOB.finditer(line):
                if _looks_random(match.group(0)) and not _allowed(relative, match.group(0), match.group(0), line):
                    findings.append(f"{relative}:{number}: high-entropy string: {match.group(0)[:60]}")
    assert not findings, "possible secrets in tracked files:\n" + "\n".join(findings)


def _allowed(relative: str, whole: str, value: str, line: str) -> bool:
    if any(allowed in whole for allowed in ALLOWED_SECRETS) or (relative, value) in ALLOWED_IN_FILE:
        return True
    if any((relative, allowed) in ALLOWED_IN_FILE and allowed in value for allowed in COMPOSE_DEV_DEFAULTS):
        return True  # e.g. `accord:accord-dev-only` in a URL
    # a reference to the environment or a placeholder, not a value: ${VAR:-…}, os.environ, <token>, …
    return bool(re.search(r"\$\{?[A-Z_]+|environ|getenv|<[a-z_ -]+>|…|\.\.\.", value))
