"""The whole shared agreement over HTTP against the real servers: every part's commands with per-side
authorization, amendments as versions, time travel, diffs, the Markdown document, the read models,
the status-update timer and the clarification round trip over the bus."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import aio_pika
import httpx
import pytest

from accord_runtime.service import ServiceRuntime
from contracts import CloudEvent
from contracts.queries import QueryAnswered
from tests.e2e.conftest import Party
from tests.support import eventually, rows_of

pytestmark = pytest.mark.servers

SLA_POLICY = {
    "calendar": {"timezone": "Europe/Berlin", "holidays": ["2026-12-25"],
                 "working_periods": [{"weekday": d, "start": "09:00:00", "end": "17:00:00"} for d in range(5)]},
    "targets": [{"priority": "normal", "first_response_minutes": 240, "resolution_minutes": 2400},
                {"priority": "urgent", "first_response_minutes": 30, "resolution_minutes": 240}],
}


class Session:
    """Commands on one agreement by its two parties, asserting the expected status."""

    def __init__(self, api: httpx.AsyncClient, client: Party, provider: Party) -> None:
        self.api, self.client, self.provider = api, client, provider
        self.id = ""

    async def call(self, method: str, path: str, by: Party, body: dict[str, Any] | None = None,
                   expect: int = 200) -> dict[str, Any]:
        url = f"/agreements/{self.id}{path}" if self.id else path
        response = await self.api.request(method, url, headers=by.headers, json=body)
        assert response.status_code == expect, (method, url, response.status_code, response.text)
        result: dict[str, Any] = response.json()
        return result

    async def draft(self) -> None:
        body = await self.call("POST", "/agreements", self.client, {
            "title": "Outsourced accounting", "summary": "Monthly close and reporting",
            "client_organisation_id": str(self.client.organisation_id),
            "provider_organisation_id": str(self.provider.organisation_id)}, expect=201)
        self.id = body["agreement_id"]

    async def activate(self) -> None:
        await self.call("POST", "/proposal", self.client)
        await self.call("POST", "/acceptance", self.client)
        assert (await self.call("POST", "/acceptance", self.provider))["status"] == "active"

    async def view(self, **params: Any) -> dict[str, Any]:
        response = await self.api.get(f"/agreements/{self.id}", headers=self.client.headers, params=params)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


@pytest.fixture
def session(api: httpx.AsyncClient, client_party: Party, provider_party: Party) -> Session:
    return Session(api, client_party, provider_party)


async def test_the_whole_agreement_over_http(session: Session, stranger: Party) -> None:
    s, client, provider = session, session.client, session.provider
    await s.draft()

    # goals: client states, provider acknowledges; the other side is refused with a reason
    refused = await s.call("POST", "/goals", provider, {"outcome": "o", "success_measure": "m"}, expect=403)
    assert refused["detail"] == "only the client states goals"
    goal = (await s.call("POST", "/goals", client, {
        "outcome": "Close the books within 5 business days", "success_measure": "close date <= BD5",
        "constraints": ["keep our ERP"]}, expect=201))["created_id"]
    assert (await s.call("POST", f"/goals/{goal}/acknowledgement", client, {"understanding": "u"},
                         expect=403))["detail"] == "only the provider acknowledges goals"
    await s.call("POST", f"/goals/{goal}/acknowledgement", provider, {"understanding": "BD5 close", "revision": 1})
    assert "already acknowledged" in (await s.call(
        "POST", f"/goals/{goal}/acknowledgement", provider, {"understanding": "again"}, expect=409))["detail"]
    await s.call("POST", f"/goals/{uuid.uuid4()}/acknowledgement", provider, {"understanding": "u"}, expect=404)
    await s.call("POST", "/goals", stranger, {"outcome": "o", "success_measure": "m"}, expect=403)

    # requirements, deliverables, people, plans and procedures, all while drafting (no versions yet)
    requirement = (await s.call("POST", "/requirements", client, {
        "title": "Monthly P&L", "description": "Per cost centre", "acceptance_criteria": ["ties to the ledger"],
        "attachments": ["https://files.test/pl-template.xlsx"]}, expect=201))["created_id"]
    await s.call("POST", f"/requirements/{requirement}/acceptance", provider)
    deliverable = (await s.call("POST", "/deliverables", provider, {
        "title": "March close pack", "expectations": "P&L, balance sheet, notes", "due_on": "2026-04-07",
        "requirement_ids": [requirement]}, expect=201))["created_id"]
    lead = (await s.call("POST", "/contacts", provider, {
        "role": "delivery lead", "name": "Ann", "email": "ann@provider.test", "escalation_level": 1}, expect=201))
    await s.call("POST", "/contacts", client, {
        "role": "finance director", "name": "Bo", "email": "bo@client.test", "escalation_level": 2}, expect=201)
    await s.call("PUT", "/communication-plan", client, {"meetings": "weekly call", "channels": ["email", "Slack"]})
    await s.call("POST", "/sla-policies", provider, {"policy": SLA_POLICY}, expect=201)
    await s.call("PUT", "/checkin-plan", client, {"every_days": 30, "format": "video call"})
    procedure = (await s.call("POST", "/procedures", client, {"name": "Month-end close", "steps": [
        {"title": "Upload receipts", "owner_side": "client", "owner_role": "AP clerk"},
        {"title": "Reconcile bank", "owner_side": "provider", "owner_role": "bookkeeper",
         "needs_from_other_side": ["bank statements"]},
        {"title": "Review pack", "owner_side": "client"}]}, expect=201))["created_id"]
    await s.activate()
    v1 = await eventually(lambda: _at_version(s, 1))
    assert v1["agreement"]["goals"][goal]["status"] == "acknowledged"

    # amendments: each content change makes a new version
    amended = await s.call("POST", "/goals", client, {"outcome": "Quarterly board pack", "success_measure": "m"},
                           expect=201)
    assert amended["agreement_version"] == 2
    change = (await s.call("POST", "/scope-changes", client, {
        "title": "Add payroll", "what": "Run payroll for 40 staff", "why": "Our payroll clerk left"},
        expect=201))["created_id"]
    open_changes = await eventually(lambda: _listed(s, "/scope-changes", 1))
    assert open_changes[0]["status"] == "requested"
    await s.call("POST", f"/scope-changes/{change}/approval", provider, expect=403)
    assert "must assess" in (await s.call("POST", f"/scope-changes/{change}/approval", client,
                                          expect=409))["detail"]
    await s.call("POST", f"/scope-changes/{change}/assessment", client, {
        "effort_hours": 1, "cost_minor_units": 1, "currency": "EUR", "timeline_impact_days": 0}, expect=403)
    await s.call("POST", f"/scope-changes/{change}/assessment", provider, {
        "effort_hours": 16, "cost_minor_units": 120000, "currency": "EUR", "timeline_impact_days": 5})
    approved = await s.call("POST", f"/scope-changes/{change}/approval", client)
    assert approved["agreement_version"] == 3
    await eventually(lambda: _empty(s, "/scope-changes"))

    # people: a personnel change re-routes the escalation matrix at once
    successor = (await s.call("POST", f"/contacts/{lead['created_id']}/replacement", provider, {
        "name": "Cy", "email": "cy@provider.test", "handover_notes": "Open items are in the tracker"},
        expect=201))["created_id"]
    await s.call("POST", f"/contacts/{successor}/removal", client, {}, expect=403)

    async def rerouted() -> list[dict[str, Any]] | None:
        matrix = await s.call("GET", "/escalation-matrix", client)
        return matrix if [c["name"] for c in matrix[0]["provider"]] == ["Cy"] else None  # type: ignore[index]

    matrix = await eventually(rerouted)
    assert [(m["level"], [c["name"] for c in m["client"]]) for m in matrix] == [(1, []), (2, ["Bo"])]

    # procedures: a breakdown is isolated to its step, listed while open, resolved with the fix
    steps = (await s.view())["agreement"]["procedures"][procedure]["steps"]
    breakdown = (await s.call("POST", f"/procedures/{procedure}/breakdowns", provider, {
        "step_id": steps[1]["step_id"], "what_broke": "Bank statements arrive late",
        "impact": "Close slips by two days"}, expect=201))["created_id"]
    listed = await eventually(lambda: _listed(s, "/breakdowns", 1))
    assert (listed[0]["step_title"], listed[0]["step_owner_side"]) == ("Reconcile bank", "provider")
    document = (await s.api.get(f"/agreements/{s.id}/document", headers=provider.headers))
    assert document.headers["content-type"].startswith("text/markdown")
    assert "```mermaid" in document.text and "class s2 breakdown" in document.text
    await s.call("POST", f"/breakdowns/{breakdown}/resolution", client, {"fix": "Bank feed connected"})
    await eventually(lambda: _empty(s, "/breakdowns"))

    # deliverables: provider delivers, client judges
    await s.call("POST", f"/deliverables/{deliverable}/delivery", client, {}, expect=403)
    await s.call("POST", f"/deliverables/{deliverable}/delivery", provider, {"url": "https://files.test/march.pdf"})
    await s.call("POST", f"/deliverables/{deliverable}/rejection", client, {"reason": "Notes missing"})
    await s.call("POST", f"/deliverables/{deliverable}/delivery", provider, {"note": "Notes added"})
    await s.call("POST", f"/deliverables/{deliverable}/acceptance", provider, expect=403)
    await s.call("POST", f"/deliverables/{deliverable}/acceptance", client)

    # staying in sync, check-ins, status updates
    disagreement = (await s.call("POST", "/disagreements", provider, {
        "topic": "Urgent queries", "description": "What counts as urgent?"}, expect=201))["created_id"]
    await s.call("POST", f"/disagreements/{disagreement}/resolution-proposals", client,
                 {"resolution": "Urgent = payroll or tax deadline within 48 h"})
    await s.call("POST", f"/disagreements/{disagreement}/resolution", client, expect=403)
    await s.call("POST", f"/disagreements/{disagreement}/resolution", provider)
    await s.call("POST", "/checkins", client, {
        "held_on": "2026-03-31", "client_score": 8, "provider_score": 7, "client_sentiment": "positive",
        "provider_sentiment": "neutral", "notes": "Good month",
        "action_items": [{"owner_side": "client", "description": "Send payroll data", "due_on": "2026-04-03"}]},
        expect=201)
    await s.call("POST", "/status-updates", client, {"summary": "s"}, expect=403)
    await s.call("POST", "/status-updates", provider, {"summary": "March close on track"}, expect=201)

    # lifecycle: suspended refuses changes, resumed accepts them, renewed makes a version
    await s.call("POST", "/suspension", client, {"reason": "Budget review"})
    suspended = await s.call("POST", "/goals", client, {"outcome": "o", "success_measure": "m"}, expect=409)
    assert "the agreement is suspended" in suspended["detail"]
    await s.call("POST", "/resumption", provider, {"reason": "Budget approved"})
    renewed = await s.call("POST", "/renewal", client, {"reason": "Second year", "renewed_until": "2027-12-31"})
    assert renewed["agreement_version"] == 4

    # validation names the field
    invalid = await s.api.post(f"/agreements/{s.id}/requirements", headers=client.headers,
                               json={"title": "t", "description": "d", "acceptance_criteria": []})
    assert invalid.status_code == 422
    assert ("body", "acceptance_criteria") in {tuple(e["loc"]) for e in invalid.json()["detail"]}

    # versions: time travel and the difference between versions
    v2 = await s.view(version=2)
    assert v2["agreement_version"] == 2 and len(v2["agreement"]["goals"]) == 2
    assert change not in v2["agreement"]["scope_changes"]  # requested after version 2 was made
    before_any = await s.api.get(f"/agreements/{s.id}", headers=client.headers,
                                 params={"as_of": "2000-01-01T00:00:00+00:00"})
    assert before_any.status_code == 404
    now = await s.view(as_of=datetime.now(UTC).isoformat())
    assert now["agreement_version"] == 4 and now["status"] == "active"
    diff = await s.call("GET", "/diff?from=1&to=3", client)
    assert len(diff["parts"]["goals"]["added"]) == 1
    assert diff["parts"]["scope_changes"]["added"][0]["status"] == "approved"
    assert (await s.api.get(f"/agreements/{s.id}/diff?from=1&to=9", headers=client.headers)).status_code == 404
    assert (await s.api.get(f"/agreements/{s.id}/diff?from=1&to=2", headers=stranger.headers)).status_code == 403
    markdown = (await s.api.get(f"/agreements/{s.id}/document", params={"version": 1},
                                headers=client.headers)).text
    assert markdown.startswith("# Outsourced accounting") and "Add payroll" not in markdown
    assert "## Operating procedures" in markdown and "class s2 breakdown" not in markdown

    # the read model and the history cover every event
    async def current() -> dict[str, Any] | None:
        view = await s.view()
        return view if view["agreement_version"] == 4 else None

    view = await current() or await eventually(current)
    assert view["agreement"]["deliverables"][deliverable]["status"] == "accepted"
    assert view["agreement"]["disagreements"][disagreement]["status"] == "resolved"
    assert "accord.agreements.PersonnelChanged.v1" in {h["event_type"] for h in view["history"]}
    listed_agreements = (await s.api.get("/agreements", headers=client.headers)).json()
    assert listed_agreements["items"][0]["agreement_version"] == 4


async def _at_version(s: Session, version: int) -> dict[str, Any] | None:
    response = await s.api.get(f"/agreements/{s.id}", headers=s.client.headers, params={"version": version})
    return response.json() if response.status_code == 200 else None  # type: ignore[no-any-return]


async def _listed(s: Session, path: str, count: int) -> list[dict[str, Any]] | None:
    response = await s.api.get(f"/agreements/{s.id}{path}", headers=s.client.headers)
    if response.status_code == 404:  # the read model has not caught up with the agreement yet
        return None
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()
    return items if len(items) == count else None


async def _empty(s: Session, path: str) -> bool:
    return await _listed(s, path, 0) == []


async def test_projections_rebuild_to_the_same_read_models(session: Session, agreements: ServiceRuntime) -> None:
    s = session
    await s.draft()
    await s.call("POST", "/contacts", s.client, {"role": "cfo", "name": "Di", "email": "di@c.test",
                                                 "escalation_level": 3}, expect=201)
    await s.activate()
    await s.call("POST", "/scope-changes", s.provider, {"title": "t", "what": "w", "why": "y"}, expect=201)
    assert agreements.projections is not None
    await agreements.projections.catch_up()
    tables = ("agreement_documents", "agreement_contacts", "open_scope_changes", "open_breakdowns",
              "agreement_summaries", "agreement_history")

    async def dump() -> list[list[str]]:
        return [await rows_of(agreements.pool, t) for t in tables]

    before = await dump()
    await agreements.projections.rebuild()
    assert await dump() == before


async def test_a_document_with_only_the_jsonb_snapshot_is_served_then_written_anew(
        session: Session, agreements: ServiceRuntime) -> None:
    s = session
    await s.draft()
    await s.call("POST", "/contacts", s.client, {"role": "cfo", "name": "Di", "email": "di@c.test",
                                                 "escalation_level": 1}, expect=201)
    assert agreements.projections is not None
    await agreements.projections.catch_up()
    before = await s.api.get(f"/agreements/{s.id}", headers=s.client.headers)
    # as a release before the text was kept left it: the jsonb snapshot only
    await agreements.pool.execute(
        "UPDATE agreement_documents SET snapshot = state::jsonb, state = NULL, state_format = ''")
    served = await s.api.get(f"/agreements/{s.id}", headers=s.client.headers)
    assert served.status_code == 200 and served.json() == before.json()
    # its next event replays the stream once and keeps the text to restore from again
    await s.call("POST", "/contacts", s.client, {"role": "ceo", "name": "Al", "email": "al@c.test",
                                                 "escalation_level": 2}, expect=201)
    await agreements.projections.catch_up()
    row = await agreements.pool.fetchrow("SELECT state, state_format, snapshot FROM agreement_documents")
    assert row is not None and row["snapshot"] is None and row["state_format"] != ""
    state = json.loads(row["state"])
    assert [c["name"] for level in state["escalation_matrix"] for c in level["client"]] == ["Di", "Al"]


async def test_a_missed_status_update_becomes_overdue_on_a_timer(session: Session,
                                                                 agreements: ServiceRuntime) -> None:
    s = session
    await s.draft()
    await s.call("PUT", "/communication-plan", s.client, {"status_update_every_seconds": 1, "channels": ["email"]})
    await s.activate()

    async def overdue(count: int) -> list[CloudEvent] | None:
        events = await agreements.store.read_stream(f"agreement-{s.id}")
        found = [e for e in events if e.type == "accord.agreements.StatusUpdateOverdue.v1"]
        return found if len(found) >= count else None

    first = (await eventually(lambda: overdue(1), timeout=8))[0]
    assert first.data["cadence_seconds"] == 1 and first.actor == "system:agreements"
    # the timer re-arms for the next period
    await eventually(lambda: overdue(2), timeout=8)
    # a status update restarts the clock; suspension stops it
    await s.call("POST", "/status-updates", s.provider, {"summary": "All good"}, expect=201)
    await s.call("POST", "/suspension", s.client, {"reason": "Pause"})
    settled = len(await overdue(0) or [])
    pending = await agreements.pool.fetchval(
        "SELECT count(*) FROM timers WHERE kind = 'agreements.status_update_due' AND fired_at IS NULL")
    assert pending == 0
    await s.api.get("/healthz")
    assert len(await overdue(0) or []) == settled


async def test_an_answered_clarification_query_clarifies_the_requirement_over_the_bus(
    session: Session, agreements: ServiceRuntime, amqp_connection: aio_pika.abc.AbstractRobustConnection,
    exchange_name: str,
) -> None:
    s = session
    await s.draft()
    requirement = (await s.call("POST", "/requirements", s.client, {
        "title": "VAT returns", "description": "Quarterly", "acceptance_criteria": ["filed on time"]},
        expect=201))["created_id"]
    query_id = (await s.call("POST", f"/requirements/{requirement}/clarification-requests", s.provider,
                             {"question": "Which countries?"}, expect=201))["created_id"]
    await s.call("POST", f"/requirements/{requirement}/acceptance", s.provider, expect=409)

    answered = QueryAnswered(query_id=uuid.UUID(query_id), agreement_id=uuid.UUID(s.id), answered_by_side="client",
                             answer="Germany and Austria", about_kind="requirement",
                             about_id=uuid.UUID(requirement), purpose="clarification")
    envelope = CloudEvent(id=uuid.uuid4(), source="/accord/queries", type=answered.event_type(),
                          subject=f"query-{query_id}", time=datetime.now(UTC),
                          data=answered.model_dump(mode="json"), sequence=2, correlationid=uuid.uuid4(),
                          actor=f"user:{s.client.user_id}")
    channel = await amqp_connection.channel()
    exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
    message = aio_pika.Message(envelope.model_dump_json().encode(), message_id=str(envelope.id),
                               content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
    for _ in range(2):  # a redelivered answer changes nothing
        await exchange.publish(message, routing_key=answered.routing_key())

    async def clarified() -> dict[str, Any] | None:
        agreement = (await s.view(as_of=datetime.now(UTC).isoformat()))["agreement"]
        found: dict[str, Any] = agreement["requirements"][requirement]
        return found if found["status"] == "clarified" else None

    found = await eventually(clarified)
    assert found["revision"] == 2 and found["clarifications"][0]["answer"] == "Germany and Austria"
    events = await agreements.store.read_stream(f"agreement-{s.id}")
    clarifications = [e for e in events if e.type == "accord.agreements.RequirementClarified.v1"]
    assert len(clarifications) == 1
    assert clarifications[0].causationid == envelope.id and clarifications[0].correlationid == envelope.correlationid
    accepted = await s.call("POST", f"/requirements/{requirement}/acceptance", s.provider, {"revision": 2})
    assert accepted["status"] == "draft"
