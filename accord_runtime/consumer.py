"""The bus consumer: other services' events from RabbitMQ, through the inbox, into handlers.

One `BusConsumer` owns one durable quorum queue, ``<queue_prefix>.<service>.<consumer>``, bound to
the topic exchange with the routing keys (``<service>.<EventName>``) of the types its handlers
handle. Each message is handled in a Postgres transaction: the inbox insert (the dedup key is
``(consumer, event_id)``) and every matching handler commit together, and the message is acked only
after that commit. A redelivery of a committed message therefore finds its inbox row and is acked
as a duplicate without running the handlers again. Messages already delivered and waiting when
one is taken (up to ``batch_size``) share that transaction: one inbox statement and one commit
for all. If anything in a batch fails, nothing of it is committed and its messages are handled
one by one, so that only the culprit is retried or dead-lettered.

Failures, by kind:

* Bad input (not a CloudEvent, a type this build cannot read, data failing validation) and a
  handler raising a non-transient error are published, persistent and confirmed, to
  ``<queue>.dlq`` through the default exchange, with ``x-accord-*`` headers naming the cause; only
  then is the original acked. Nothing is lost and nothing loops.
* Transient errors (lost or refused database connections, pool timeouts, serialization failures,
  OSError) roll back and are nacked with requeue, after a backoff that grows while the failures
  continue and only ends once the database answers again, so an outage does not spin through the
  broker's delivery counts.
* A message that kills the process every time is the broker's job: the queue's
  ``x-delivery-limit`` dead-letters it, through ``x-dead-letter-exchange`` ``""`` (the default
  exchange) with ``x-dead-letter-routing-key`` = the DLQ, into the same DLQ (with RabbitMQ's
  ``x-death`` headers instead of ours). On RabbitMQ 3.x a nack with requeue also counts as a
  delivery, hence the wait-for-the-database rule above.

Messages are handled in delivery order (events of one stream arrive in order, and read models
rely on it); ``prefetch`` bounds how many wait in memory.

Why aio-pika and not a FastStream subscriber (STYLE.md's default): this loop acks only after the
commit, publishes each rejected message with its cause before acking it, nacks transient failures
only once the database is back, and must survive a broker restart. In aio-pika these are direct
calls on the message and channel, and ``connect_robust`` re-declares the queue, its bindings and
its consumer after a reconnect (tested with ``rabbitmqctl stop_app``/``start_app``). Under
FastStream the same needs ``AckPolicy.MANUAL`` plus the raw aio-pika message and a second
publisher, and FastStream issue 2758 reports RabbitMQ consumers that are not restored after a
reconnect.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, cast
from uuid import UUID

import aio_pika
import asyncpg
import structlog
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

from accord_runtime.doorbell import work_left
from accord_runtime.metrics import EVENTS_CONSUMED, HANDLER_LATENCY
from accord_runtime.postgres import TRANSIENT_ERRORS
from accord_runtime.projections import EventHandler, Projection, apply_all
from accord_runtime.settings import ServiceSettings
from contracts import REGISTRY, CloudEvent, EventRegistry, UnknownEventType
from contracts.envelope import parse_type

log = structlog.get_logger(__name__)

Outcome = Literal["handled", "duplicate", "ignored", "dead_lettered"]
Stage = Literal["envelope", "type", "data", "inbox", "handler"]

RECONNECT_INTERVAL = 1.0  # seconds between aio-pika's reconnect attempts
_PUBLISH_TIMEOUT = 10.0
# Losing the broker while settling a message: it stays unacked and the broker redelivers it.
_BROKER_ERRORS = (AMQPError, ChannelInvalidStateError, ConnectionError, TimeoutError)

_INSERT_INBOX = """
INSERT INTO inbox (consumer, event_id, event_type, envelope)
SELECT $1, e.event_id, e.event_type, e.envelope::jsonb
FROM unnest($2::uuid[], $3::text[], $4::text[]) WITH ORDINALITY AS e(event_id, event_type, envelope, n)
ORDER BY e.n
ON CONFLICT DO NOTHING
RETURNING event_id
"""


def is_transient(error: BaseException) -> bool:
    return isinstance(error, TRANSIENT_ERRORS)


def routing_key(event_type: str) -> str:
    """``accord.agreements.AgreementActivated.v1`` → ``agreements.AgreementActivated``."""
    service, name, _ = parse_type(event_type)
    return f"{service}.{name}"


def readable(envelope: CloudEvent, registry: EventRegistry) -> CloudEvent:
    """The envelope with its data validated and upcast to the current version of its type.

    Raises `UnknownEventType` for a type this build cannot read, or the validation error.
    """
    event_type, data = registry.validate_current(envelope.type, envelope.data)
    return envelope.model_copy(update={"type": event_type, "data": data})


class _Received(NamedTuple):
    body: str  # the envelope as received: what the inbox keeps, to be read again on a replay
    envelope: CloudEvent  # the same, parsed
    event: CloudEvent  # as read: the data validated and upcast to the current version


class _Rejected(Exception):
    """This message can never be handled: dead-letter it with its cause."""

    def __init__(self, stage: Stage, error: Exception, handler: str | None = None) -> None:
        super().__init__(f"{stage}: {error}")
        self.stage, self.error, self.handler = stage, error, handler


class _Transient(Exception):
    """Handling failed for a reason that may pass: requeue the message."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class BusConsumer:
    """Feeds `handlers` from one durable quorum queue; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        amqp_url: str,
        exchange_name: str,
        service_name: str,
        consumer_name: str,
        handlers: Sequence[EventHandler],
        queue_prefix: str = "accord",
        prefetch: int = 64,
        registry: EventRegistry = REGISTRY,
        delivery_limit: int = 20,
        retry_delay: float = 0.2,
        max_retry_delay: float = 5.0,
        acquire_timeout: float = 10.0,
        on_commit: Callable[[], None] | None = None,
        in_place_attempts: int = 10,
        single_active_consumer: bool = True,
        max_message_bytes: int = 1024 * 1024,
        batch_size: int = 100,
    ) -> None:
        if not handlers:
            raise ValueError("a consumer needs at least one handler")
        for handler in handlers:
            for event_type in handler.handles:
                registry.model(event_type)  # fail fast: UnknownEventType for a typo or a newer type
        self.service, self.consumer_name = service_name, consumer_name
        self.queue_name = f"{queue_prefix}.{service_name}.{consumer_name}"
        self.dlq_name = f"{self.queue_name}.dlq"
        self.routing_keys = frozenset(routing_key(t) for h in handlers for t in h.handles)
        self._pool, self._amqp_url, self._exchange = pool, amqp_url, exchange_name
        self._handlers = list(handlers)
        self._prefetch, self._registry, self._delivery_limit = prefetch, registry, delivery_limit
        self._retry_delay, self._max_retry_delay = retry_delay, max_retry_delay
        self._acquire_timeout = acquire_timeout
        self._on_commit = on_commit  # ring the doorbell: after handlers appended events or set timers
        self._in_place_attempts = max(1, in_place_attempts)
        self._single_active_consumer = single_active_consumer
        self._max_message_bytes = max_message_bytes  # no Accord event comes near it
        self._batch_size = max(1, batch_size)  # messages handled in one transaction, at most
        # Events a policy handles go through the handlers one at a time (see `_segments`).
        self._policy_types = frozenset(t for h in self._handlers if not isinstance(h, Projection) for t in h.handles)
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._buffer: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._failures = 0  # consecutive transient failures, for the backoff

    @classmethod
    def from_settings(
        cls,
        settings: ServiceSettings,
        pool: asyncpg.Pool,
        consumer_name: str,
        handlers: Sequence[EventHandler],
        *,
        registry: EventRegistry = REGISTRY,
    ) -> BusConsumer:
        return cls(
            pool=pool,
            amqp_url=settings.amqp_url,
            exchange_name=settings.exchange,
            service_name=settings.service_name,
            consumer_name=consumer_name,
            handlers=handlers,
            queue_prefix=settings.queue_prefix,
            prefetch=settings.prefetch,
            registry=registry,
        )

    async def start(self) -> None:
        """Connect, declare exchange, queue, DLQ and bindings, and start consuming."""
        self._connection = await aio_pika.connect_robust(
            self._amqp_url, reconnect_interval=RECONNECT_INTERVAL,
            client_properties={"connection_name": self.queue_name},
        )
        try:
            await self._declare_and_consume(self._connection)
        except BaseException:
            await self._connection.close()
            raise
        log.info("consumer started", queue=self.queue_name, routing_keys=sorted(self.routing_keys))

    async def _declare_and_consume(self, connection: AbstractRobustConnection) -> None:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        assert isinstance(channel, AbstractRobustChannel)
        self._channel = channel
        await channel.set_qos(prefetch_count=self._prefetch)
        exchange = await channel.declare_exchange(
            self._exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        await channel.declare_queue(
            self.dlq_name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        queue = await channel.declare_queue(
            self.queue_name,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": self._delivery_limit,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": self.dlq_name,
                # One consumer at a time, the others on standby: replicas keep per-stream order.
                "x-single-active-consumer": self._single_active_consumer,
            },
        )
        for key in sorted(self.routing_keys):
            await queue.bind(exchange, routing_key=key)
        self._queue = queue
        self._consumer_tag = await queue.consume(self._on_message)  # deliveries wait in the buffer
        self._worker = asyncio.create_task(self._work(), name=f"consumer {self.queue_name}")
        self._worker.add_done_callback(self._worker_done)

    async def stop(self, grace_period: float = 30.0) -> None:
        """Stop consuming, finish the message in hand, and close.

        Messages received but not started stay unacked; closing the channel returns them to the
        queue. After `grace_period` the message in hand is cancelled (its transaction rolls back).
        """
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._queue is not None and self._consumer_tag is not None:
            try:
                # Bounded from outside: a robust channel waits for the broker to come back first.
                async with asyncio.timeout(5):
                    await self._queue.cancel(self._consumer_tag)
            except _BROKER_ERRORS as error:
                log.warning("could not cancel the consumer; closing anyway", queue=self.queue_name,
                            error=repr(error))
        self._buffer.put_nowait(None)
        if self._worker is not None:
            done, _ = await asyncio.wait({self._worker}, timeout=grace_period)
            if not done:
                self._worker.cancel()
                await asyncio.wait({self._worker})
        if self._connection is not None:
            await self._connection.close()
        log.info("consumer stopped", queue=self.queue_name)

    async def __aenter__(self) -> BusConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- receiving ------------------------------------------------------------------------------

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if not self._stopping.is_set():
            self._buffer.put_nowait(message)

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.critical("consumer worker died; no more messages are handled",
                         queue=self.queue_name, exc_info=task.exception())

    async def _work(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch is None:
                return
            try:
                if len(batch) == 1 or not await self._handle_batch(batch):
                    for message in batch:
                        with structlog.contextvars.bound_contextvars(
                                consumer=self.consumer_name, event_id=message.message_id, correlation_id=None,
                                event_type=None):
                            await self._handle(message)
            except _BROKER_ERRORS as error:
                log.warning("lost the broker while settling messages; they will be redelivered",
                            queue=self.queue_name, error=repr(error))

    async def _next_batch(self) -> list[AbstractIncomingMessage] | None:
        """The next message and those already buffered behind it (up to `batch_size`), skipping
        messages of a channel that is gone (the broker requeued them); None when stopping."""
        batch: list[AbstractIncomingMessage] = []
        while not batch:
            message = await self._buffer.get()
            # aio-pika hands over each delivery in a task of its own: let those of deliveries that
            # arrived with this one run, so that they join its batch.
            await asyncio.sleep(0)
            while True:
                if message is None or self._stopping.is_set():
                    if message is None:
                        self._buffer.put_nowait(None)  # seen again once this batch is handled
                    return batch or None
                if _channel_closed(message):
                    log.debug("skipping a message of a closed channel", queue=self.queue_name)
                else:
                    batch.append(message)
                if len(batch) >= self._batch_size or self._buffer.empty():
                    break
                message = self._buffer.get_nowait()
        return batch

    async def _handle_batch(self, batch: list[AbstractIncomingMessage]) -> bool:
        """Handle `batch` in one transaction: True if done (every message acked), False if the
        caller must handle each message on its own — a message is unreadable or a handler failed,
        and nothing was committed — so that only the culprit is retried or dead-lettered."""
        started = time.perf_counter()
        try:
            received = [self._read(message) for message in batch]
            handled = [r for r in received if any(r.event.type in h.handles for h in self._handlers)]
            stored = await self._store_and_apply(handled) if handled else set()
        except (_Rejected, _Transient):
            return False
        # One ack for the batch: every message before its last on this channel is settled.
        await batch[-1].ack(multiple=True)
        handled_ids = {r.event.id for r in handled}
        outcomes: collections.Counter[Outcome] = collections.Counter()
        for one in received:
            outcomes["handled" if one.event.id in stored else "duplicate" if one.event.id in handled_ids
                     else "ignored"] += 1
            stored.discard(one.event.id)  # the same event twice in a batch: handled once
        for outcome, count in outcomes.items():
            EVENTS_CONSUMED.labels(self.service, self.consumer_name, outcome).inc(count)
        HANDLER_LATENCY.labels(self.service, self.consumer_name).observe(time.perf_counter() - started)
        self._failures = 0
        return True

    async def _store_and_apply(self, received: list[_Received]) -> set[UUID]:
        """In one transaction, store what was received in the inbox, apply the events not seen before; return
        the ids applied. Projections fold the events between two a policy handles at once; an
        event a policy handles goes through every handler before the next one (see `_segments`).
        Raises `_Transient` or `_Rejected` (nothing committed) if that fails."""
        running: str | None = None
        noted = work_left()
        try:
            async with self._pool.acquire(timeout=self._acquire_timeout) as proxy:
                conn = cast(asyncpg.Connection, proxy)  # the pool's proxy forwards every method
                async with conn.transaction():
                    rows = await conn.fetch(
                        _INSERT_INBOX, self.consumer_name, [r.envelope.id for r in received],
                        [r.envelope.type for r in received], [r.body for r in received])
                    stored = {row["event_id"] for row in rows}
                    new = list({r.event.id: r.event for r in received if r.event.id in stored}.values())
                    for segment in self._segments(new):
                        for handler in self._handlers:
                            running = handler.name
                            await apply_all(handler, conn, segment)
        except Exception as error:
            if is_transient(error):
                raise _Transient(error) from error
            raise _Rejected("handler" if running else "inbox", error, running) from error
        if self._on_commit and work_left() != noted:
            self._on_commit()  # the handlers appended events or set timers
        return stored

    def _segments(self, events: list[CloudEvent]) -> Iterator[list[CloudEvent]]:
        """`events` cut into runs that only projections handle (folded as one batch by each) and
        single events a policy handles (each goes through every handler before the next event, the
        order a policy sees; the projections before it have folded what preceded it)."""
        run: list[CloudEvent] = []
        for event in events:
            if event.type in self._policy_types:
                if run:
                    yield run
                    run = []
                yield [event]
            else:
                run.append(event)
        if run:
            yield run

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        started = time.perf_counter()
        try:
            outcome = await self._process_in_place(message)
        except _Rejected as rejected:
            try:
                await self._dead_letter(message, rejected)
            except _BROKER_ERRORS as error:
                await self._retry_later(message, error)
                return
            outcome = "dead_lettered"
        except _Transient as transient:
            await self._retry_later(message, transient.error)
            return
        else:
            await message.ack()
            elapsed = time.perf_counter() - started
            HANDLER_LATENCY.labels(self.service, self.consumer_name).observe(elapsed)
        self._failures = 0
        EVENTS_CONSUMED.labels(self.service, self.consumer_name, outcome).inc()

    async def _process_in_place(self, message: AbstractIncomingMessage) -> Outcome:
        """`_process`, retrying the same message while the database is briefly unavailable.

        Retrying in place, rather than requeueing, keeps per-stream order: the messages behind
        this one in the queue never overtake it. After `in_place_attempts` the last `_Transient`
        propagates and the message is requeued (counting toward the queue's delivery limit, so a
        handler that fails "transiently" forever still ends in the dead-letter queue).
        """
        for attempt in range(1, self._in_place_attempts):
            try:
                return await self._process(message)
            except _Transient as transient:
                if self._stopping.is_set():
                    raise
                self._failures += 1
                delay = min(self._max_retry_delay, self._retry_delay * 2 ** (self._failures - 1))
                log.warning("transient failure; retrying the message in place", queue=self.queue_name,
                            error=repr(transient.error), attempt=attempt, delay=delay)
                await self._pause(delay)
                await self._database_answers()
        return await self._process(message)

    async def _process(self, message: AbstractIncomingMessage) -> Outcome:
        """Read, check and handle one message; raise `_Rejected` or `_Transient` if it fails."""
        received = self._read(message)
        structlog.contextvars.bind_contextvars(correlation_id=str(received.envelope.correlationid),
                                               event_type=received.envelope.type)
        if not any(received.event.type in h.handles for h in self._handlers):
            return "ignored"
        if not await self._store_and_apply([received]):
            return "duplicate"
        return "handled"

    def _read(self, message: AbstractIncomingMessage) -> _Received:
        """The message's envelope as received and as read (its data validated and upcast);
        `_Rejected` if it is unreadable."""
        if len(message.body) > self._max_message_bytes:
            raise _Rejected("envelope", ValueError(
                f"message of {len(message.body)} bytes exceeds the limit of {self._max_message_bytes} bytes"))
        try:
            envelope = CloudEvent.model_validate_json(message.body)
        except ValueError as error:  # pydantic's ValidationError, malformed JSON included
            raise _Rejected("envelope", error) from error
        try:
            return _Received(message.body.decode(), envelope, readable(envelope, self._registry))
        except UnknownEventType as error:
            raise _Rejected("type", error) from error
        except Exception as error:  # validation or a failing upcaster: the data is unreadable
            raise _Rejected("data", error) from error

    # -- failing --------------------------------------------------------------------------------

    async def _dead_letter(self, message: AbstractIncomingMessage, rejected: _Rejected) -> None:
        """Publish the message to the DLQ with its cause (persistent, confirmed), then ack it."""
        assert self._channel is not None
        headers: dict[str, Any] = dict(message.headers or {})
        headers.update({
            "x-accord-error": str(rejected.error)[:2000] or type(rejected.error).__name__,
            "x-accord-error-type": type(rejected.error).__name__,
            "x-accord-error-stage": rejected.stage,
            "x-accord-consumer": self.consumer_name,
            "x-accord-queue": self.queue_name,
            "x-accord-failed-at": datetime.now(UTC).isoformat(),
            "x-accord-original-exchange": message.exchange or "",
            "x-accord-original-routing-key": message.routing_key or "",
        })
        if rejected.handler:
            headers["x-accord-handler"] = rejected.handler
        dead = aio_pika.Message(
            message.body,
            headers=headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            timestamp=message.timestamp,
            type=message.type,
            app_id=message.app_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        log.error(
            "dead-lettering a message",
            queue=self.queue_name,
            dlq=self.dlq_name,
            stage=rejected.stage,
            handler=rejected.handler,
            event_id=_peek(message, "id"),
            event_type=_peek(message, "type"),
            error=str(rejected.error)[:2000],
            error_type=type(rejected.error).__name__,
            exc_info=rejected.error if rejected.stage in ("handler", "inbox") else None,
        )
        await self._channel.default_exchange.publish(
            dead, routing_key=self.dlq_name, mandatory=True, timeout=_PUBLISH_TIMEOUT
        )
        await message.ack()

    async def _retry_later(self, message: AbstractIncomingMessage, error: BaseException) -> None:
        """Back off, wait until the database answers, then requeue the message."""
        self._failures += 1
        delay = min(self._max_retry_delay, self._retry_delay * 2 ** (self._failures - 1))
        log.warning("transient failure; the message will be redelivered", queue=self.queue_name,
                    event_id=_peek(message, "id"), event_type=_peek(message, "type"),
                    error=repr(error), attempt=self._failures, delay=delay)
        await self._pause(delay)
        await self._database_answers()
        await message.nack(requeue=True)

    async def _database_answers(self) -> None:
        delay = self._retry_delay
        while not self._stopping.is_set():
            try:
                async with self._pool.acquire(timeout=self._acquire_timeout) as conn:
                    await conn.fetchval("SELECT 1")
                return
            except Exception as error:
                if not is_transient(error):
                    raise
                log.warning("database unavailable; waiting", queue=self.queue_name,
                            error=repr(error))
            await self._pause(delay)
            delay = min(self._max_retry_delay, delay * 2)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up as soon as `stop()` is called."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


def _channel_closed(message: AbstractIncomingMessage) -> bool:
    try:
        return message.channel.is_closed
    except ChannelInvalidStateError:
        return True


def _peek(message: AbstractIncomingMessage, field: str) -> str | None:
    """A top-level envelope field for logs, from a body that may not even be JSON."""
    try:
        body = json.loads(message.body)
    except ValueError:
        return None
    return str(body[field]) if isinstance(body, dict) and field in body else None


async def replay_inbox(
    pool: asyncpg.Pool,
    consumer_names: Sequence[str],
    projections: Iterable[Projection],
    *,
    registry: EventRegistry = REGISTRY,
    chunk: int = 1000,
) -> int:
    """Rebuild inbox-fed `projections` from the local copy; return how many envelopes were read.

    In one transaction: clear every projection, then apply each envelope the consumers stored
    (a consumer and those merged into it: an event stored by several is applied once, where it
    came first), in inbox `position` order, upcast by `registry` exactly as the live consumer does,
    a chunk at a time to each projection.
    """
    projections = list(projections)
    count = 0
    async with pool.acquire() as proxy:
        conn = cast(asyncpg.Connection, proxy)  # the pool's proxy forwards every method
        async with conn.transaction():
            for projection in projections:
                await projection.clear(conn)
            cursor = await conn.cursor(
                "SELECT envelope FROM (SELECT DISTINCT ON (event_id) envelope, position FROM inbox"
                " WHERE consumer = ANY($1::text[]) ORDER BY event_id, position) AS first ORDER BY position",
                list(consumer_names))
            while rows := await cursor.fetch(chunk):
                events = [readable(CloudEvent.model_validate(row["envelope"]), registry) for row in rows]
                for projection in projections:
                    await apply_all(projection, conn, events)
                count += len(events)
    return count
