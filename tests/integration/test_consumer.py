"""The bus consumer against real RabbitMQ and PostgreSQL: inbox dedup, dead letters, retries,
upcasting, broker restarts and inbox replay."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import asyncpg
import prometheus_client
import pytest
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import ChannelNotFoundEntity

from accord_runtime.consumer import BusConsumer, EventHandler, replay_inbox
from accord_runtime.eventstore import EventStore, Metadata
from accord_runtime.former_consumers import drain_and_delete
from contracts import CloudEvent, EventData, EventRegistry
from contracts.agreements import AgreementActivated, AgreementDrafted, AgreementProposed
from tests.support import eventually

pytestmark = pytest.mark.servers

DRAFTED = AgreementDrafted.event_type()
ACTIVATED = AgreementActivated.event_type()


class AgreementStatus:
    """A test read model: agreement id → last status, and how many events were applied to it."""

    name = "agreement_status"
    handles = frozenset({DRAFTED, ACTIVATED})

    def __init__(self) -> None:
        self.calls: Counter[uuid.UUID] = Counter()  # apply() calls per event id, committed or not

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        self.calls[event.id] += 1
        if event.subject == "explode":
            raise RuntimeError("the handler exploded on purpose")
        await conn.execute(
            """INSERT INTO agreement_status (agreement_id, status, events) VALUES ($1, $2, 1)
               ON CONFLICT (agreement_id)
               DO UPDATE SET status = EXCLUDED.status, events = agreement_status.events + 1""",
            uuid.UUID(event.data["agreement_id"]),
            "drafted" if event.type == DRAFTED else "active",
        )

    async def clear(self, conn: asyncpg.Connection) -> None:
        await conn.execute("DELETE FROM agreement_status")


class Recorder:
    """Remembers the events it was given (for the upcasting test)."""

    def __init__(self, handles: set[str]) -> None:
        self.name = "recorder"
        self.handles = frozenset(handles)
        self.events: list[CloudEvent] = []

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        self.events.append(event)

    async def clear(self, conn: asyncpg.Connection) -> None:
        self.events.clear()


def envelope(data: EventData, *, subject: str | None = None, event_type: str | None = None,
             raw_data: dict[str, Any] | None = None) -> CloudEvent:
    return CloudEvent(
        id=uuid.uuid4(),
        source="/accord/agreements",
        type=event_type or data.event_type(),
        subject=subject or f"agreement-{uuid.uuid4()}",
        time=datetime.now(UTC),
        data=raw_data if raw_data is not None else data.model_dump(mode="json"),
        sequence=1,
        correlationid=uuid.uuid4(),
        actor="user:test",
    )


def drafted(agreement: uuid.UUID, **kwargs: Any) -> CloudEvent:
    data = AgreementDrafted(
        agreement_id=agreement, title="Hosting", drafted_by_side="client",
        client_organisation_id=uuid.uuid4(), provider_organisation_id=uuid.uuid4(),
    )
    return envelope(data, **kwargs)


def activated(agreement: uuid.UUID, **kwargs: Any) -> CloudEvent:
    return envelope(AgreementActivated(agreement_id=agreement, agreement_version=1), **kwargs)


def consumed(consumer: BusConsumer, outcome: str) -> float:
    labels = {"service": consumer.service, "consumer": consumer.consumer_name, "outcome": outcome}
    value = prometheus_client.REGISTRY.get_sample_value("accord_events_consumed_total", labels)
    return value or 0.0


async def read_model(db: asyncpg.Pool | asyncpg.Connection) -> dict[uuid.UUID, tuple[str, int]]:
    rows = await db.fetch("SELECT agreement_id, status, events FROM agreement_status")
    return {row["agreement_id"]: (row["status"], row["events"]) for row in rows}


class Bus:
    """Starts consumers on this test's exchange, publishes to it, and reads their DLQs."""

    def __init__(self, pool: asyncpg.Pool, amqp_url: str, exchange_name: str,
                 channel: aio_pika.abc.AbstractChannel,
                 exchange: aio_pika.abc.AbstractExchange) -> None:
        self.pool, self.amqp_url, self.exchange_name = pool, amqp_url, exchange_name
        self.channel, self.exchange = channel, exchange
        self.consumers: list[BusConsumer] = []

    def build(self, *handlers: EventHandler, name: str | None = None, **options: Any) -> BusConsumer:
        """A consumer on this test's exchange, not started (cleaned up after the test)."""
        consumer = BusConsumer(
            pool=self.pool, amqp_url=self.amqp_url, exchange_name=self.exchange_name,
            service_name="billing", consumer_name=name or f"projector{uuid.uuid4().hex[:8]}",
            handlers=handlers, queue_prefix=self.exchange_name, prefetch=16,
            retry_delay=0.05, max_retry_delay=0.5, **options,
        )
        self.consumers.append(consumer)
        return consumer

    async def consumer(self, *handlers: EventHandler, name: str | None = None,
                       **options: Any) -> BusConsumer:
        consumer = self.build(*handlers, name=name, **options)
        await consumer.start()
        return consumer

    async def exists(self, queue_name: str) -> bool:
        async with await aio_pika.connect(self.amqp_url) as connection:
            channel = await connection.channel()
            try:
                await channel.declare_queue(queue_name, passive=True)
            except ChannelNotFoundEntity:
                return False
            return True

    async def publish(self, message: CloudEvent | bytes, routing_key: str | None = None) -> None:
        if isinstance(message, CloudEvent):
            body = message.model_dump_json().encode()
            routing_key = routing_key or message.routing_key
        else:
            body = message
        assert routing_key is not None
        await self.exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                             content_type="application/cloudevents+json"),
            routing_key=routing_key,
        )

    async def dead_letters(self, consumer: BusConsumer, count: int, within: float = 10.0,
                           ) -> list[AbstractIncomingMessage]:
        """Exactly `count` messages from the consumer's DLQ (and none more after a short wait)."""
        queue = await self.channel.declare_queue(consumer.dlq_name, passive=True)
        found: list[AbstractIncomingMessage] = []

        async def drained() -> bool:
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                found.append(message)
            return len(found) >= count

        await eventually(drained, timeout=within)
        await asyncio.sleep(0.3)
        await drained()
        assert len(found) == count, [m.headers for m in found]
        return found

    async def ready_messages(self, queue_name: str) -> int:
        queue = await self.channel.declare_queue(queue_name, passive=True)
        assert queue.declaration_result.message_count is not None
        return queue.declaration_result.message_count


