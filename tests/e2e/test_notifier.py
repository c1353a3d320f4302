"""The notifier end to end over the real servers: events from the bus start escalation chains that reach
a real HTTP server (signed webhooks) and a real SMTP server (aiosmtpd), stop when the matter is answered
or acknowledged, survive a restart, never notify twice, retry a failing webhook and then give up, and
re-route the next level after a personnel change in the agreements service."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
import yaml
from aiosmtpd.controller import Controller

from accord_runtime.service import ServiceRuntime
from accord_runtime.settings import ServiceSettings
from contracts import CloudEvent, EventData
from contracts.notifier import (
    EscalationAcknowledged,
    EscalationResolved,
    EscalationStarted,
    NotificationFailed,
    NotificationSent,
)
from contracts.queries import QueryAnswered, QueryOverdue
from services.notifier.main import definition
from services.notifier.settings import NotifierSettings
from services.notifier.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_body
from tests.e2e.conftest import Party, delete_broker_objects, register_party
from tests.support import HttpReceiver, eventually

pytestmark = pytest.mark.servers

WEBHOOK_SECRET = "test-webhook-secret"  # a test's own key
ACK_KEY = "test-ack-key-0123456789"


# --- the servers the notifications go to ---------------------------------------------------------

@pytest.fixture
async def hooks() -> AsyncIterator[HttpReceiver]:
    server = HttpReceiver()
    async with server.serving():
        yield server


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:  # aiosmtpd's hook name
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"

    def to(self, address: str) -> list[Any]:
        return [m for m in self.messages if m["To"] == address]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def mailbox() -> Any:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=_free_port())
    controller.start()
    box.port = controller.port  # type: ignore[attr-defined]
    yield box
    controller.stop()


# --- the notifier beside the agreements service ----------------------------------------------------

def write_rules(path: Path, hook_url: str, *, level_two_after: float = 1.5, max_attempts: int = 3) -> Path:
    path.write_text(yaml.safe_dump({
        "defaults": {"rate_limit": {"max": 50, "per_seconds": 3600}},
        "delivery": {"max_attempts": max_attempts, "backoff_base_seconds": 0.1, "backoff_cap_seconds": 0.5,
                     "jitter": 0.2, "timeout_seconds": 2},
        "webhooks": {"ops": {"url": hook_url, "format": "json"}},
        "rules": [{
            "name": "overdue-query", "event": "queries.QueryOverdue", "when": {"priority": ["urgent", "high"]},
            "matter": "query:{query_id}:{clock}", "notify_in_quiet_hours": True,
            "resolved_by": [{"event": "queries.QueryAnswered", "matter": "query:{query_id}:first_response"}],
            "levels": [
                {"targets": [{"side_field": "addressed_to_side", "matrix_level": 1}],
                 "channels": ["email", "webhook:ops"]},
                {"after": {"seconds": level_two_after},
                 "targets": [{"side_field": "addressed_to_side", "matrix_level": 2}], "channels": ["email"]},
            ]}],
    }))
    return path


class Notifier:
    """A notifier runtime that can be stopped and started again on the same database and queues."""

    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings
        self.runtime: ServiceRuntime | None = None
        self.api: httpx.AsyncClient | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    async def start(self) -> None:
        self.runtime = ServiceRuntime(definition(self.settings), self.settings)
        app = self.runtime.app()
        self._stack = contextlib.AsyncExitStack()
        await self._stack.enter_async_context(app.router.lifespan_context(app))
        self.api = await self._stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://notifier"))

    async def stop(self) -> None:
        assert self._stack is not None
        await self._stack.aclose()

    async def events(self, event_type: type[EventData]) -> list[dict[str, Any]]:
        assert self.runtime is not None
        rows = await self.runtime.pool.fetch("SELECT data FROM events WHERE event_type = $1 ORDER BY global_position",
                                             event_type.event_type())
        return [row["data"] for row in rows]


@pytest.fixture
async def notifier(settings: ServiceSettings, agreements: ServiceRuntime, hooks: HttpReceiver, mailbox: Any,
                   tmp_path: Path) -> AsyncIterator[Notifier]:
    rules = write_rules(tmp_path / "rules.yaml", f"http://127.0.0.1:{hooks.port}/hooks/ops")
    notifier_settings = NotifierSettings(**{
        **settings.model_dump(), "service_name": "notifier", "database_schema": f"n_{uuid.uuid4().hex[:12]}",
        "notifier_rules_path": rules, "notifier_webhook_secret": WEBHOOK_SECRET, "notifier_ack_key": ACK_KEY,
        "notifier_ack_base_url": "http://notifier", "notifier_smtp_host": "127.0.0.1",
        "notifier_smtp_port": mailbox.port, "notifier_poll_seconds": 0.2})
    running = Notifier(notifier_settings)
    await running.start()  # its queues exist before the agreements service publishes anything
    yield running
    with contextlib.suppress(RuntimeError):
        await running.stop()
    assert running.runtime is not None
    await delete_broker_objects(settings.amqp_url, running.runtime)


@dataclass
class Scene:
    agreement_id: uuid.UUID
    client: Party
    provider: Party
    contacts: dict[str, str]  # name → contact id


async def agreement_with_matrix(api: httpx.AsyncClient, agreements: ServiceRuntime, notifier: Notifier) -> Scene:
    """An agreement whose provider has Ann at escalation level 1 and Bo at level 2, and an SLA calendar,
    replicated to the notifier."""
    client, provider = await register_party(agreements, "client"), await register_party(agreements, "provider")
    drafted = await api.post("/agreements", headers=client.headers, json={
        "title": "Support", "client_organisation_id": str(client.organisation_id),
        "provider_organisation_id": str(provider.organisation_id)})
    agreement_id = uuid.UUID(drafted.json()["agreement_id"])
    contacts = {}
    for name, level in (("ann", 1), ("bo", 2)):
        assigned = await api.post(f"/agreements/{agreement_id}/contacts", headers=provider.headers, json={
            "role": f"level {level} lead", "name": name, "email": f"{name}@provider.test", "escalation_level": level})
        assert assigned.status_code == 201, assigned.text
        contacts[name] = assigned.json()["created_id"]
    policy = await api.post(f"/agreements/{agreement_id}/sla-policies", headers=provider.headers, json={"policy": {
        "calendar": {"timezone": "Europe/Berlin",
                     "working_periods": [{"weekday": d, "start": "09:00:00", "end": "17:00:00"} for d in range(5)]},
        "targets": [{"priority": "urgent", "first_response_minutes": 30, "resolution_minutes": 240}]}})
    assert policy.status_code == 201, policy.text
    assert notifier.runtime is not None
    pool = notifier.runtime.pool
    await eventually(lambda: pool.fetchval("SELECT count(*) = 2 FROM notifier_contacts WHERE agreement_id = $1",
                                           agreement_id))
    await eventually(lambda: pool.fetchval("SELECT count(*) = 1 FROM notifier_calendars WHERE agreement_id = $1",
                                           agreement_id))
    await eventually(lambda: pool.fetchval("SELECT count(*) = 1 FROM agreement_parties WHERE agreement_id = $1",
                                           agreement_id))
    return Scene(agreement_id, client, provider, contacts)


async def publish(amqp_connection: aio_pika.abc.AbstractRobustConnection, exchange_name: str, data: EventData,
                  *, event_id: uuid.UUID | None = None) -> None:
    """Publish a queries-service event as that service would (the queries service is not running here)."""
    envelope = CloudEvent(id=event_id or uuid.uuid4(), source="/accord/queries", type=data.event_type(),
                          subject=f"query-{data.query_id}", time=datetime.now(UTC),  # type: ignore[attr-defined]
                          data=data.model_dump(mode="json"), sequence=1, correlationid=uuid.uuid4(),
                          actor="system:queries")
    channel = await amqp_connection.channel()
    exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
    await exchange.publish(aio_pika.Message(envelope.model_dump_json().encode(), message_id=str(envelope.id),
                                            content_type="application/json",
                                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                           routing_key=data.routing_key())
    await channel.close()


def overdue(scene: Scene, query_id: uuid.UUID) -> QueryOverdue:
    return QueryOverdue(query_id=query_id, agreement_id=scene.agreement_id, clock="first_response",
                        priority="urgent", addressed_to_side="provider", due_at=datetime.now(UTC))


async def test_an_overdue_query_notifies_by_webhook_and_email_once_and_its_answer_stops_the_chain(
    api: httpx.AsyncClient, agreements: ServiceRuntime, notifier: Notifier, hooks: HttpReceiver, mailbox: Mailbox,
    amqp_connection: aio_pika.abc.AbstractRobustConnection, exchange_name: str,
) -> None:
    scene = await agreement_with_matrix(api, agreements, notifier)
    query_id = uuid.uuid4()
    first = uuid.uuid4()
    await publish(amqp_connection, exchange_name, overdue(scene, query_id), event_id=first)
    await publish(amqp_connection, exchange_name, overdue(scene, query_id), event_id=first)  # redelivered
    await publish(amqp_connection, exchange_name, overdue(scene, query_id))  # repeated, another event id

    await eventually(lambda: _true(len(hooks.received) >= 1 and len(mailbox.to("ann@provider.test")) >= 1))
    # level 1: a signed webhook with the acknowledge link, and an email to the level-1 contact
    hook = hooks.received[0]
    assert hook.headers["content-type"] == "application/json"
    assert verify_body(WEBHOOK_SECRET.encode(), hook.body, int(hook.headers[TIMESTAMP_HEADER.lower()]),
                       hook.headers[SIGNATURE_HEADER.lower()])
    assert not verify_body(b"another secret", hook.body, int(hook.headers[TIMESTAMP_HEADER.lower()]),
                           hook.headers[SIGNATURE_HEADER.lower()])
    payload = json.loads(hook.body)
    assert payload["matter"] == f"query:{query_id}:first_response" and payload["level"] == 1
    assert [p["name"] for p in payload["responsible"]] == ["ann"]
    assert payload["ack_url"].startswith(f"http://notifier/escalations/{payload['escalation_id']}/ack?token=")
    email = mailbox.to("ann@provider.test")[0]
    assert "level 1/2" in email["Subject"] and "/ack?token=" in email.get_content()

    # the answer stops the chain before level 2 (sent after both outcomes are recorded, so that the
    # history below ends with the resolution)
    await eventually(lambda: _async_len(notifier.events(NotificationSent), 2))
    await publish(amqp_connection, exchange_name, QueryAnswered(
        query_id=query_id, agreement_id=scene.agreement_id, answered_by_side="provider", answer="Done"))
    await eventually(lambda: _async_len(notifier.events(EscalationResolved), 1))
    await asyncio.sleep(2.0)  # past level 2's delay
    assert mailbox.to("bo@provider.test") == []
    assert len(hooks.received) == 1 and len(mailbox.to("ann@provider.test")) == 1  # duplicates notified nobody
    assert len(await notifier.events(EscalationStarted)) == 1
    sent = await notifier.events(NotificationSent)
    assert sorted(s["channel"] for s in sent) == ["email", "webhook"]
    assert all(s["responsible"][0]["name"] == "ann" for s in sent)

    # the history, for the parties only; acknowledging a resolved matter is refused with the reason
    assert notifier.api is not None
    listed = await eventually(lambda: _closed(notifier.api, scene))  # type: ignore[arg-type]
    assert listed["open"] == [] and listed["closed"][0]["status"] == "resolved"
    history = [h["event_type"].split(".")[2] for h in listed["closed"][0]["history"]]
    assert history[:2] == ["EscalationStarted", "EscalationLevelReached"] and history[-1] == "EscalationResolved"
    escalation_id = listed["closed"][0]["escalation_id"]
    for latest, expected in ((1, [escalation_id]), (0, [])):
        page = await notifier.api.get(f"/agreements/{scene.agreement_id}/escalations", headers=scene.client.headers,
                                      params={"closed_latest": latest})
        assert [e["escalation_id"] for e in page.json()["closed"]] == expected
    refused = await notifier.api.post(f"/escalations/{escalation_id}/acknowledgement", headers=scene.provider.headers)
    assert refused.status_code == 409 and "already resolved" in refused.json()["detail"]
    stranger = await register_party(agreements, "stranger")
    assert (await notifier.api.get(f"/agreements/{scene.agreement_id}/escalations")).status_code == 401

    async def forbidden() -> bool:
        assert notifier.api is not None
        response = await notifier.api.get(f"/agreements/{scene.agreement_id}/escalations", headers=stranger.headers)
        return response.status_code == 403

    await eventually(forbidden)


async def test_a_restart_mid_chain_continues_and_a_personnel_change_reroutes_the_next_level(
    api: httpx.AsyncClient, agreements: ServiceRuntime, notifier: Notifier, mailbox: Mailbox,
    amqp_connection: aio_pika.abc.AbstractRobustConnection, exchange_name: str, tmp_path: Path, hooks: HttpReceiver,
) -> None:
    write_rules(notifier.settings.notifier_rules_path, f"http://127.0.0.1:{hooks.port}/hooks/ops",
                level_two_after=3.0)
    await notifier.stop()
    await notifier.start()  # with level 2 three seconds after level 1
    scene = await agreement_with_matrix(api, agreements, notifier)
    await publish(amqp_connection, exchange_name, overdue(scene, uuid.uuid4()))
    await eventually(lambda: _true(len(mailbox.to("ann@provider.test")) == 1))

    await notifier.stop()  # mid-chain: level 2 is a timer in the database
    replaced = await api.post(f"/agreements/{scene.agreement_id}/contacts/{scene.contacts['bo']}/replacement",
                              headers=scene.provider.headers,
                              json={"name": "cy", "email": "cy@provider.test", "handover_notes": "over to you"})
    assert replaced.status_code == 201, replaced.text
    await asyncio.sleep(0.5)
    await notifier.start()  # a new runtime: the personnel change waits in its queue, the timer in its table

    await eventually(lambda: _true(len(mailbox.to("cy@provider.test")) == 1), timeout=10)
    assert mailbox.to("bo@provider.test") == []  # re-routed at fire time
    assert len(mailbox.to("ann@provider.test")) == 1
    assert len(await notifier.events(EscalationStarted)) == 1
    sent = await eventually(lambda: _sent_to(notifier, "cy@provider.test"))
    assert sent["responsible"][0]["name"] == "cy" and sent["level"] == 2


async def _sent_to(notifier: Notifier, address: str) -> dict[str, Any] | None:
    found = [s for s in await notifier.events(NotificationSent) if s["target"] == address]
    return found[0] if found else None


async def test_a_failing_webhook_is_retried_then_failed_and_a_signed_link_acknowledges_the_chain(
    api: httpx.AsyncClient, agreements: ServiceRuntime, notifier: Notifier, hooks: HttpReceiver, mailbox: Mailbox,
    amqp_connection: aio_pika.abc.AbstractRobustConnection, exchange_name: str,
) -> None:
    hooks.status = 500
    scene = await agreement_with_matrix(api, agreements, notifier)
    await publish(amqp_connection, exchange_name, overdue(scene, uuid.uuid4()))

    failed = await eventually(lambda: _first(notifier.events(NotificationFailed)), timeout=10)
    assert failed["channel"] == "webhook" and failed["attempts"] == 3 and "HTTP 500" in failed["error"]
    assert len(hooks.received) == 3  # every attempt reached the server, with backoff between them
    assert notifier.runtime is not None
    dead = await notifier.runtime.pool.fetchrow("SELECT * FROM dead_letters WHERE notification_id = $1",
                                                uuid.UUID(failed["notification_id"]))
    assert dead is not None and dead["attempts"] == 3 and dead["target"] == "ops"

    # the email's signed link acknowledges the chain: level 2 never comes
    email = mailbox.to("ann@provider.test")[0]
    link = next(line for line in email.get_content().splitlines() if "/ack?token=" in line).split(" ", 1)[1]
    path = link.removeprefix("http://notifier")
    assert notifier.api is not None
    await eventually(lambda: _listed(notifier, scene))
    tampered = await notifier.api.get(path[:-1] + ("0" if path[-1] != "0" else "1"))
    assert tampered.status_code == 403
    acknowledged = await notifier.api.get(path)
    assert acknowledged.status_code == 200, acknowledged.text
    again = await notifier.api.get(path)
    assert again.status_code == 409 and "already acknowledged" in again.json()["detail"]
    ack = (await notifier.events(EscalationAcknowledged))[0]
    assert ack["via"] == "link" and ack["acknowledged_by"] == f"link:{scene.contacts['ann']}"
    await asyncio.sleep(2.0)
    assert mailbox.to("bo@provider.test") == []


async def _first(rows: Any) -> dict[str, Any] | None:
    found: list[dict[str, Any]] = await rows
    return found[0] if found else None


async def _listed(notifier: Notifier, scene: Scene) -> bool:
    assert notifier.api is not None
    response = await notifier.api.get(f"/agreements/{scene.agreement_id}/escalations", headers=scene.client.headers)
    return response.status_code == 200 and len(response.json()["open"]) == 1


async def _true(value: bool) -> bool:
    return value


async def _async_len(rows: Any, n: int) -> bool:
    return len(await rows) == n


async def _closed(api: httpx.AsyncClient, scene: Scene) -> dict[str, Any] | None:
    response = await api.get(f"/agreements/{scene.agreement_id}/escalations", headers=scene.client.headers)
    body: dict[str, Any] = response.json()
    return body if response.status_code == 200 and body["closed"] else None
