"""The outbox relay and its doorbell against real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import jsonschema
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from prometheus_client import REGISTRY

import contracts
from accord_runtime.doorbell import Doorbell
from accord_runtime.eventstore import EventStore, Metadata
from accord_runtime.outbox import OutboxRelay
from accord_runtime.postgres import create_pool
from accord_runtime.topology import CONTENT_TYPE, declare_exchange
from contracts import CloudEvent
from contracts.agreements import AgreementAccepted
from tests.support import eventually

pytestmark = pytest.mark.servers

ROOT = Path(__file__).resolve().parents[2]
CLOUDEVENT_SCHEMA = json.loads(
    (Path(contracts.__file__).parent / "schemas" / "cloudevent.json").read_text()
)
META = Metadata.new("user:test")


@dataclass
class Observer:
    """Every message on the test exchange, via a private queue bound with '#'."""

    messages: list[AbstractIncomingMessage] = field(default_factory=list)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self.messages.append(message)

    @property
    def ids(self) -> list[str]:
        return [str(m.message_id) for m in self.messages]

    async def receive(self, ids: set[str], timeout: float = 10.0) -> None:
        async def all_there() -> bool:
            return ids <= set(self.ids)

        await eventually(all_there, timeout=timeout, interval=0.005)


@dataclass
class Running:
    relay: OutboxRelay
    doorbell: Doorbell
    task: asyncio.Task[None]

    async def stop(self) -> None:
        if not self.task.done():
            await asyncio.wait_for(self.relay.stop(), 30)
        await self.task  # re-raises what made the relay fail
        await self.doorbell.stop()


StartRelay = Callable[..., Awaitable[Running]]


@pytest.fixture
async def observer(
    amqp_connection: AbstractRobustConnection, exchange_name: str
) -> AsyncIterator[Observer]:
    channel = await amqp_connection.channel()
    exchange = await declare_exchange(channel, exchange_name)
    queue = await channel.declare_queue(f"{exchange_name}.observer", exclusive=True)
    await queue.bind(exchange, "#")
    observer = Observer()
    tag = await queue.consume(observer.on_message, no_ack=True)
    yield observer
    await queue.cancel(tag)
    await queue.delete(if_unused=False, if_empty=False)
    await exchange.delete()
    await channel.close()


@pytest.fixture
async def start_relay(
    pool: asyncpg.Pool, database_url: str, schema: str, amqp_url: str, exchange_name: str
) -> AsyncIterator[StartRelay]:
    """Start relays in this process; each is stopped at the end of the test."""
    started: list[Running] = []

    async def start(store: EventStore | None = None, *, service: str = "relaytest",
                    poll_interval: float = 5.0, url: str = amqp_url, **options: Any) -> Running:
        doorbell = Doorbell(database_url, schema, poll_interval=poll_interval)
        await doorbell.start()
        if store is not None:
            store.on_append(doorbell.ring)
        relay = OutboxRelay(pool, database_url, schema, url, exchange_name, service, doorbell,
                            **options)
        running = Running(relay, doorbell, asyncio.create_task(relay.run()))
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop()


async def _true(value: bool) -> bool:
    return value


def accepted() -> AgreementAccepted:
    return AgreementAccepted(agreement_id=uuid.uuid4(), side="client")


async def append_many(store: EventStore, streams: int, per_stream: int, *, chunk: int = 10,
                      prefix: str = "s") -> list[CloudEvent]:
    """Append `per_stream` events to each of `streams` streams, the streams concurrently."""

    async def fill(stream: str) -> list[CloudEvent]:
        written: list[CloudEvent] = []
        while len(written) < per_stream:
            count = min(chunk, per_stream - len(written))
            result = await store.append(stream, len(written), [accepted()] * count, META)
            written += result.envelopes
        return written

    per = await asyncio.gather(*(fill(f"{prefix}-{n}") for n in range(streams)))
    return [envelope for envelopes in per for envelope in envelopes]


def metric(name: str, service: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"service": service})


async def outbox_size(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM outbox"))


async def test_committed_events_are_published_as_persistent_cloudevents(
    store: EventStore, pool: asyncpg.Pool, observer: Observer, start_relay: StartRelay
) -> None:
    service = f"relay-{uuid.uuid4().hex[:6]}"
    await start_relay(store, service=service)
    events = (await store.append("agreement-1", 0, [accepted(), accepted()], META)).envelopes
    await observer.receive({str(e.id) for e in events})

    assert observer.ids == [str(e.id) for e in events]
    validator = jsonschema.validators.validator_for(CLOUDEVENT_SCHEMA)(CLOUDEVENT_SCHEMA)
    for message, committed in zip(observer.messages, events, strict=True):
        assert message.routing_key == "agreements.AgreementAccepted"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.content_type == CONTENT_TYPE == "application/cloudevents+json; charset=utf-8"
        assert message.message_id == str(committed.id)
        validator.validate(json.loads(message.body))
        assert CloudEvent.model_validate_json(message.body) == committed
    # rows are deleted, and counted, once the broker confirmed them: a moment after delivery
    await eventually(lambda: _true(metric("accord_events_published_total", service) == 2))
    await eventually(lambda: _true(metric("accord_outbox_backlog", service) == 0))
    assert await outbox_size(pool) == 0


async def test_rolled_back_appends_are_never_published(
    store: EventStore, pool: asyncpg.Pool, observer: Observer, start_relay: StartRelay
) -> None:
    await start_relay(store)
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        rolled_back = await store.append("gone", 0, [accepted(), accepted()], META, conn=conn)
        await transaction.rollback()
    store.notify_appended()  # a careless caller rings anyway
    marker = (await store.append("kept", 0, [accepted()], META)).envelopes
    await observer.receive({str(marker[0].id)})
    await asyncio.sleep(0.2)

    assert observer.ids == [str(marker[0].id)]
    assert not {str(e.id) for e in rolled_back.envelopes} & set(observer.ids)
    assert await outbox_size(pool) == 0


def sequences_by_stream(observer: Observer) -> dict[str, list[int]]:
    """Each stream's event versions in the order first received."""
    seen: set[str] = set()
    order: dict[str, list[int]] = defaultdict(list)
    for message in observer.messages:
        if message.message_id in seen:
            continue
        seen.add(str(message.message_id))
        event = CloudEvent.model_validate_json(message.body)
        order[event.subject].append(event.sequence)
    return order