@pytest.fixture
async def bus(pool: asyncpg.Pool, amqp_url: str, exchange_name: str,
              amqp_connection: aio_pika.abc.AbstractRobustConnection) -> AsyncIterator[Bus]:
    await pool.execute(
        "CREATE TABLE agreement_status"
        " (agreement_id uuid PRIMARY KEY, status text NOT NULL, events int NOT NULL)"
    )
    channel = await amqp_connection.channel()
    exchange = await channel.declare_exchange(
        exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
    )
    bus = Bus(pool, amqp_url, exchange_name, channel, exchange)
    yield bus
    for consumer in bus.consumers:
        await consumer.stop(grace_period=5)
    # A connection of its own: the test may have restarted the broker under the fixture's one.
    connection = await aio_pika.connect(amqp_url)
    try:
        cleanup = await connection.channel()
        for name in {n for c in bus.consumers for n in (c.queue_name, c.dlq_name)}:
            await cleanup.queue_delete(name, if_unused=False, if_empty=False)
        await cleanup.exchange_delete(exchange_name)
    finally:
        await connection.close()


async def test_events_are_applied_to_the_read_model(bus: Bus, pool: asyncpg.Pool) -> None:
    consumer = await bus.consumer(AgreementStatus())
    assert consumer.routing_keys == {"agreements.AgreementDrafted", "agreements.AgreementActivated"}
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    events = [drafted(first), drafted(second), drafted(third), activated(first), activated(second)]
    for event in events:
        await bus.publish(event)

    expected = {first: ("active", 2), second: ("active", 2), third: ("drafted", 1)}

    async def applied() -> bool:
        return await read_model(pool) == expected

    await eventually(applied)
    assert consumed(consumer, "handled") == 5
    rows = await pool.fetch("SELECT consumer, event_type FROM inbox ORDER BY position")
    assert [r["event_type"] for r in rows] == [DRAFTED] * 3 + [ACTIVATED] * 2
    assert {r["consumer"] for r in rows} == {consumer.consumer_name}


