"""The notifier end to end, again and again: a KPI that breaches, recovers and breaches again escalates a
second time (a new occurrence of its matter, with its own escalation id and acknowledge links), while
repeats and redeliveries never start a chain or notify twice — not even the original trigger arriving
again after the inbox forgot it — and a late acknowledgement or resolution of the first chain leaves the
second alone. The notifier's metrics show the run by channel, outcome and level."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from accord_runtime.service import ServiceRuntime
from accord_runtime.settings import ServiceSettings
from contracts import CloudEvent, EventData
from contracts.kpi import KPIBreached, KPIRecovered
from contracts.notifier import EscalationAcknowledged, EscalationResolved, EscalationStarted, NotificationSent
from services.notifier.settings import NotifierSettings
from tests.e2e.conftest import delete_broker_objects
from tests.e2e.test_notifier import (  # the servers the notifications go to, and the notifier beside agreements
    ACK_KEY,
    WEBHOOK_SECRET,
    Mailbox,
    Notifier,
    Scene,
    agreement_with_matrix,
    hooks,  # noqa: F401 - a fixture
    mailbox,  # noqa: F401 - a fixture
)
from tests.support import HttpReceiver, eventually

pytestmark = pytest.mark.servers


def write_rules(path: Path, hook_url: str) -> Path:
    path.write_text(yaml.safe_dump({
        "defaults": {"rate_limit": {"max": 50, "per_seconds": 3600}},
        "delivery": {"max_attempts": 3, "backoff_base_seconds": 0.1, "backoff_cap_seconds": 0.5, "jitter": 0.2,
                     "timeout_seconds": 2},
        "webhooks": {"ops": {"url": hook_url, "format": "json"}},
        "rules": [{
            "name": "kpi-breached", "event": "kpi.KPIBreached", "matter": "kpi:{kpi_id}:breach",
            "notify_in_quiet_hours": True,
            "resolved_by": [{"event": "kpi.KPIRecovered", "matter": "kpi:{kpi_id}:breach"}],
            "levels": [
                {"targets": [{"side": "provider", "matrix_level": 1}], "channels": ["email", "webhook:ops"]},
                {"after": {"hours": 1}, "targets": [{"side": "provider", "matrix_level": 2}], "channels": ["email"]},
            ]}],
    }))
    return path


@pytest.fixture
async def notifier(settings: ServiceSettings, agreements: ServiceRuntime, hooks: HttpReceiver,  # noqa: F811
                   mailbox: Any, tmp_path: Path) -> AsyncIterator[Notifier]:  # noqa: F811
    rules = write_rules(tmp_path / "rules.yaml", f"http://127.0.0.1:{hooks.port}/hooks/ops")
    notifier_settings = NotifierSettings(**{
        **settings.model_dump(), "service_name": "notifier", "database_schema": f"n_{uuid.uuid4().hex[:12]}",
        "notifier_rules_path": rules, "notifier_webhook_secret": WEBHOOK_SECRET, "notifier_ack_key": ACK_KEY,
        "notifier_ack_base_url": "http://notifier", "notifier_smtp_host": "127.0.0.1",
        "notifier_smtp_port": mailbox.port, "notifier_poll_seconds": 0.2})
    running = Notifier(notifier_settings)
    await running.start()
    yield running
    with contextlib.suppress(RuntimeError):
        await running.stop()
    assert running.runtime is not None
    await delete_broker_objects(settings.amqp_url, running.runtime)


async def publish(amqp_connection: aio_pika.abc.AbstractRobustConnection, exchange_name: str, data: EventData,
                  event_id: uuid.UUID) -> None:
    """Publish a KPI-service event as that service would (it is not running here)."""
    envelope = CloudEvent(id=event_id, source="/accord/kpi", type=data.event_type(),
                          subject=f"kpi-{data.agreement_id}", time=datetime.now(UTC),  # type: ignore[attr-defined]
                          data=data.model_dump(mode="json"), sequence=1, correlationid=uuid.uuid4(),
                          actor="system:kpi")
    channel = await amqp_connection.channel()
    exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
    await exchange.publish(aio_pika.Message(envelope.model_dump_json().encode(), message_id=str(envelope.id),
                                            content_type="application/json",
                                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                           routing_key=data.routing_key())
    await channel.close()


def breached(scene: Scene, kpi_id: uuid.UUID, value: float) -> KPIBreached:
    now = datetime.now(UTC)
    return KPIBreached(agreement_id=scene.agreement_id, kpi_id=kpi_id, name="First response within SLA",
                       value=value, threshold=80, period_end=now, crossed_at=now)


def recovered(scene: Scene, kpi_id: uuid.UUID) -> KPIRecovered:
    now = datetime.now(UTC)
    return KPIRecovered(agreement_id=scene.agreement_id, kpi_id=kpi_id, name="First response within SLA",
                        value=95, threshold=90, period_end=now, crossed_at=now, from_status="breached",
                        to_status="on_target")


async def received(notifier: Notifier, *event_ids: uuid.UUID) -> bool:
    """Whether the notifier's consumers took these events in (handled, or dropped as duplicates)."""
    assert notifier.runtime is not None
    found = await notifier.runtime.pool.fetchval("SELECT count(DISTINCT event_id) FROM inbox"
                                                 " WHERE event_id = ANY($1::uuid[])", list(event_ids))
    return bool(found == len(event_ids))


