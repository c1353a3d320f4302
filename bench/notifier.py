"""(h) Notifier throughput: events on the bus → webhooks delivered, per second.

The notifier runs in this process as it runs in production (`ServiceRuntime` with the definition
`services.notifier.main.definition` builds from its settings, started through its app's lifespan,
which also runs the delivery worker), in a schema of its own, consuming from the benchmark's
exchange with queues of its own. Its rules (written to a temporary directory) start a one-level
chain for every `QueryOverdue` that calls the webhook `bench`: a tiny HTTP server in this process
on 127.0.0.1, which counts what it receives.

First each agreement's provider contact is published (`ContactAssigned`, as the agreements service
would) and awaited in the notifier's read model, so that levels resolve their targets. Then, per
run, a warm-up burst and a measured burst of `QueryOverdue` events (each about a query of its own,
so each starts a chain) are published straight to the exchange, persistent and confirmed; the
figure is the webhooks delivered over the time from the first publish to the last delivery
(closed loop). A webhook counts as delivered when the receiver has read its request; a second
request for the same notification or the same query is a duplicate (noted, and not counted).

Twice: with a receiver that answers at once (what the notifier's own work allows), and with one
that takes 100 ms to answer each request, as a receiver across a network and behind its own work
does (what the notifier's concurrency allows).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import yaml
from aio_pika.abc import AbstractExchange

from accord_runtime.service import ServiceRuntime
from accord_runtime.topology import CONTENT_TYPE, declare_exchange
from bench.cpu import CpuCost, CpuMeter
from bench.harness import MAX_OPERATIONS, Arrivals, BenchConfig, bounded, database_of, throwaway_database
from bench.report import Figure
from bench.service import delete_broker_objects
from contracts import CloudEvent, EventData
from contracts.agreements import ContactAssigned
from contracts.queries import QueryOverdue
from services.notifier.main import definition
from services.notifier.settings import NotifierSettings
from tests.support import HttpReceiver, Request

AGREEMENTS = 10  # the overdue queries are spread over this many agreements
RATE = 75  # about the webhooks/s expected: sizes the bursts (a window's worth)
PUBLISH_WINDOW = 300  # publishes awaited together
NOTIFICATION_HEADER = "x-accord-notification-id"


class WebhookReceiver(HttpReceiver):
    """The webhook's receiving end (the tests' HTTP/1.1 server, keeping connections open): marks each
    notification's query once it answered, and counts a second request for either as a duplicate."""

    def __init__(self, arrivals: Arrivals, delay: float = 0.0) -> None:
        super().__init__(delay=delay)
        self.arrivals = arrivals
        self.notifications: set[str] = set()
        self.duplicates = 0

    def answered(self, request: Request) -> None:
        notification = request.headers.get(NOTIFICATION_HEADER, "")
        query = json.loads(request.body)["trigger"]["query_id"]
        if notification in self.notifications or query in self.arrivals.seen:
            self.duplicates += 1
        self.notifications.add(notification)
        self.arrivals.mark([query])


def rules(hook_url: str) -> dict[str, object]:
    """One rule: a one-level chain per overdue query, calling the webhook at once."""
    return {
        "defaults": {"rate_limit": {"max": 10 * MAX_OPERATIONS, "per_seconds": 3600}},
        "delivery": {"max_attempts": 3, "backoff_base_seconds": 0.5, "backoff_cap_seconds": 2,
                     "jitter": 0.2, "timeout_seconds": 5},
        "webhooks": {"bench": {"url": hook_url, "format": "json"}},
        "rules": [{
            "name": "overdue-query", "event": "queries.QueryOverdue", "matter": "query:{query_id}:{clock}",
            "notify_in_quiet_hours": True,
            "levels": [{"targets": [{"side_field": "addressed_to_side", "matrix_level": 1}],
                        "channels": ["webhook:bench"]}],
        }],
    }


def message(data: EventData, subject: str) -> aio_pika.Message:
    """`data` as its service publishes it: a CloudEvent, persistent, with its event id."""
    service = data.EVENT_SERVICE
    event = CloudEvent(id=uuid.uuid4(), source=f"/accord/{service}", type=data.event_type(), subject=subject,
                       time=datetime.now(UTC), data=data.model_dump(mode="json"), sequence=1,
                       correlationid=uuid.uuid4(), actor=f"system:{service}")
    return aio_pika.Message(event.model_dump_json().encode(), message_id=str(event.id), content_type=CONTENT_TYPE,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT)


async def publish(exchange: AbstractExchange, events: Sequence[tuple[EventData, str]]) -> None:
    for start in range(0, len(events), PUBLISH_WINDOW):
        await asyncio.gather(*(exchange.publish(message(data, subject), data.routing_key())
                               for data, subject in events[start:start + PUBLISH_WINDOW]))