async def test_duplicate_deliveries_are_applied_once(bus: Bus, pool: asyncpg.Pool) -> None:
    projection = AgreementStatus()
    consumer = await bus.consumer(projection)
    agreement = uuid.uuid4()
    first = drafted(agreement)
    for _ in range(3):
        await bus.publish(first)
    await bus.publish(activated(agreement))

    async def settled() -> bool:
        return consumed(consumer, "handled") == 2 and consumed(consumer, "duplicate") == 2

    await eventually(settled)
    assert await read_model(pool) == {agreement: ("active", 2)}
    assert projection.calls[first.id] == 1
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 2


async def test_bad_messages_are_dead_lettered_with_their_cause(
    bus: Bus, pool: asyncpg.Pool
) -> None:
    projection = AgreementStatus()
    consumer = await bus.consumer(projection)
    exploding = drafted(uuid.uuid4(), subject="explode")
    invalid = {"agreement_id": "not-a-uuid", "agreement_version": 0}
    bad_data = activated(uuid.uuid4(), raw_data=invalid)
    newer = activated(uuid.uuid4(), event_type="accord.agreements.AgreementActivated.v9")
    await bus.publish(b'{"specversion": "1.0", "id": ', routing_key="agreements.AgreementActivated")
    await bus.publish(bad_data)
    await bus.publish(newer)
    await bus.publish(exploding)
    # Readable but handled by nobody here (it arrived under a bound routing key): acked, ignored.
    misrouted = envelope(AgreementProposed(agreement_id=uuid.uuid4(), proposed_by_side="client"))
    await bus.publish(misrouted, routing_key="agreements.AgreementDrafted")
    good = uuid.uuid4()
    await bus.publish(drafted(good))

    async def good_one_applied() -> bool:
        return good in await read_model(pool)

    await eventually(good_one_applied)
    letters = await bus.dead_letters(consumer, 4)
    by_stage = {m.headers["x-accord-error-stage"]: m for m in letters}
    assert set(by_stage) == {"envelope", "data", "type", "handler"}
    assert by_stage["envelope"].body == b'{"specversion": "1.0", "id": '
    assert by_stage["envelope"].headers["x-accord-error-type"] == "ValidationError"
    assert by_stage["data"].headers["x-accord-error-type"] == "ValidationError"
    assert "agreement_version" in str(by_stage["data"].headers["x-accord-error"])
    assert by_stage["type"].headers["x-accord-error-type"] == "UnknownEventType"
    assert "AgreementActivated.v9" in str(by_stage["type"].headers["x-accord-error"])
    assert by_stage["handler"].headers["x-accord-error-type"] == "RuntimeError"
    assert by_stage["handler"].headers["x-accord-handler"] == "agreement_status"
    assert json.loads(by_stage["handler"].body)["id"] == str(exploding.id)
    for letter in letters:
        headers = letter.headers
        assert headers["x-accord-error"]
        assert headers["x-accord-consumer"] == consumer.consumer_name
        assert datetime.fromisoformat(str(headers["x-accord-failed-at"])).tzinfo is not None
        assert letter.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    # Nothing loops: each bad message was seen once (twice if it came in a batch, which rolled
    # back), the queue is empty, the counters settled.
    assert projection.calls[exploding.id] in (1, 2)
    assert consumed(consumer, "dead_lettered") == 4
    assert consumed(consumer, "ignored") == 1
    assert consumed(consumer, "handled") == 1
    assert await bus.ready_messages(consumer.queue_name) == 0
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 1  # the exploded one rolled back


class AgreementActivatedV2(EventData):
    """A future version of AgreementActivated, known only to the test's private registry."""

    EVENT_SERVICE = "agreements"
    EVENT_NAME = "AgreementActivated"
    EVENT_VERSION = 2
    agreement_id: uuid.UUID
    agreement_version: int
    activated_by: str


def registry_with_v2() -> EventRegistry:
    registry = EventRegistry()
    registry.register(AgreementActivated)
    registry.register(AgreementActivatedV2)

    @registry.upcaster("agreements", "AgreementActivated", 1)
    def add_activated_by(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "activated_by": "unknown"}

    return registry