def ack_path(email: Any) -> str:
    link = next(line for line in email.get_content().splitlines() if "/ack?token=" in line).split(" ", 1)[1]
    return str(link.removeprefix("http://notifier"))


async def test_a_kpi_that_breaches_again_after_recovering_escalates_again_and_duplicates_never_do(
    api: httpx.AsyncClient, agreements: ServiceRuntime, notifier: Notifier, hooks: HttpReceiver,  # noqa: F811
    mailbox: Mailbox, amqp_connection: aio_pika.abc.AbstractRobustConnection,  # noqa: F811
    exchange_name: str,
) -> None:
    scene = await agreement_with_matrix(api, agreements, notifier)
    kpi_id = uuid.uuid4()
    matter = f"kpi:{kpi_id}:breach"
    first_breach, repeat, first_recovery, second_breach = (uuid.uuid4() for _ in range(4))

    # the first breach notifies level 1 once: a redelivery and a repeat while it is open start nothing
    await publish(amqp_connection, exchange_name, breached(scene, kpi_id, 70), first_breach)
    await publish(amqp_connection, exchange_name, breached(scene, kpi_id, 70), first_breach)  # redelivered
    await publish(amqp_connection, exchange_name, breached(scene, kpi_id, 60), repeat)  # repeated, another id
    await eventually(lambda: _true(len(mailbox.to("ann@provider.test")) == 1 and len(hooks.received) == 1))
    await eventually(lambda: received(notifier, first_breach, repeat))
    await asyncio.sleep(0.5)
    assert len(mailbox.to("ann@provider.test")) == 1 and len(hooks.received) == 1
    assert len(await notifier.events(EscalationStarted)) == 1

    # recovered: the chain is resolved; breached again (a new event): a second chain notifies level 1 again
    await publish(amqp_connection, exchange_name, recovered(scene, kpi_id), first_recovery)
    await eventually(lambda: _count(notifier.events(EscalationResolved), 1))
    await publish(amqp_connection, exchange_name, breached(scene, kpi_id, 65), second_breach)
    await eventually(lambda: _true(len(mailbox.to("ann@provider.test")) == 2 and len(hooks.received) == 2),
                     timeout=10)
    first, second = await notifier.events(EscalationStarted)
    assert (first["matter"], second["matter"]) == (matter, matter)
    assert (first["occurrence"], second["occurrence"]) == (1, 2)
    assert first["escalation_id"] != second["escalation_id"]
    assert (first["trigger_event_id"], second["trigger_event_id"]) == (str(first_breach), str(second_breach))
    email_one, email_two = mailbox.to("ann@provider.test")
    assert f"/escalations/{first['escalation_id']}/ack" in ack_path(email_one)
    assert f"/escalations/{second['escalation_id']}/ack" in ack_path(email_two)  # links of the new chain
    sent = await eventually(lambda: _at_least(notifier.events(NotificationSent), 4))
    assert sorted(s["escalation_id"] for s in sent) == sorted([first["escalation_id"]] * 2
                                                              + [second["escalation_id"]] * 2)

    listed = await eventually(lambda: _listing(notifier, scene, open_=1, closed=1, level=1))
    assert [(e["occurrence"], e["status"]) for e in listed["closed"]] == [(1, "resolved")]
    assert [(e["occurrence"], e["escalation_id"]) for e in listed["open"]] == [(2, second["escalation_id"])]

    # the first chain's acknowledge link (an old email) is refused and leaves the new chain open
    assert notifier.api is not None
    stale = await notifier.api.get(ack_path(email_one))
    assert stale.status_code == 409 and "escalated again" in stale.json()["detail"]

    # the second chain is the one to acknowledge
    acknowledged = await notifier.api.get(ack_path(email_two))
    assert acknowledged.status_code == 200, acknowledged.text
    (ack,) = await notifier.events(EscalationAcknowledged)
    assert ack["escalation_id"] == second["escalation_id"] and ack["acknowledged_by"] == f"link:{scene.contacts['ann']}"

    # the inbox forgot the breaches and the recovery (e.g. pruned, or replayed), and all arrive again:
    # each breach already started a chain and the recovery already resolved one, so none acts again
    assert notifier.runtime is not None
    again = [(first_breach, breached(scene, kpi_id, 70)), (first_recovery, recovered(scene, kpi_id)),
             (second_breach, breached(scene, kpi_id, 65))]
    await notifier.runtime.pool.execute("DELETE FROM inbox WHERE event_id = ANY($1::uuid[])", [i for i, _ in again])
    for event_id, data in again:
        await publish(amqp_connection, exchange_name, data, event_id)
    await eventually(lambda: received(notifier, *(i for i, _ in again)))
    await asyncio.sleep(0.5)
    assert len(await notifier.events(EscalationStarted)) == 2
    assert len(await notifier.events(EscalationResolved)) == 1  # the acknowledged second chain stays unresolved
    assert len(mailbox.to("ann@provider.test")) == 2 and len(hooks.received) == 2
    assert mailbox.to("bo@provider.test") == []