async def _contacts(exchange: AbstractExchange, runtime: ServiceRuntime, agreements: list[uuid.UUID],
                    seconds: float) -> None:
    """Give each agreement a provider contact at matrix level 1 and wait until the notifier has them."""
    await publish(exchange, [(ContactAssigned(agreement_id=agreement, contact_id=uuid.uuid4(), side="provider",
                                              role="service lead", name="Ann", email="ann@provider.test",
                                              escalation_level=1), f"agreement-{agreement}")
                             for agreement in agreements])
    for _ in bounded(seconds):
        if await runtime.pool.fetchval("SELECT count(*) FROM notifier_contacts") == len(agreements):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the notifier did not replicate {len(agreements)} contacts in {seconds} s")


async def _burst(exchange: AbstractExchange, agreements: list[uuid.UUID], arrivals: Arrivals, size: int,
                 drain_timeout: float) -> tuple[int, float, int]:
    """Publish `size` overdue queries; (delivered, seconds from first publish to last delivery, missing)."""
    queries = [uuid.uuid4() for _ in range(size)]
    events = [(QueryOverdue(query_id=query, agreement_id=agreements[i % len(agreements)], clock="first_response",
                            priority="urgent", addressed_to_side="provider", due_at=datetime.now(UTC)),
               f"query-{query}") for i, query in enumerate(queries)]
    started = time.perf_counter()
    await publish(exchange, events)
    keys = [str(query) for query in queries]
    missing = await arrivals.wait_for(keys, drain_timeout)
    arrived = [arrivals.seen[key] for key in keys if key in arrivals.seen]
    if not arrived:
        raise RuntimeError(f"no webhook of {size} arrived in {drain_timeout} s")
    return len(arrived), max(arrived) - started, missing


@contextlib.asynccontextmanager
async def running(settings: NotifierSettings) -> AsyncIterator[ServiceRuntime]:
    """The notifier started through its app's lifespan (which runs the delivery worker too); its
    queues are deleted after it stopped."""
    runtime = ServiceRuntime(definition(settings), settings)
    app = runtime.app()
    try:
        async with app.router.lifespan_context(app):
            yield runtime
    finally:
        await delete_broker_objects(runtime)


@dataclass(frozen=True)
class Run:
    delivered: int
    seconds: float
    cpu: CpuCost
    missing: int
    duplicates: int


async def _run(config: BenchConfig, url: str, exchange: AbstractExchange, schema: str, queue_prefix: str,
               size: int, delay: float) -> Run:
    arrivals = Arrivals()
    receiver = WebhookReceiver(arrivals, delay)
    with tempfile.TemporaryDirectory(prefix="accord-bench-") as folder:
        async with receiver.serving() as base_url:
            hook_url = f"{base_url}/hooks/bench"
            rules_path = Path(folder) / "rules.yaml"
            rules_path.write_text(yaml.safe_dump(rules(hook_url)))
            settings = NotifierSettings(
                database_url=url, database_schema=schema, amqp_url=config.amqp_url, exchange=exchange.name,
                queue_prefix=queue_prefix, log_level="WARNING", notifier_rules_path=rules_path,
                notifier_webhook_secret=secrets.token_hex(16))  # a throwaway key
            async with running(settings) as runtime:
                agreements = [uuid.uuid4() for _ in range(AGREEMENTS)]
                await _contacts(exchange, runtime, agreements, config.drain_timeout)
                await _burst(exchange, agreements, arrivals, max(20, size // 10), config.drain_timeout)
                with CpuMeter(database_of(url), rabbitmq=True) as meter:
                    delivered, seconds, missing = await _burst(exchange, agreements, arrivals, size,
                                                               config.drain_timeout)
                # while the service's backends still exist (the meter finds them by their title)
                cpu = meter.per(delivered)
    return Run(delivered, seconds, cpu, missing, receiver.duplicates)


SLOW_RECEIVER = 0.1  # seconds the second receiver takes to answer


async def notifier_throughput(config: BenchConfig) -> list[Figure]:
    size = min(round(RATE * config.window), MAX_OPERATIONS)
    figures = {
        0.0: Figure("notifier_webhooks", f"(h) events → delivered webhooks, bursts of {size}", "webhooks/s"),
        SLOW_RECEIVER: Figure("notifier_webhooks_slow_receiver",
                              f"(h) the same, the receiver taking {SLOW_RECEIVER * 1000:.0f} ms to answer",
                              "webhooks/s")}
    exchange_name = config.exchange_name("notifier")
    connection = await aio_pika.connect(config.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await declare_exchange(channel, exchange_name)
        async with throwaway_database(config) as url:
            for number in range(config.runs):
                for n, (delay, figure) in enumerate(figures.items()):
                    run = await _run(config, url, exchange, f"notifier_{number}_{n}",
                                     f"bench.{config.run_id}.{number}.{n}", size, delay)
                    figure.add_run(run.delivered / run.seconds, run.cpu)
                    if run.missing:
                        figure.notes.append(f"run {number + 1}: {run.missing} of {size} not delivered in"
                                            f" {config.drain_timeout:.0f} s")
                    if run.duplicates:
                        figure.notes.append(f"run {number + 1}: {run.duplicates} duplicate deliveries")
    finally:
        channel = await connection.channel()
        await channel.exchange_delete(exchange_name)
        await connection.close()
    return list(figures.values())