async def test_older_versions_are_upcast(bus: Bus, pool: asyncpg.Pool) -> None:
    registry = registry_with_v2()
    v2 = AgreementActivatedV2.event_type()
    recorder = Recorder({v2})
    consumer = await bus.consumer(recorder, registry=registry)
    old = activated(uuid.uuid4())
    current = envelope(
        AgreementActivatedV2(agreement_id=uuid.uuid4(), agreement_version=3, activated_by="ops")
    )
    await bus.publish(old)
    await bus.publish(current)

    async def both_handled() -> bool:
        return len(recorder.events) == 2

    await eventually(both_handled)
    upcast, as_sent = recorder.events
    assert (upcast.id, upcast.type) == (old.id, v2)
    assert upcast.data == {**old.data, "activated_by": "unknown"}
    assert (as_sent.id, as_sent.type, as_sent.data["activated_by"]) == (current.id, v2, "ops")
    # The inbox keeps what was received; a replay upcasts it again.
    stored = await pool.fetch("SELECT event_type FROM inbox ORDER BY position")
    assert [r["event_type"] for r in stored] == [ACTIVATED, v2]
    await consumer.stop()
    replayed = Recorder({v2})
    assert await replay_inbox(pool, [consumer.consumer_name], [replayed], registry=registry) == 2
    assert replayed.events == recorder.events


class DatabaseOutage(AgreementStatus):
    """Terminates every connection of the consumer's pool when it is in the middle of `trigger`."""

    def __init__(self, database_url: str, schema: str, trigger: uuid.UUID | None = None) -> None:
        super().__init__()
        self.database_url, self.schema, self.trigger = database_url, schema, trigger

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        if event.id == self.trigger and self.calls[event.id] == 0:
            await terminate_pool_connections(self.database_url, self.schema)
        await super().apply(conn, event)


async def terminate_pool_connections(database_url: str, schema: str) -> int:
    admin = await asyncpg.connect(database_url)
    try:
        killed = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = $1 AND pid <> pg_backend_pid()",
            f"accord-{schema}",
        )
    finally:
        await admin.close()
    return len(killed)


async def test_a_lost_database_connection_is_retried_not_dead_lettered(
    bus: Bus, pool: asyncpg.Pool, database_url: str, schema: str
) -> None:
    agreement = uuid.uuid4()
    event = drafted(agreement)
    projection = DatabaseOutage(database_url, schema, trigger=event.id)
    consumer = await bus.consumer(projection)
    await bus.publish(event)

    async def handled() -> bool:
        return consumed(consumer, "handled") == 1

    await eventually(handled)
    assert projection.calls[event.id] == 2  # the first attempt rolled back with its connection
    assert await read_model(pool) == {agreement: ("drafted", 1)}
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 1
    assert consumed(consumer, "dead_lettered") == 0
    await bus.dead_letters(consumer, 0, within=0.5)


async def test_connections_killed_during_a_burst_lose_and_double_nothing(
    bus: Bus, database_url: str, schema: str
) -> None:
    consumer = await bus.consumer(AgreementStatus())
    agreements = [uuid.uuid4() for _ in range(60)]
    for agreement in agreements:
        await bus.publish(drafted(agreement))
    killed = 0
    for _ in range(5):
        await asyncio.sleep(0.02)
        killed += await terminate_pool_connections(database_url, schema)
    assert killed > 0
    # Read on a connection of its own, which the kills above do not touch.
    verifier = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        async def all_applied() -> bool:
            return len(await read_model(verifier)) == len(agreements)

        await eventually(all_applied, timeout=30)
        assert await read_model(verifier) == {a: ("drafted", 1) for a in agreements}
        assert await verifier.fetchval("SELECT count(*) FROM inbox") == len(agreements)
    finally:
        await verifier.close()
    # A commit whose connection died right after it is redelivered and then seen as a duplicate.
    assert consumed(consumer, "handled") + consumed(consumer, "duplicate") >= len(agreements)
    assert consumed(consumer, "dead_lettered") == 0
    await bus.dead_letters(consumer, 0, within=0.5)


class Slow(AgreementStatus):
    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        await asyncio.sleep(0.02)
        await super().apply(conn, event)


