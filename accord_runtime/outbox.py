"""The transactional outbox relay: publishes committed events to RabbitMQ, at least once.

`EventStore.append` writes each event's CloudEvents JSON into ``outbox`` in the append's own
transaction. The relay reads those rows in global order, publishes them to the durable topic
exchange with publisher confirms, and deletes a row only once the broker confirmed it — so a
crash, a nack, a timeout or a lost connection at any point leaves the row to be published again
(consumers deduplicate by event id through their inbox).

A batch is published concurrently on one confirm-mode channel, in waves that fit aiormq's write
queue (`_publish_all`): messages are written to the channel in global order (aiormq serializes
writes with a FIFO lock), and confirms are awaited together; its confirmed rows are deleted
before the next batch is read, so every read starts at the lowest position left: an event that
commits late with a lower position than rows already published is still published before the
later events of its stream. One batch at a time lets the outbox fill while a batch waits for its
confirms, so batches grow with the load: under (f)'s 1,000 commands/s, batches of 6.9 events on
average against 4.75 with two in flight, and (f) was faster (bench/README.md, sixth session).
After a failure the unconfirmed rows are republished, possibly after later ones: per-stream order
holds while the broker confirms.

Only one relay per schema publishes: the leader holds a session-level advisory lock on a
dedicated connection and reads the outbox through that connection, so a relay whose
connection died (and with it the lock) cannot read another batch. Followers retry the lock
every `leader_retry` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import cast

import aio_pika
import aiormq
import asyncpg
import structlog
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection

from accord_runtime.doorbell import Doorbell
from accord_runtime.metrics import EVENTS_PUBLISHED, OUTBOX_BACKLOG, PUBLISH_FAILURES
from accord_runtime.postgres import DATABASE_ERRORS, connect
from accord_runtime.topology import CONTENT_TYPE, declare_exchange

log = structlog.get_logger(__name__)

#: What a publish raises when the broker refused it or the connection went away.
PUBLISH_ERRORS = (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError,
                  OSError)  # OSError: ConnectionError, TimeoutError

_FETCH = "SELECT global_position, event_id, routing_key, payload FROM outbox ORDER BY global_position LIMIT $1"
PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)  # written to disk by the broker
_DELETE = "DELETE FROM outbox WHERE global_position = ANY($1::bigint[])"
_TRY_LOCK = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))"


class PublishFailed(Exception):
    """Some rows of a batch were not confirmed; they stay in the outbox for the next try."""

    def __init__(self, failures: Sequence[tuple[asyncpg.Record, BaseException]]) -> None:
        self.failures = failures
        super().__init__(f"{len(failures)} events not confirmed, first error: {failures[0][1]!r}")


class LeadershipLost(Exception):
    """The connection holding the leader lock is gone, and with it the lock."""


class _LeaderLock:
    """A session-level advisory lock on a dedicated connection: held for as long as it lives."""

    def __init__(self, dsn: str, schema: str, key: str, on_lost: Callable[[], None],
                 timeout: float) -> None:
        self._dsn, self._schema, self._key, self._timeout = dsn, schema, key, timeout
        self._on_lost = on_lost
        self.conn: asyncpg.Connection | None = None
        self.held = False

    async def try_acquire(self) -> bool:
        if self.conn is None or self.conn.is_closed():
            self.conn = await connect(self._dsn, self._schema)
            self.conn.add_termination_listener(self._on_terminated)
        self.held = bool(await self.conn.fetchval(_TRY_LOCK, self._key, timeout=self._timeout))
        return self.held

    def _on_terminated(self, conn: object) -> None:
        if conn is self.conn and self.held:
            self.held = False
            self._on_lost()

    def check(self) -> asyncpg.Connection:
        """The lock's connection, to read through; LeadershipLost if the lock is gone."""
        if not self.held or self.conn is None or self.conn.is_closed():
            self.held = False
            raise LeadershipLost
        return self.conn

    async def release(self) -> None:
        """Give up the lock (and the connection: a follower reconnects when it next tries)."""
        self.held = False
        if self.conn is not None:
            conn, self.conn = self.conn, None
            try:
                await conn.close(timeout=2)
            except DATABASE_ERRORS:
                conn.terminate()


