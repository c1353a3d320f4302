"""(g) A naive pipeline, command → read model, in plain asyncpg and aio-pika (no Accord code): the
baseline (f)'s sustained figure is rated against.

* A command inserts its event and an outbox row in one transaction (one transaction per event),
  then wakes the relay.
* The relay reads the outbox (up to 100 rows in order), then publishes the rows one at a time,
  persistent with publisher confirms, awaiting each confirm and deleting each row (autocommit)
  after it; with nothing to do it waits for a wake-up or polls every 100 ms.
* A consumer (manual acks, prefetch 8) writes the read-model row and an inbox (dedupe) row in one
  transaction per event, and acks after the commit. Its queue is declared as (f)'s consumer's
  (exclusive, bound ``#``), so the ratio of (f) to this figure compares the pipelines, not queue
  types: RabbitMQ confirms a persistent message to a durable queue only after writing it, which
  here made each awaited confirm about 6 ms instead of under 1 (one-at-a-time publishing then
  caps near 150/s).

A result counts as arrived right after the consumer's commit, as in (d). Each run checks the read
model's row count against the results seen and that the outbox is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import uuid
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from bench.harness import MAX_OPERATIONS, Arrivals, BenchConfig, bounded, database_of, throwaway_database
from bench.latency import CommandPath
from bench.report import Figure

KEY = "naive"
NAIVE_SUSTAINED = f"{KEY}_sustained"  # the key of the figure (f) is rated against
RATES = (500,)  # offered rates of the open-loop measurement (the issue's figure is at 500/s)
ISSUE = "the issue measured ~610 events/s, and p99 776 ms at 500/s"

ROUTING_KEY = "agreements.AgreementDrafted"
EVENT_TYPE = "accord.agreements.AgreementDrafted.v1"
POOL_SIZE = 10  # the size of an Accord service's pool (ServiceSettings.database_pool_size)
PREFETCH = 8
POLL_SECONDS = 0.1
PAGE = 100  # outbox rows read per poll
RELAY_LIFETIME = 600.0  # the relay stops when told, or after this long

_TABLES = """
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


class NaivePipeline:
    """The command, the relay and the consumer, in a schema and on an exchange of its own."""

    def __init__(self, pool: asyncpg.Pool, connection: AbstractConnection, exchange_name: str,
                 arrivals: Arrivals) -> None:
        self.pool, self._connection = pool, connection
        self._exchange_name, self._arrivals = exchange_name, arrivals
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._client, self._provider = uuid.uuid4(), uuid.uuid4()

    async def draft(self) -> str:
        """One command: the event and its outbox row in one transaction; the agreement's id."""
        agreement_id, event_id = uuid.uuid4(), uuid.uuid4()
        now = datetime.datetime.now(datetime.UTC)
        data = {"agreement_id": str(agreement_id), "title": f"Naive agreement {agreement_id.hex[:8]}",
                "summary": "Benchmark", "client_organisation_id": str(self._client),
                "provider_organisation_id": str(self._provider)}
        envelope = {"specversion": "1.0", "id": str(event_id), "source": "/naive/agreements",
                    "type": EVENT_TYPE, "subject": f"agreement-{agreement_id}", "time": now.isoformat(),
                    "datacontenttype": "application/json", "data": data, "sequence": 1,
                    "correlationid": str(uuid.uuid4()), "actor": "user:bench"}
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO events (event_id, stream_id, event_type, data)"
                               " VALUES ($1, $2, $3, $4::jsonb)",
                               event_id, f"agreement-{agreement_id}", EVENT_TYPE, json.dumps(data))
            await conn.execute("INSERT INTO outbox (event_id, routing_key, payload) VALUES ($1, $2, $3)",
                               event_id, ROUTING_KEY, json.dumps(envelope).encode())
        self._wake.set()
        return str(agreement_id)

    async def relay(self) -> None:
        """Publish the outbox one row at a time, each confirmed by the broker before it is deleted."""
        channel = await self._connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(self._exchange_name)
        try:
            for _ in bounded(RELAY_LIFETIME, limit=10 * MAX_OPERATIONS):
                if self._stopping.is_set():
                    return
                self._wake.clear()
                rows = await self.pool.fetch("SELECT id, event_id, routing_key, payload FROM outbox"
                                             " ORDER BY id LIMIT $1", PAGE)
                for row in rows:
                    await exchange.publish(  # returns once the broker confirmed the message
                        aio_pika.Message(row["payload"], delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                         message_id=str(row["event_id"]), content_type="application/json"),
                        row["routing_key"])
                    await self.pool.execute("DELETE FROM outbox WHERE id = $1", row["id"])
                if not rows:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(POLL_SECONDS):
                            await self._wake.wait()
        finally:
            await channel.close()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def received(self, message: AbstractIncomingMessage) -> None:
        """One event: the read-model row and the inbox row in one transaction, acked after it."""
        async with message.process(requeue=False):  # acks when the block ends, after the commit
            event = json.loads(message.body)
            data = event["data"]
            async with self.pool.acquire() as conn, conn.transaction():
                fresh = await conn.fetchval("INSERT INTO inbox (event_id) VALUES ($1)"
                                            " ON CONFLICT DO NOTHING RETURNING true", uuid.UUID(event["id"]))
                if fresh:
                    await conn.execute(
                        "INSERT INTO agreement_summaries VALUES ($1, $2, 'draft', $3, $4, $5)",
                        uuid.UUID(data["agreement_id"]), data["title"], uuid.UUID(data["client_organisation_id"]),
                        uuid.UUID(data["provider_organisation_id"]), datetime.datetime.fromisoformat(event["time"]))
            self._arrivals.mark([data["agreement_id"]])


@contextlib.asynccontextmanager
async def running(url: str, schema: str, connection: AbstractConnection, exchange_name: str,
                  queue_name: str, arrivals: Arrivals) -> AsyncIterator[NaivePipeline]:
    """The pipeline with its relay and consumer running; its queue is deleted afterwards."""
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        await admin.execute(f"SET search_path TO {schema}")
        await admin.execute(_TABLES)
    finally:
        await admin.close()
    pool = await asyncpg.create_pool(url, min_size=2, max_size=POOL_SIZE, server_settings={"search_path": schema})
    assert pool is not None
    channel = await connection.channel()
    try:
        await channel.set_qos(prefetch_count=PREFETCH)
        exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(queue_name, exclusive=True, auto_delete=True)
        await queue.bind(exchange, "#")
        pipeline = NaivePipeline(pool, connection, exchange_name, arrivals)
        relay = asyncio.create_task(pipeline.relay(), name="naive relay")
        tag = await queue.consume(pipeline.received)
        try:
            yield pipeline
        finally:
            pipeline.stop()
            await queue.cancel(tag)
            await queue.delete(if_unused=False, if_empty=False)
            await asyncio.wait_for(relay, timeout=10)  # raises what stopped a failed relay
    finally:
        await channel.close()
        await pool.close()


async def naive_pipeline(config: BenchConfig) -> list[Figure]:
    path = CommandPath(KEY, "(g) naive pipeline → read model", config, rates=RATES)
    path.throughput.notes.append(ISSUE)
    exchange_name = config.exchange_name(KEY)
    connection = await aio_pika.connect(config.amqp_url)
    try:
        async with throwaway_database(config) as url:
            for run in range(config.runs):
                arrivals = Arrivals()
                async with running(url, f"naive_{run}", connection, exchange_name,
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