async def test_stop_leaves_unstarted_messages_for_the_next_consumer(
    bus: Bus, pool: asyncpg.Pool
) -> None:
    name = f"slow{uuid.uuid4().hex[:8]}"
    first = await bus.consumer(Slow(), name=name, batch_size=4)  # stop finishes the batch in hand
    agreements = [uuid.uuid4() for _ in range(20)]
    for agreement in agreements:
        await bus.publish(drafted(agreement))

    async def some_handled() -> bool:
        return consumed(first, "handled") >= 2

    await eventually(some_handled)
    await first.stop()
    assert consumed(first, "handled") < len(agreements)
    second = await bus.consumer(AgreementStatus(), name=name)

    async def all_applied() -> bool:
        return len(await read_model(pool)) == len(agreements)

    await eventually(all_applied)
    assert await read_model(pool) == {a: ("drafted", 1) for a in agreements}
    assert second.queue_name == first.queue_name


async def _backlog(bus: Bus, name: str, events: list[CloudEvent]) -> None:
    """Declare the consumer's queue, then publish `events` to it with no consumer attached."""
    await (await bus.consumer(AgreementStatus(), name=name)).stop()
    for event in events:
        await bus.publish(event)


async def test_a_backlog_is_handled_in_batches_in_order(bus: Bus, pool: asyncpg.Pool) -> None:
    """Messages waiting behind one another share a transaction, and are applied in their order;
    an event delivered twice in one batch is applied once."""
    name = f"batched{uuid.uuid4().hex[:8]}"
    agreements = [uuid.uuid4() for _ in range(40)]
    backlog = []
    for agreement in agreements:
        first = drafted(agreement)
        backlog += [first, first, activated(agreement)]
    await _backlog(bus, name, backlog)
    consumer = await bus.consumer(AgreementStatus(), name=name)

    async def all_applied() -> bool:
        return consumed(consumer, "handled") == 80 and consumed(consumer, "duplicate") == 40

    await eventually(all_applied)
    assert await read_model(pool) == {a: ("active", 2) for a in agreements}
    inbox = await pool.fetch("SELECT xmin::text AS tx, envelope->'data'->>'agreement_id' AS agreement, event_type"
                             " FROM inbox ORDER BY position")
    assert len({row["tx"] for row in inbox}) < 40  # shared transactions
    for agreement in agreements:  # each agreement's events kept their order
        assert [r["event_type"] for r in inbox if r["agreement"] == str(agreement)] == [DRAFTED, ACTIVATED]


async def test_a_failing_message_in_a_batch_fails_alone(bus: Bus, pool: asyncpg.Pool) -> None:
    """A handler failing on one message of a batch: the batch rolls back and is handled message
    by message, so the others are applied (once) and only the culprit is dead-lettered."""
    name = f"batched{uuid.uuid4().hex[:8]}"
    good = [uuid.uuid4() for _ in range(30)]
    exploding = drafted(uuid.uuid4(), subject="explode")
    await _backlog(bus, name, [*(drafted(a) for a in good[:15]), exploding, *(drafted(a) for a in good[15:])])
    projection = AgreementStatus()
    consumer = await bus.consumer(projection, name=name)

    async def settled() -> bool:
        return consumed(consumer, "handled") + consumed(consumer, "dead_lettered") == 31

    await eventually(settled)
    (letter,) = await bus.dead_letters(consumer, 1)
    assert json.loads(letter.body)["id"] == str(exploding.id)
    assert letter.headers["x-accord-error-stage"] == "handler"
    assert await read_model(pool) == {a: ("drafted", 1) for a in good}
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 30
    assert 1 <= projection.calls[exploding.id] <= 2  # in its batch (rolled back), then alone


class StatusWitness:
    """A policy on activations: notes the read model's row of the agreement as it sees it then."""

    name = "status_witness"
    handles = frozenset({ACTIVATED})

    def __init__(self) -> None:
        self.seen: dict[uuid.UUID, tuple[str, int] | None] = {}

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        agreement = uuid.UUID(event.data["agreement_id"])
        self.seen[agreement] = (await read_model(conn)).get(agreement)