class OutboxRelay:
    """Publishes one schema's outbox to the event exchange; see the module docstring."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        schema: str,
        amqp_url: str,
        exchange_name: str,
        service_name: str,
        doorbell: Doorbell,
        *,
        batch_size: int = 500,
        confirm_timeout: float = 10.0,
        leader_retry: float = 2.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._pool = pool
        self._amqp_url = amqp_url
        self._exchange_name = exchange_name
        self.service_name = service_name
        self._batch_size = batch_size
        self._confirm_timeout = confirm_timeout
        self._leader_retry = leader_retry
        self._max_backoff = max_backoff
        self._waiter = doorbell.waiter()
        self._lock = _LeaderLock(dsn, schema, f"accord.outbox.{schema}", on_lost=self._waiter.wake,
                                 timeout=confirm_timeout)
        self._failures = 0  # consecutive, for the backoff
        self._backlog_due = 0.0  # when the backlog gauge is next counted after a drain
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopped.set()  # not running
        self._log = log.bind(service=service_name, schema=schema, exchange=exchange_name)

    @property
    def is_leader(self) -> bool:
        return self._lock.held

    async def run(self) -> None:
        """Publish the outbox until `stop()`: lead when the lock is free, else wait to take over."""
        self._stopped.clear()
        try:
            opened = await self._open_channel()
            if opened is None:
                return
            connection, channel = opened
            async with connection:
                while await self._become_leader():
                    failed = await self._lead(channel)
                    await self._lock.release()
                    if failed:
                        await self._sleep(self._backoff())
        finally:
            await self._lock.release()
            self._stopped.set()

    async def stop(self) -> None:
        """Stop once the batches in flight are confirmed or timed out (`confirm_timeout` bounds
        each broker and database call); rows not confirmed stay and are published again later."""
        self._stopping.set()
        self._waiter.wake()
        await self._stopped.wait()

    async def _open_channel(self) -> tuple[AbstractRobustConnection, AbstractRobustChannel] | None:
        """Connect (robustly: it reconnects by itself from then on), declare the exchange, and
        return the connection and the channel (with publisher confirms) to publish on."""
        while not self._stopping.is_set():
            connection = None
            try:
                connection = await aio_pika.connect_robust(
                    self._amqp_url,
                    client_properties={"connection_name": f"accord-outbox-{self.service_name}"},
                )
                channel = await connection.channel(publisher_confirms=True)
                await declare_exchange(channel, self._exchange_name)
                return connection, channel
            except PUBLISH_ERRORS as error:
                if connection is not None:
                    with contextlib.suppress(*PUBLISH_ERRORS):  # the error that matters is logged
                        await connection.close()
                delay = self._backoff()
                self._log.warning("cannot connect to the broker", error=repr(error), retry_in=delay)
                await self._sleep(delay)
        return None

    async def _become_leader(self) -> bool:
        """Wait until this relay holds the leader lock (True) or is stopping (False)."""
        while not self._stopping.is_set():
            try:
                if await self._lock.try_acquire():
                    self._log.info("outbox relay leading")
                    self._waiter.wake()  # look at once: the previous leader may have left a backlog
                    return True
                delay = self._leader_retry
            except DATABASE_ERRORS as error:
                delay = self._backoff()
                self._log.warning("cannot try the outbox leader lock", error=repr(error),
                                  retry_in=delay)
                await self._lock.release()
            await self._sleep(delay)
        return False

    async def _lead(self, channel: AbstractRobustChannel) -> bool:
        """Drain the outbox whenever rung, until stopping (False) or the lock is lost (True)."""
        while not self._stopping.is_set():
            await self._waiter.wait()
            try:
                await self._drain(channel)
            except LeadershipLost:
                self._log.warning("outbox leader lock lost")
                return True
            except DATABASE_ERRORS as error:
                # Perhaps the lock's connection died: give the lock up and take it again if free.
                self._log.warning("outbox database error", error=repr(error))
                await self._record_backlog()
                return True
            except PublishFailed as error:
                delay = self._backoff()
                self._log.warning("outbox publish failed, will retry", error=str(error),
                                  retry_in=delay)
                await self._record_backlog()
                await self._sleep(delay)
                self._waiter.wake()  # rows are left: retry them without waiting for a ring
                continue
            self._failures = 0
            if time.monotonic() >= self._backlog_due:  # a gauge: once a second is enough
                await self._record_backlog()
        return False

    def _backoff(self) -> float:
        """The next delay after a failure: doubling from 0.1 s up to `max_backoff`."""
        self._failures += 1
        return float(min(0.1 * 2 ** (self._failures - 1), self._max_backoff))

    async def _drain(self, channel: AbstractRobustChannel) -> None:
        """Publish batch after batch until the outbox is empty (or stopping)."""
        while not self._stopping.is_set():
            rows = await self._lock.check().fetch(_FETCH, self._batch_size, timeout=self._confirm_timeout)
            if not rows:
                return  # read empty: rows committed since then rang the doorbell again
            await self._publish_batch(channel, rows)

    async def _publish_batch(self, channel: AbstractRobustChannel, rows: list[asyncpg.Record]) -> None:
        """Publish `rows` concurrently, delete those confirmed; PublishFailed names the others."""
        try:
            # Bounded: a robust channel waits here for its connection to come back.
            async with asyncio.timeout(self._confirm_timeout):
                underlay = cast(aiormq.Channel, await channel.get_underlay_channel())
        except PUBLISH_ERRORS as error:
            outcomes: list[BaseException | None] = [error] * len(rows)
        else:
            outcomes = await self._publish_all(underlay, rows)
        confirmed = [row["global_position"] for row, outcome in zip(rows, outcomes, strict=True)
                     if outcome is None]
        failures = [(row, outcome) for row, outcome in zip(rows, outcomes, strict=True)
                    if outcome is not None]
        for _, outcome in failures:
            # aiormq cancels the publishes pending on a channel it closes: a failure like others.
            if not isinstance(outcome, (*PUBLISH_ERRORS, asyncio.CancelledError)):
                raise outcome  # a bug, not a broker problem
        if confirmed:
            await self._pool.execute(_DELETE, confirmed, timeout=self._confirm_timeout)
            EVENTS_PUBLISHED.labels(self.service_name).inc(len(confirmed))
        if failures:
            PUBLISH_FAILURES.labels(self.service_name).inc(len(failures))
            self._log.warning("events not confirmed by the broker",
                              event_ids=[str(row["event_id"]) for row, _ in failures[:20]],
                              failed=len(failures), confirmed=len(confirmed),
                              error=repr(failures[0][1]))
            raise PublishFailed(failures)

    async def _publish_all(self, channel: aiormq.Channel, rows: list[asyncpg.Record]) -> list[BaseException | None]:
        """Publish `rows` concurrently; per row, None if confirmed, else what went wrong.

        Started in waves no larger than the connection's write queue, a turn of the event loop
        apart: aiormq's channel lets one publish at a time put its frames in that queue (10 frames
        long), and once it is full hands the channel to the next publish only a turn later, so a
        batch started all at once took a turn of a busy event loop per message. A wave fills the
        queue, and aiormq's writer empties it in the turn between two waves.
        """
        wave = channel.write_queue.maxsize or max(len(rows), 1)  # 0: an unbounded queue
        publishes: list[asyncio.Task[None]] = []
        try:
            for start in range(0, len(rows), wave):
                if start:
                    await asyncio.sleep(0)
                publishes += [asyncio.create_task(self._publish(channel, row)) for row in rows[start:start + wave]]
            return await asyncio.gather(*publishes, return_exceptions=True)
        except BaseException:  # cancelled: so are the publishes it started
            for publish in publishes:
                publish.cancel()
            raise

    async def _publish(self, channel: aiormq.Channel, row: asyncpg.Record) -> None:
        properties = aiormq.spec.Basic.Properties(
            content_type=CONTENT_TYPE, delivery_mode=PERSISTENT, message_id=str(row["event_id"]))
        async with asyncio.timeout(self._confirm_timeout):
            # Straight to aiormq, for wait=False: aio-pika's publish waits until each message's
            # frames are on the socket before the next may start, several turns of the event
            # loop per message, which under load kept a batch's confirms waiting for tens of ms.
            # Not mandatory: an event nobody has subscribed to yet is published all the same.
            await channel.basic_publish(row["payload"], exchange=self._exchange_name,
                                        routing_key=row["routing_key"], properties=properties,
                                        mandatory=False, wait=False)

    async def _record_backlog(self) -> None:
        try:
            count = await self._pool.fetchval("SELECT count(*) FROM outbox",
                                              timeout=self._confirm_timeout)
        except DATABASE_ERRORS as error:
            self._log.warning("cannot count the outbox backlog", error=repr(error))
            return
        OUTBOX_BACKLOG.labels(self.service_name).set(count)
        self._backlog_due = time.monotonic() + 1.0

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but return early when stopping."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