async def test_per_stream_order_is_kept_across_large_concurrent_batches(
    store: EventStore, observer: Observer, start_relay: StartRelay
) -> None:
    await start_relay(store, batch_size=100)  # many batches
    events = await append_many(store, streams=20, per_stream=50, chunk=5)
    await observer.receive({str(e.id) for e in events}, timeout=30)

    order = sequences_by_stream(observer)
    assert len(order) == 20
    assert all(versions == list(range(1, 51)) for versions in order.values()), order
    assert len(observer.ids) == len(set(observer.ids)) == 1000


async def test_a_batch_takes_a_few_turns_of_a_busy_event_loop_not_one_per_event(
    store: EventStore, observer: Observer, start_relay: StartRelay
) -> None:
    # In a service, each turn of the event loop also runs commands, projections and consumers.
    # aiormq lets the next publish on a channel go only a turn later once its write queue is full
    # (10 frames): a batch started all at once took a turn per event.
    service = f"relay-{uuid.uuid4().hex[:6]}"
    running = await start_relay(store, service=service)
    await eventually(lambda: _true(running.relay.is_leader))
    turns = 0

    async def busy_neighbour() -> None:
        nonlocal turns
        while True:
            time.sleep(0.001)  # noqa: ASYNC251 (the other work of a turn, holding the loop)
            turns += 1
            await asyncio.sleep(0)

    neighbour = asyncio.create_task(busy_neighbour())
    try:
        events = (await store.append("agreement-busy", 0, [accepted()] * 200, META)).envelopes
        appended = turns
        async with asyncio.timeout(30):
            while (metric("accord_events_published_total", service) or 0) < 200:  # noqa: ASYNC110
                await asyncio.sleep(0)  # no turn of its own: it runs in the neighbour's turns
        published = turns
    finally:
        neighbour.cancel()
    # 20 waves of 10, reading and deleting the batch, and the broker's confirms, not 200 turns
    assert published - appended < 120, f"{published - appended} turns to publish 200 events"
    await observer.receive({str(e.id) for e in events})
    assert observer.ids == [str(e.id) for e in events]


async def test_an_event_committed_late_is_published_before_later_events_of_its_stream(
    store: EventStore, pool: asyncpg.Pool, observer: Observer, start_relay: StartRelay
) -> None:
    """A transaction holding a low position commits while the relay is past it in a drain."""
    await start_relay(store, batch_size=50)
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        late = await store.append("late", 0, [accepted()], META, conn=conn)  # low position
        background = asyncio.create_task(append_many(store, streams=10, per_stream=300, chunk=5))
        await eventually(lambda: _true(len(observer.messages) >= 500), timeout=20)
        await transaction.commit()
    later = await store.append("late", 1, [accepted()], META)
    events = [*await background, *late.envelopes, *later.envelopes]
    await observer.receive({str(e.id) for e in events}, timeout=30)

    assert sequences_by_stream(observer)["late"] == [1, 2]