async def test_a_policy_sees_the_projections_of_its_consumer_up_to_its_event(bus: Bus, pool: asyncpg.Pool) -> None:
    """In a batch, the projections fold the events between two a policy handles at once, and
    each event the policy handles has gone through the handlers before it (here: the projection)
    and everything that preceded it — the order one-by-one handling gives."""
    name = f"mixed{uuid.uuid4().hex[:8]}"
    agreements = [uuid.uuid4() for _ in range(30)]
    backlog = [drafted(a) for a in agreements[:15]]
    for first, second in zip(agreements[:15], agreements[15:], strict=True):
        backlog += [activated(first), drafted(second)]
    await _backlog(bus, name, backlog)
    witness = StatusWitness()
    consumer = await bus.consumer(AgreementStatus(), witness, name=name)

    async def all_handled() -> bool:
        return consumed(consumer, "handled") == 45

    await eventually(all_handled)
    assert witness.seen == {a: ("active", 2) for a in agreements[:15]}
    assert await read_model(pool) == {**{a: ("active", 2) for a in agreements[:15]},
                                      **{a: ("drafted", 1) for a in agreements[15:]}}
    assert len({r["tx"] for r in await pool.fetch("SELECT xmin::text AS tx FROM inbox")}) < 45


class Proposer:
    """A policy: proposes every agreement drafted elsewhere, in the consumer's transaction."""

    name = "proposer"
    handles = frozenset({DRAFTED})

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        agreement = uuid.UUID(event.data["agreement_id"])
        await EventStore.on_connection(conn, "/accord/billing").append(
            f"proposal-{agreement}", 0, [AgreementProposed(agreement_id=agreement, proposed_by_side="client")],
            Metadata.new("system:billing"))


async def test_the_doorbell_rings_only_after_handlers_left_work(bus: Bus, pool: asyncpg.Pool) -> None:
    """A read model fed from the bus leaves nothing for the service's workers: no ring after its
    commits. A policy that appended events: a ring after the commit, with the events stored."""
    rings = {"projection": 0, "policy": 0}

    def ring(who: str) -> Callable[[], None]:
        def count() -> None:
            rings[who] += 1
        return count

    projection = await bus.consumer(AgreementStatus(), on_commit=ring("projection"))
    policy = await bus.consumer(Proposer(), on_commit=ring("policy"))
    agreements = [uuid.uuid4() for _ in range(5)]
    for agreement in agreements:
        await bus.publish(drafted(agreement))

    async def all_handled() -> bool:
        return consumed(projection, "handled") == 5 and consumed(policy, "handled") == 5

    await eventually(all_handled)
    assert rings["projection"] == 0
    assert 1 <= rings["policy"] <= 5
    assert await pool.fetchval("SELECT count(*) FROM events WHERE stream_id LIKE 'proposal-%'") == 5


async def test_the_broker_dead_letters_a_message_past_its_delivery_limit(bus: Bus) -> None:
    """The backstop for a process that dies on a message every time (here: a consumer that
    keeps returning it): the queue's own delivery limit moves it to the DLQ."""
    # Without a single active consumer: basic.get, used below to play the crashing process, is
    # refused on such queues; the broker's delivery limit works the same either way.
    consumer = await bus.consumer(AgreementStatus(), delivery_limit=2, single_active_consumer=False)
    await consumer.stop()
    await bus.publish(drafted(uuid.uuid4()))
    queue = await bus.channel.declare_queue(consumer.queue_name, passive=True)
    returned = 0

    async def dead_lettered_by_the_broker() -> bool:
        nonlocal returned
        message = await queue.get(fail=False)
        if message is not None:
            await message.nack(requeue=True)
            returned += 1
        return message is None and await bus.ready_messages(consumer.dlq_name) == 1

    await eventually(dead_lettered_by_the_broker)
    assert returned == 3  # delivered three times: the third return passed the limit of 2
    (letter,) = await bus.dead_letters(consumer, 1)
    assert letter.headers["x-first-death-reason"] == "delivery_limit"
    assert letter.headers["x-first-death-queue"] == consumer.queue_name


async def rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, output.decode(errors="replace")


