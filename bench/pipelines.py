"""What the plain pipelines (g) and (j) share: their tables, their event, and running one.

Each is a command, an outbox relay and a consumer in plain asyncpg and aio-pika (no Accord
code), in a schema of its own and on the benchmark's exchange, consuming from a durable quorum
queue bound ``#``, declared as the far service's consumer in (f) declares its own, so that the
ratios compare the pipelines, not queue types.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import uuid
from collections.abc import AsyncIterator, Coroutine
from typing import Any, ClassVar, cast

import aio_pika
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from bench.harness import MAX_OPERATIONS, Arrivals, BenchConfig, bounded, database_of, throwaway_database
from bench.latency import CommandPath
from bench.report import Figure

ROUTING_KEY = "agreements.AgreementDrafted"
EVENT_TYPE = "accord.agreements.AgreementDrafted.v1"
POOL_SIZE = 10  # the size of an Accord service's pool (ServiceSettings.database_pool_size)
POLL_SECONDS = 0.1  # how often an idle relay looks at the outbox without a wake-up
LIFETIME = 600.0  # a relay or consumer loop stops when told, or after this long

TABLES = """
CREATE TABLE events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    uuid        NOT NULL UNIQUE,
    stream_id   text        NOT NULL,
    event_type  text        NOT NULL,
    data        jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    uuid  NOT NULL,
    routing_key text  NOT NULL,
    payload     bytea NOT NULL
);
CREATE TABLE inbox (
    event_id    uuid PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE agreement_summaries (
    agreement_id             uuid PRIMARY KEY,
    title                    text        NOT NULL,
    status                   text        NOT NULL,
    client_organisation_id   uuid        NOT NULL,
    provider_organisation_id uuid        NOT NULL,
    updated_at               timestamptz NOT NULL
);
"""


class Drafted:
    """A new agreement's AgreementDrafted event: its data, and its CloudEvents envelope."""

    def __init__(self, pipeline: str, client: uuid.UUID, provider: uuid.UUID) -> None:
        self.agreement_id, self.event_id = uuid.uuid4(), uuid.uuid4()
        self.stream_id = f"agreement-{self.agreement_id}"
        self.data = {"agreement_id": str(self.agreement_id),
                     "title": f"{pipeline} agreement {self.agreement_id.hex[:8]}", "summary": "Benchmark",
                     "client_organisation_id": str(client), "provider_organisation_id": str(provider)}
        self.envelope = {"specversion": "1.0", "id": str(self.event_id), "source": f"/{pipeline}/agreements",
                         "type": EVENT_TYPE, "subject": self.stream_id,
                         "time": datetime.datetime.now(datetime.UTC).isoformat(),
                         "datacontenttype": "application/json", "data": self.data, "sequence": 1,
                         "correlationid": str(uuid.uuid4()), "actor": "user:bench"}


class Pipeline:
    """A command, an outbox relay and a consumer; subclasses say how each works."""

    prefetch: ClassVar[int]  # unacknowledged deliveries, at most
    pool_options: ClassVar[dict[str, Any]] = {}  # for asyncpg.create_pool
    page: ClassVar[int]  # outbox rows the relay reads at once, at most

    def __init__(self, pool: asyncpg.Pool, connection: AbstractConnection, exchange_name: str,
                 arrivals: Arrivals) -> None:
        self.pool, self._connection = pool, connection
        self._exchange_name, self._arrivals = exchange_name, arrivals
        self._wake = asyncio.Event()  # set by a command: the outbox has a row
        self._stopping = asyncio.Event()
        self._client, self._provider = uuid.uuid4(), uuid.uuid4()

    async def draft(self) -> str:
        """One command; the key its result arrives under."""
        raise NotImplementedError

    async def delivered(self, message: AbstractIncomingMessage) -> None:
        """The queue's consumer callback."""
        raise NotImplementedError

    async def _publish(self, channel: AbstractChannel, rows: list[asyncpg.Record]) -> None:
        """Publish outbox `rows` (id, event_id, routing_key, payload), confirmed, and delete them."""
        raise NotImplementedError

    def loops(self) -> list[Coroutine[Any, Any, None]]:
        """What runs beside the commands until `stop`."""
        return [self._relay()]

    async def _relay(self) -> None:
        """Publish the outbox a page at a time; with nothing there, wait for a wake-up or poll."""
        channel = await self._connection.channel(publisher_confirms=True)
        try:
            for _ in bounded(LIFETIME, limit=10 * MAX_OPERATIONS):
                if self._stopping.is_set():
                    return
                self._wake.clear()
                rows = await self.pool.fetch("SELECT id, event_id, routing_key, payload FROM outbox"
                                             " ORDER BY id LIMIT $1", self.page)
                if rows:
                    await self._publish(channel, rows)
                else:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(POLL_SECONDS):
                            await self._wake.wait()
        finally:
            await channel.close()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()


@contextlib.asynccontextmanager
async def running(kind: type[Pipeline], url: str, schema: str, connection: AbstractConnection,
                  exchange_name: str, queue_name: str, arrivals: Arrivals) -> AsyncIterator[Pipeline]:
    """A pipeline of `kind` with its loops and consumer running; its queue is deleted afterwards."""
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        await admin.execute(f"SET search_path TO {schema}")
        await admin.execute(TABLES)
    finally:
        await admin.close()
    options = {**kind.pool_options}
    options["server_settings"] = {**options.get("server_settings", {}), "search_path": schema}
    pool = await asyncpg.create_pool(url, min_size=2, max_size=POOL_SIZE, **options)
    assert pool is not None
    channel = await connection.channel()
    try:
        await channel.set_qos(prefetch_count=kind.prefetch)
        exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        await queue.bind(exchange, "#")
        pipeline = kind(pool, connection, exchange_name, arrivals)
        loops = [asyncio.create_task(loop) for loop in pipeline.loops()]
        tag = await queue.consume(pipeline.delivered)
        try:
            yield pipeline
        finally:
            pipeline.stop()
            await queue.cancel(tag)
            await queue.delete(if_unused=False, if_empty=False)
            done, stuck = await asyncio.wait(loops, timeout=10)
            for loop in stuck:
                loop.cancel()
            for loop in done:
                if loop.exception() is not None:
                    raise cast(BaseException, loop.exception())  # what stopped a failed loop
    finally:
        await channel.close()
        await pool.close()


async def measure(kind: type[Pipeline], key: str, path: CommandPath, config: BenchConfig) -> list[Figure]:
    """`path`'s figures for pipelines of `kind`, one in a schema of its own per run."""
    exchange_name = config.exchange_name(key)
    connection = await aio_pika.connect(config.amqp_url)
    try:
        async with throwaway_database(config) as url:
            for run in range(config.runs):
                arrivals = Arrivals()
                async with running(kind, url, f"{key}_{run}", connection, exchange_name,
                                   f"{exchange_name}.readmodel.{run}", arrivals) as pipeline:
                    await path.measure(pipeline.draft, arrivals, database=database_of(url), rabbitmq=True)
                    rows = await pipeline.pool.fetchval("SELECT count(*) FROM agreement_summaries")
                    left = await pipeline.pool.fetchval("SELECT count(*) FROM outbox")
                if rows != len(arrivals.seen) or left:
                    raise RuntimeError(f"{rows} read-model rows, {len(arrivals.seen)} observed,"
                                       f" {left} outbox rows left")
    finally:
        channel = await connection.channel()
        await channel.exchange_delete(exchange_name)
        await connection.close()
    return path.figures()