async def test_relay_killed_mid_batch_delivers_every_committed_event_after_restart(
    store: EventStore, pool: asyncpg.Pool, observer: Observer, database_url: str, schema: str,
    amqp_url: str, exchange_name: str, tmp_path: Path,
) -> None:
    committed = {str(e.id) for e in await append_many(store, streams=60, per_stream=100, chunk=50)}

    async def spawn(log_name: str) -> asyncio.subprocess.Process:
        log = (tmp_path / log_name).open("wb")
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.integration.relay_process",
            "--database-url", database_url, "--schema", schema, "--amqp-url", amqp_url,
            "--exchange", exchange_name, "--batch-size", "200",
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )

    first = await spawn("first.log")
    try:
        await eventually(lambda: _true(len(observer.messages) >= 1000), timeout=30, interval=0.002)
    finally:
        first.send_signal(signal.SIGKILL)
        await asyncio.wait_for(first.wait(), 10)
    left = await outbox_size(pool)
    assert 0 < left < len(committed), "the relay was not killed mid-way"

    second = await spawn("second.log")
    try:
        await observer.receive(committed, timeout=60)
        await eventually(lambda: _true_async(outbox_size(pool), 0), timeout=10)
    finally:
        second.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(second.wait(), 30)
    assert code == 0, (tmp_path / "second.log").read_text()
    await asyncio.sleep(0.2)
    assert set(observer.ids) == committed
    assert await outbox_size(pool) == 0


