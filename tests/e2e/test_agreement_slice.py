"""The agreements core slice end to end: HTTP commands → event store → outbox → RabbitMQ,
and → read models; a plain aio-pika subscriber outside the services receives valid CloudEvents."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aio_pika
import httpx
import jsonschema
import pytest

from contracts import REGISTRY, CloudEvent
from contracts.export import SCHEMA_DIR
from tests.e2e.conftest import Party
from tests.support import eventually

pytestmark = pytest.mark.servers


async def draft(api: httpx.AsyncClient, by: Party, client: Party, provider: Party) -> str:
    response = await api.post("/agreements", headers=by.headers, json={
        "title": "Monthly close and reporting", "summary": "Outsourced accounting",
        "client_organisation_id": str(client.organisation_id),
        "provider_organisation_id": str(provider.organisation_id)})
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["status"], body["version"]) == ("draft", 1)
    return str(body["agreement_id"])


async def test_draft_propose_accept_activate_over_http_and_the_bus(
    api: httpx.AsyncClient, amqp_connection: aio_pika.abc.AbstractRobustConnection, exchange_name: str,
    client_party: Party, provider_party: Party,
) -> None:
    channel = await amqp_connection.channel()
    exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, "agreements.#")

    agreement_id = await draft(api, client_party, client_party, provider_party)
    proposed = await api.post(f"/agreements/{agreement_id}/proposal", headers=provider_party.headers)
    assert proposed.status_code == 200 and proposed.json()["status"] == "proposed"
    first = await api.post(f"/agreements/{agreement_id}/acceptance", headers=client_party.headers)
    assert first.json()["status"] == "proposed" and first.json()["accepted_by"] == ["client"]
    second = await api.post(f"/agreements/{agreement_id}/acceptance", headers=provider_party.headers)
    assert second.json() == {"agreement_id": agreement_id, "status": "active", "version": 5,
                             "agreement_version": 1, "accepted_by": ["client", "provider"],
                             "created_id": None}

    # the read model catches up: one agreement with its status and full history
    async def detail() -> dict[str, Any] | None:
        response = await api.get(f"/agreements/{agreement_id}", headers=client_party.headers)
        return response.json() if response.status_code == 200 and response.json()["status"] == "active" else None

    view = await eventually(detail)
    assert view["your_side"] == "client" and view["client_accepted"] and view["provider_accepted"]
    assert [h["event_type"].split(".")[2] for h in view["history"]] == [
        "AgreementDrafted", "AgreementProposed", "AgreementAccepted", "AgreementAccepted", "AgreementActivated"]
    assert view["history"][1]["actor"] == f"user:{provider_party.user_id}"
    listed = await api.get("/agreements", headers=provider_party.headers, params={"status": "active"})
    assert [a["agreement_id"] for a in listed.json()["items"]] == [agreement_id]

    # a subscriber outside the services receives valid CloudEvents, in order
    envelope_schema = json.loads((SCHEMA_DIR / "cloudevent.json").read_text())
    received: list[aio_pika.abc.AbstractIncomingMessage] = []
    async with asyncio.timeout(10):
        async with queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                if json.loads(message.body)["subject"] == f"agreement-{agreement_id}":
                    received.append(message)
                if len(received) == 5:
                    break
    for message in received:
        document = json.loads(message.body)
        jsonschema.validate(document, envelope_schema)
        event = CloudEvent.model_validate(document)
        jsonschema.validate(event.data, json.loads((SCHEMA_DIR / f"{event.type}.json").read_text()))
        REGISTRY.decode(event.type, event.data)
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.routing_key == event.routing_key
        assert message.message_id == str(event.id)
    events = [CloudEvent.model_validate_json(m.body) for m in received]
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5]
    # four commands, four correlations; the last command's two events share one
    assert len({e.correlationid for e in events}) == 4
    assert events[3].correlationid == events[4].correlationid
    assert [e.routing_key for e in events][-1] == "agreements.AgreementActivated"


async def test_refusals_say_why(api: httpx.AsyncClient, client_party: Party, provider_party: Party,
                                stranger: Party) -> None:
    agreement_id = await draft(api, client_party, client_party, provider_party)
    url = f"/agreements/{agreement_id}"
    # 401 without a valid token
    assert (await api.get(url)).status_code == 401
    bad = await api.get(url, headers={"Authorization": "Bearer acc_not-a-token"})
    assert bad.status_code == 401 and bad.json()["detail"] == "invalid or revoked token"
    # 403 for someone else's agreement, reading or changing it
    await eventually(lambda: _status(api, url, client_party, 200))
    assert (await api.get(url, headers=stranger.headers)).status_code == 403
    refused = await api.post(f"{url}/proposal", headers=stranger.headers)
    assert refused.status_code == 403 and "not a party" in refused.json()["detail"]
    # 409 with a reason for an illegal transition
    early = await api.post(f"{url}/acceptance", headers=client_party.headers)
    assert early.status_code == 409 and "only a proposed agreement can be accepted" in early.json()["detail"]
    # 422 with the field for bad input; 404 for an unknown agreement
    invalid = await api.post("/agreements", headers=client_party.headers, json={"title": ""})
    assert invalid.status_code == 422
    fields = {tuple(e["loc"]) for e in invalid.json()["detail"]}
    assert fields >= {("body", "title"), ("body", "client_organisation_id")}
    unknown_party = await api.post("/agreements", headers=stranger.headers, json={
        "title": "x", "client_organisation_id": str(client_party.organisation_id),
        "provider_organisation_id": str(provider_party.organisation_id)})
    assert unknown_party.status_code == 403
    missing = await api.post("/agreements/00000000-0000-0000-0000-000000000000/proposal", headers=client_party.headers)
    assert missing.status_code == 404
    # the stranger sees none of it in its list
    assert (await api.get("/agreements", headers=stranger.headers)).json()["items"] == []


async def _status(api: httpx.AsyncClient, url: str, party: Party, expected: int) -> bool:
    return (await api.get(url, headers=party.headers)).status_code == expected


async def test_concurrent_acceptances_both_count(api: httpx.AsyncClient, client_party: Party,
                                                 provider_party: Party) -> None:
    """Both sides accepting at the same instant: the conflict is retried, the agreement activates."""
    agreement_id = await draft(api, client_party, client_party, provider_party)
    await api.post(f"/agreements/{agreement_id}/proposal", headers=client_party.headers)
    results = await asyncio.gather(*(api.post(f"/agreements/{agreement_id}/acceptance", headers=p.headers)
                                     for p in (client_party, provider_party)))
    assert sorted(r.status_code for r in results) == [200, 200]
    assert max(r.json()["version"] for r in results) == 5
    assert "active" in {r.json()["status"] for r in results}


async def test_the_history_comes_a_page_at_a_time_and_the_detail_can_hold_its_latest(
        api: httpx.AsyncClient, client_party: Party, provider_party: Party) -> None:
    agreement_id = await draft(api, client_party, client_party, provider_party)
    for path, party in (("proposal", provider_party), ("acceptance", client_party), ("acceptance", provider_party)):
        assert (await api.post(f"/agreements/{agreement_id}/{path}", headers=party.headers)).status_code == 200
    url = f"/agreements/{agreement_id}/history"

    async def page(after: int, limit: int) -> dict[str, Any]:
        response = await api.get(url, headers=provider_party.headers, params={"after": after, "limit": limit})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def complete() -> dict[str, Any] | None:  # the read models hold all five events (404 until then)
        response = await api.get(url, headers=provider_party.headers, params={"after": 0, "limit": 2})
        first: dict[str, Any] = response.json()
        return first if response.status_code == 200 and first["total"] == 5 else None

    pages, current = [], await eventually(complete)
    while True:
        pages.append([entry["sequence"] for entry in current["items"]])
        assert (current["total"], current["limit"]) == (5, 2)
        if current["next_after"] is None:
            break
        current = await page(current["next_after"], 2)
    assert pages == [[1, 2], [3, 4], [5]]
    assert (await page(5, 100))["items"] == [] and (await page(5, 100))["next_after"] is None
    assert (await page(0, 5))["next_after"] is None  # a page that holds the last entry is the last
    for params in ({"limit": 0}, {"limit": 501}, {"after": -1}, {"after": "x"}, {"after": 2**31}):
        refused = await api.get(url, headers=provider_party.headers, params=params)
        assert refused.status_code == 422, (params, refused.text)

    async def detail(**params: int) -> dict[str, Any]:
        response = await api.get(f"/agreements/{agreement_id}", headers=client_party.headers, params=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    whole = await detail()
    assert [h["sequence"] for h in whole["history"]] == [1, 2, 3, 4, 5] and whole["history_total"] == 5
    latest = await detail(history_limit=2)
    assert latest["history"] == whole["history"][-2:] and latest["history_total"] == 5
    assert (await detail(history_limit=0))["history"] == []
    assert (await detail(history_limit=50))["history"] == whole["history"]
    assert [h["sequence"] for h in (await detail(version=1, history_limit=3))["history"]] == [3, 4, 5]
    refused = await api.get(f"/agreements/{agreement_id}", headers=client_party.headers,
                            params={"history_limit": -1})
    assert refused.status_code == 422


async def test_status_updates_are_counted_in_the_agreement_and_listed_by_type_in_its_history(
        api: httpx.AsyncClient, client_party: Party, provider_party: Party) -> None:
    agreement_id = await draft(api, client_party, client_party, provider_party)
    for path, party in (("proposal", provider_party), ("acceptance", client_party), ("acceptance", provider_party)):
        assert (await api.post(f"/agreements/{agreement_id}/{path}", headers=party.headers)).status_code == 200
    for summary in ("first", "second", "third"):
        posted = await api.post(f"/agreements/{agreement_id}/status-updates", headers=provider_party.headers,
                                json={"summary": summary})
        assert posted.status_code == 201, posted.text
    url = f"/agreements/{agreement_id}/history"

    async def updates(**params: Any) -> dict[str, Any]:
        response = await api.get(url, headers=client_party.headers, params={"type": "StatusUpdatePosted", **params})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def all_three() -> dict[str, Any] | None:  # the read models hold all three (404 until then)
        response = await api.get(url, headers=client_party.headers, params={"type": "StatusUpdatePosted", "limit": 2})
        first: dict[str, Any] = response.json()
        return first if response.status_code == 200 and first["total"] == 3 else None

    first = await eventually(all_three)
    assert [e["data"]["summary"] for e in first["items"]] == ["first", "second"]
    assert [e["sequence"] for e in first["items"]] == [6, 7] and first["next_after"] == 7
    rest = await updates(after=7, limit=2)
    assert [e["data"]["summary"] for e in rest["items"]] == ["third"] and rest["next_after"] is None
    both = await updates(type=["StatusUpdatePosted", "AgreementProposed"], limit=10)
    assert [e["sequence"] for e in both["items"]] == [2, 6, 7, 8] and both["total"] == 4
    refused = await api.get(url, headers=client_party.headers, params={"type": "Gossip"})
    assert refused.status_code == 422 and "'Gossip' is not an event of an agreement" in refused.text

    detail = (await api.get(f"/agreements/{agreement_id}", headers=client_party.headers)).json()["agreement"]
    assert (detail["status_updates_posted"], detail["last_status_update"]["summary"]) == (3, "third")
    assert "status_updates" not in detail  # each update is in the history, not in the agreement's state


async def test_health_readiness_and_metrics(api: httpx.AsyncClient, client_party: Party,
                                            provider_party: Party) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    ready = await api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True, "broker": True, "workers": True}
    await draft(api, client_party, client_party, provider_party)

    async def published() -> str | None:
        text = (await api.get("/metrics")).text
        return text if 'accord_events_published_total{service="agreements"}' in text else None

    metrics = await eventually(published)
    drafted = 'event_type="accord.agreements.AgreementDrafted.v1",service="agreements"'
    assert f"accord_events_appended_total{{{drafted}}}" in metrics
    assert "accord_outbox_backlog" in metrics