async def test_metrics_show_notifications_by_channel_and_outcome_open_escalations_by_level_and_latency(
    api: httpx.AsyncClient, agreements: ServiceRuntime, notifier: Notifier, hooks: HttpReceiver,  # noqa: F811
    mailbox: Mailbox, amqp_connection: aio_pika.abc.AbstractRobustConnection,  # noqa: F811
    exchange_name: str,
) -> None:
    scene = await agreement_with_matrix(api, agreements, notifier)
    before = await scrape(notifier)
    await publish(amqp_connection, exchange_name, breached(scene, uuid.uuid4(), 70), uuid.uuid4())
    await eventually(lambda: _true(len(mailbox.to("ann@provider.test")) == 1 and len(hooks.received) == 1))
    await eventually(lambda: _at_least(notifier.events(NotificationSent), 2))

    after = await eventually(lambda: _scraped(notifier, lambda m: m.get(OPEN, {}).get((("level", "1"),)) == 1),
                             timeout=15)  # the gauge is refreshed every few seconds
    for channel in ("email", "webhook"):
        key = (("channel", channel), ("outcome", "sent"))
        assert after[SENT][key] - before.get(SENT, {}).get(key, 0) == 1
        timed = (("channel", channel),)
        assert after[LATENCY_COUNT][timed] - before.get(LATENCY_COUNT, {}).get(timed, 0) == 1
        assert after[LATENCY_SUM][timed] > 0
    assert {labels for labels in after[SENT]} <= {(("channel", c), ("outcome", o))
                                                  for c in ("email", "webhook", "slack")
                                                  for o in ("sent", "retried", "failed", "deferred", "cancelled")}

    listed = await eventually(lambda: _listing(notifier, scene, open_=1, closed=0))
    assert notifier.api is not None
    acknowledged = await notifier.api.post(f"/escalations/{listed['open'][0]['escalation_id']}/acknowledgement",
                                           headers=scene.provider.headers)
    assert acknowledged.status_code == 200, acknowledged.text
    await eventually(lambda: _scraped(notifier, lambda m: not m.get(OPEN)), timeout=15)  # none open at any level


SENT = "accord_notifier_notifications_total"
OPEN = "accord_notifier_open_escalations"
LATENCY_COUNT = "accord_notifier_delivery_seconds_count"
LATENCY_SUM = "accord_notifier_delivery_seconds_sum"
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


async def scrape(notifier: Notifier) -> Samples:
    """The notifier's /metrics: sample name → sorted labels → value."""
    assert notifier.api is not None
    response = await notifier.api.get("/metrics")
    assert response.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


async def _scraped(notifier: Notifier, condition: Any) -> Samples | None:
    samples = await scrape(notifier)
    return samples if condition(samples) else None


async def _listing(notifier: Notifier, scene: Scene, *, open_: int, closed: int,
                   level: int = 0) -> dict[str, Any] | None:
    """The agreement's escalations, once `open_` are open (at `level` at least) and `closed` closed."""
    assert notifier.api is not None
    response = await notifier.api.get(f"/agreements/{scene.agreement_id}/escalations", headers=scene.client.headers)
    body: dict[str, Any] = response.json()
    wanted = (response.status_code == 200 and (len(body["open"]), len(body["closed"])) == (open_, closed)
              and all(e["level"] >= level for e in body["open"]))
    return body if wanted else None


async def _true(value: bool) -> bool:
    return value


async def _count(rows: Any, n: int) -> bool:
    return len(await rows) == n


async def _at_least(rows: Any, n: int) -> list[dict[str, Any]] | None:
    found: list[dict[str, Any]] = await rows
    return found if len(found) >= n else None