async def _true_async(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def _idle_leader(running: Running, store: EventStore, observer: Observer) -> None:
    """Wait until the relay leads, has published a first event, and waits for the next ring."""
    await eventually(lambda: _true(running.relay.is_leader))
    warm_up = (await store.append(f"warm-up-{uuid.uuid4()}", 0, [accepted()], META)).envelopes
    await observer.receive({str(warm_up[0].id)})
    await asyncio.sleep(0.3)


async def published_after_append(store: EventStore, observer: Observer) -> float:
    started = time.monotonic()
    events = (await store.append(f"prompt-{uuid.uuid4()}", 0, [accepted()], META)).envelopes
    await observer.receive({str(events[0].id)}, timeout=6)
    return time.monotonic() - started


async def test_an_idle_relay_wakes_promptly_on_appends_of_this_and_other_processes(
    store: EventStore, database_url: str, schema: str, observer: Observer,
    start_relay: StartRelay,
) -> None:
    running = await start_relay(store, poll_interval=5.0)
    await _idle_leader(running, store, observer)
    assert await published_after_append(store, observer) < 0.5

    # Another "process": its own pool, store and doorbell; nothing wired to the relay's doorbell.
    other_pool = await create_pool(database_url, schema, min_size=1, max_size=2)
    other_bell = Doorbell(database_url, schema)
    await other_bell.start()
    try:
        other = EventStore(other_pool, source="/accord/test")
        other.on_append(other_bell.ring)
        for _ in range(3):
            await asyncio.sleep(0.3)  # idle again
            assert await published_after_append(other, observer) < 0.5
    finally:
        await other_bell.stop()
        await other_pool.close()


async def test_only_one_of_two_relays_publishes_and_the_other_takes_over(
    store: EventStore, pool: asyncpg.Pool, observer: Observer, start_relay: StartRelay
) -> None:
    names = [f"relay-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    relays = [await start_relay(store, service=name, leader_retry=0.2) for name in names]
    await eventually(lambda: _true(any(r.relay.is_leader for r in relays)))
    first = await append_many(store, streams=10, per_stream=20)
    await observer.receive({str(e.id) for e in first})
    await asyncio.sleep(0.5)  # time for any duplicate to show up

    assert [r.relay.is_leader for r in relays].count(True) == 1
    leader, follower = relays if relays[0].relay.is_leader else relays[::-1]
    published = {name: metric("accord_events_published_total", name) for name in names}
    assert published[leader.relay.service_name] == 200
    assert published[follower.relay.service_name] is None  # never published
    assert not [i for i, n in Counter(observer.ids).items() if n > 1]

    await leader.stop()
    second = await append_many(store, streams=10, per_stream=20, prefix="after")
    await observer.receive({str(e.id) for e in second}, timeout=10)
    await asyncio.sleep(0.3)
    assert follower.relay.is_leader
    assert metric("accord_events_published_total", follower.relay.service_name) == 200
    assert Counter(observer.ids).most_common(1)[0][1] == 1
    assert await outbox_size(pool) == 0


async def test_relay_and_doorbell_recover_when_postgres_terminates_their_connections(
    database_url: str, schema: str, pool: asyncpg.Pool, observer: Observer,
    start_relay: StartRelay,
) -> None:
    # The writer's connections are named otherwise, so only the relay's are terminated.
    writer_pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=2,
        server_settings={"search_path": schema, "application_name": "outbox-test-writer"})
    writer_bell = Doorbell(database_url, schema)
    try:
        writer = EventStore(writer_pool, source="/accord/test")
        writer.on_append(writer_bell.ring)
        await writer_bell.start()
        running = await start_relay(poll_interval=5.0)
        await _idle_leader(running, writer, observer)
        terminated = await writer_pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1", f"accord-{schema}")
        assert terminated >= 4  # relay pool, leader lock, both doorbells' LISTEN
        # Leadership is taken again and the LISTEN reconnected; appends wake the relay promptly.
        await eventually(lambda: _true(running.relay.is_leader), timeout=10)
        await asyncio.sleep(1.0)
        assert await published_after_append(writer, observer) < 0.5
        events = await append_many(writer, streams=5, per_stream=20)
        await observer.receive({str(e.id) for e in events})
        await eventually(lambda: _true_async(outbox_size(pool), 0))
    finally:
        await writer_bell.stop()
        await writer_pool.close()


async def close_broker_connection(connection_name: str) -> None:
    """Make RabbitMQ close the named client connection, as a broker restart would."""

    async def rabbitmqctl(*args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            "rabbitmqctl", "-q", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()
        return out.decode()

    listing = await rabbitmqctl("list_connections", "pid", "client_properties",
                                "--no-table-headers")
    marker = f'{{"connection_name","{connection_name}"}}'
    pids = [line.split("\t")[0] for line in listing.splitlines() if marker in line]
    assert len(pids) == 1, listing
    await rabbitmqctl("close_connection", pids[0], "test: simulated broker restart")


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl of the local broker")
async def test_relay_republishes_after_the_broker_closes_its_connection(
    store: EventStore, pool: asyncpg.Pool, observer: Observer, start_relay: StartRelay,
    amqp_url: str,
) -> None:
    service = f"relay{uuid.uuid4().hex[:6]}"
    running = await start_relay(store, service=service, url=f"{amqp_url}?reconnect_interval=0.5",
                                confirm_timeout=5.0)
    await _idle_leader(running, store, observer)
    await close_broker_connection(f"accord-outbox-{service}")
    events = await append_many(store, streams=5, per_stream=40)
    await observer.receive({str(e.id) for e in events}, timeout=30)
    await eventually(lambda: _true_async(outbox_size(pool), 0))
    assert running.relay.is_leader


async def test_relay_stops_promptly_while_the_broker_is_unreachable_and_keeps_the_rows(
    store: EventStore, pool: asyncpg.Pool, start_relay: StartRelay
) -> None:
    await store.append("waiting", 0, [accepted(), accepted()], META)
    running = await start_relay(store, url="amqp://guest:guest@127.0.0.1:1/")  # nothing listens
    await asyncio.sleep(0.5)
    started = time.monotonic()
    await running.stop()
    assert time.monotonic() - started < 2
    assert await outbox_size(pool) == 2


async def test_doorbell_wakes_every_waiter_and_coalesces_notifications(
    database_url: str, schema: str
) -> None:
    bell = Doorbell(database_url, schema, poll_interval=0.05)
    listener = await asyncpg.connect(database_url)
    notified: list[int] = []
    await listener.add_listener(bell.channel, lambda conn, pid, channel, payload: notified.append(pid))
    await bell.start()
    try:
        called: list[int] = []
        bell.subscribe(lambda: called.append(1))
        first, second = bell.waiter(), bell.waiter()
        assert not await first.wait()  # the poll interval passes: not rung
        assert await bell.wait()  # a task's first wait returns at once
        assert not await bell.wait()

        for _ in range(100):
            bell.ring()
        assert await first.wait() and await second.wait() and await bell.wait()
        assert not await first.wait()  # one ring (or a hundred) wakes each waiter once
        await asyncio.sleep(0.02)
        for _ in range(100):
            bell.ring()
        await eventually(lambda: _true(len(notified) >= 2))
        await asyncio.sleep(0.2)
        assert len(called) == 200
        assert 2 <= len(notified) <= 4, notified  # 200 rings, a NOTIFY or two per burst
    finally:
        await bell.stop()
        await listener.close()