async def test_the_consumer_comes_back_after_a_broker_restart(
    bus: Bus, pool: asyncpg.Pool, amqp_url: str
) -> None:
    local = urlsplit(amqp_url).hostname in ("127.0.0.1", "localhost")
    if shutil.which("rabbitmqctl") is None or not local:
        pytest.skip("needs a local RabbitMQ that rabbitmqctl controls")
    consumer = await bus.consumer(Slow())
    agreements = [uuid.uuid4() for _ in range(40)]
    for agreement in agreements:
        await bus.publish(drafted(agreement))

    async def some_handled() -> bool:
        return consumed(consumer, "handled") >= 5

    await eventually(some_handled)
    # Restart with messages in flight: delivered, some being handled, none of them lost.
    await rabbitmqctl("stop_app")
    try:
        with pytest.raises((OSError, aio_pika.exceptions.AMQPError)):  # the broker is really down
            await aio_pika.connect(amqp_url, timeout=2)
        await asyncio.sleep(1)
    finally:
        await rabbitmqctl("start_app")
    await rabbitmqctl("await_startup")

    async def published_after_restart() -> bool:
        try:
            connection = await aio_pika.connect(amqp_url, timeout=5)
        except (OSError, aio_pika.exceptions.AMQPError):
            return False
        try:
            channel = await connection.channel()
            exchange = await channel.get_exchange(bus.exchange_name)
            message = aio_pika.Message(activated(agreements[0]).model_dump_json().encode(),
                                       delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await exchange.publish(message, routing_key="agreements.AgreementActivated")
        finally:
            await connection.close()
        return True

    await eventually(published_after_restart, timeout=30, interval=0.5)
    expected = {agreements[0]: ("active", 2), **{a: ("drafted", 1) for a in agreements[1:]}}

    async def all_applied() -> bool:
        return await read_model(pool) == expected

    await eventually(all_applied, timeout=60, interval=0.2)
    assert consumed(consumer, "dead_lettered") == 0


async def test_replay_rebuilds_the_same_read_model(bus: Bus, pool: asyncpg.Pool) -> None:
    projection = AgreementStatus()
    consumer = await bus.consumer(projection)
    agreements = [uuid.uuid4() for _ in range(5)]
    events = [drafted(a) for a in agreements] + [activated(a) for a in agreements[:3]]
    for event in events + events[:2]:  # two duplicates, which the inbox keeps out
        await bus.publish(event)

    async def settled() -> bool:
        return consumed(consumer, "handled") == len(events) and consumed(consumer, "duplicate") == 2

    await eventually(settled)
    await consumer.stop()
    incremental = await read_model(pool)
    await pool.execute("UPDATE agreement_status SET status = 'corrupted', events = 99")
    await pool.execute("INSERT INTO agreement_status VALUES ($1, 'stray', 1)", uuid.uuid4())
    assert await replay_inbox(pool, [consumer.consumer_name], [projection]) == len(events)
    assert await read_model(pool) == incremental
    assert incremental == {**{a: ("active", 2) for a in agreements[:3]},
                           **{a: ("drafted", 1) for a in agreements[3:]}}
    # Another consumer's inbox rows are not replayed into this one's projections.
    assert await replay_inbox(pool, ["someone-else"], [AgreementStatus()]) == 0
    assert await read_model(pool) == {}


async def test_a_transient_failure_is_retried_in_place_so_order_holds(
    bus: Bus, pool: asyncpg.Pool, database_url: str, schema: str
) -> None:
    """The message that met a lost connection is retried before the ones queued behind it."""
    agreement = uuid.uuid4()
    events = [drafted(agreement), activated(agreement), activated(agreement)]
    consumer = await bus.consumer(DatabaseOutage(database_url, schema, trigger=events[0].id))
    for event in events:
        await bus.publish(event)

    async def handled() -> bool:  # not a query: the outage also kills this test's pooled connections
        return consumed(consumer, "handled") == 3

    await eventually(handled)
    applied = await pool.fetch("SELECT event_id FROM inbox ORDER BY position")
    assert [row["event_id"] for row in applied] == [e.id for e in events]
    assert consumed(consumer, "dead_lettered") == 0


async def test_replicas_take_turns_so_one_queue_keeps_its_order(bus: Bus, pool: asyncpg.Pool) -> None:
    """Two replicas of one consumer: a single active consumer, the other on standby until it goes."""
    first, second = AgreementStatus(), AgreementStatus()
    replica_a = await bus.consumer(first, name="replicated")
    replica_b = await bus.consumer(second, name="replicated")
    assert replica_a.queue_name == replica_b.queue_name
    for _ in range(20):
        await bus.publish(drafted(uuid.uuid4()))
    await eventually(lambda: pool.fetchval("SELECT count(*) = 20 FROM inbox"))
    assert sorted([sum(first.calls.values()), sum(second.calls.values())]) == [0, 20]
    active, standby = (replica_a, second) if sum(first.calls.values()) else (replica_b, first)
    await active.stop()
    await bus.publish(drafted(uuid.uuid4()))
    await eventually(lambda: pool.fetchval("SELECT count(*) = 21 FROM inbox"))
    assert sum(standby.calls.values()) == 1  # the standby took over


async def test_a_former_consumers_queue_is_drained_then_deleted(bus: Bus, pool: asyncpg.Pool) -> None:
    """What waited in the queue of a consumer merged into another is applied under its own name
    (its inbox), then the queue and its empty dead-letter queue are deleted."""
    former = f"former{uuid.uuid4().hex[:8]}"
    agreements = [uuid.uuid4() for _ in range(12)]
    await _backlog(bus, former, [drafted(a) for a in agreements])
    built: list[BusConsumer] = []

    def former_consumer() -> BusConsumer:
        built.append(bus.build(AgreementStatus(), name=former))
        return built[-1]

    await asyncio.wait_for(drain_and_delete(former_consumer, bus.amqp_url, bus.exchange_name, poll_interval=0.05), 30)
    assert await read_model(pool) == {a: ("drafted", 1) for a in agreements}
    assert await pool.fetchval("SELECT count(*) FROM inbox WHERE consumer = $1", former) == 12
    assert not await bus.exists(built[0].queue_name)
    assert not await bus.exists(built[0].dlq_name)
    # Nothing left to do the next time the service starts.
    await asyncio.wait_for(drain_and_delete(former_consumer, bus.amqp_url, bus.exchange_name, poll_interval=0.05), 10)
    assert not await bus.exists(built[0].queue_name)


async def test_a_former_consumers_dead_letters_are_kept(bus: Bus, pool: asyncpg.Pool) -> None:
    former = f"former{uuid.uuid4().hex[:8]}"
    good = [uuid.uuid4() for _ in range(5)]
    await _backlog(bus, former, [*(drafted(a) for a in good), drafted(uuid.uuid4(), subject="explode")])
    consumer = bus.build(AgreementStatus(), name=former)
    await asyncio.wait_for(drain_and_delete(lambda: consumer, bus.amqp_url, bus.exchange_name, poll_interval=0.05), 30)
    assert await read_model(pool) == {a: ("drafted", 1) for a in good}
    assert not await bus.exists(consumer.queue_name)
    (letter,) = await bus.dead_letters(consumer, 1)
    assert letter.headers["x-accord-error-stage"] == "handler"


async def test_replay_takes_each_event_once_from_a_consumer_and_its_former_one(
        bus: Bus, pool: asyncpg.Pool) -> None:
    """Events stored by both the merged consumer and the one it replaced (while both queues were
    bound) are replayed once, in the order they first arrived."""
    merged, former = await bus.consumer(AgreementStatus()), await bus.consumer(AgreementStatus())
    agreements = [uuid.uuid4() for _ in range(6)]
    for agreement in agreements:
        await bus.publish(drafted(agreement))
    await eventually(lambda: pool.fetchval("SELECT count(*) = 12 FROM inbox"))
    await former.stop()
    await bus.publish(activated(agreements[0]))  # only the merged consumer gets it now
    await eventually(lambda: pool.fetchval("SELECT count(*) = 13 FROM inbox"))
    assert (await read_model(pool))[agreements[1]] == ("drafted", 2)  # applied from both queues
    replayed = await replay_inbox(pool, [merged.consumer_name, former.consumer_name], [AgreementStatus()])
    assert replayed == 7
    assert await read_model(pool) == {agreements[0]: ("active", 2), **{a: ("drafted", 1) for a in agreements[1:]}}


async def test_retiring_a_former_consumer_waits_for_the_broker(bus: Bus) -> None:
    """No broker at start: the retirement tries again later instead of failing for good."""
    unreachable = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens on port 1
    retiring = asyncio.ensure_future(drain_and_delete(
        lambda: bus.build(AgreementStatus()), unreachable, bus.exchange_name, retry_delay=0.05))
    await asyncio.sleep(0.5)
    assert not retiring.done()  # still trying (a failed connect would have ended it at once)
    retiring.cancel()
    with pytest.raises(asyncio.CancelledError):
        await retiring
