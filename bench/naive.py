"""(g) A naive pipeline, command → read model, in plain asyncpg and aio-pika (no Accord code): the
baseline (f)'s sustained figure is rated against.

* A command inserts its event and an outbox row in one transaction (one transaction per event),
  then wakes the relay.
* The relay reads the outbox (up to 100 rows in order), then publishes the rows one at a time,
  persistent with publisher confirms, awaiting each confirm and deleting each row (autocommit)
  after it; with nothing to do it waits for a wake-up or polls every 100 ms.
* A consumer (manual acks, prefetch 8) writes the read-model row and an inbox (dedupe) row in one
  transaction per event, and acks after the commit. Its queue is a durable quorum queue, as
  (f)'s (`bench.pipelines`): RabbitMQ confirms a persistent message only once the queue has
  written it, which a transient queue never does. (Until the fifth session the queue was an
  exclusive transient one, a leftover of the first session's (f), which consumed from such a
  queue.)

A result counts as arrived right after the consumer's commit, as in (d). Each run checks the read
model's row count against the results seen and that the outbox is empty.
"""

from __future__ import annotations

import datetime
import json
import uuid
from typing import ClassVar

import aio_pika
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from bench.harness import BenchConfig
from bench.latency import CommandPath
from bench.pipelines import EVENT_TYPE, ROUTING_KEY, Drafted, Pipeline, measure
from bench.report import Figure

KEY = "naive"
NAIVE_SUSTAINED = f"{KEY}_sustained"  # the key of the figure (f) is rated against
RATES = (500,)  # offered rates of the open-loop measurement (the issue's figure is at 500/s)
ISSUE = "the issue measured ~610 events/s, and p99 776 ms at 500/s"


class NaivePipeline(Pipeline):
    """One transaction per command, one publish at a time, one transaction per delivery."""

    prefetch: ClassVar[int] = 8
    page: ClassVar[int] = 100

    async def draft(self) -> str:
        """One command: the event and its outbox row in one transaction; the agreement's id."""
        event = Drafted("Naive", self._client, self._provider)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO events (event_id, stream_id, event_type, data)"
                               " VALUES ($1, $2, $3, $4::jsonb)",
                               event.event_id, event.stream_id, EVENT_TYPE, json.dumps(event.data))
            await conn.execute("INSERT INTO outbox (event_id, routing_key, payload) VALUES ($1, $2, $3)",
                               event.event_id, ROUTING_KEY, json.dumps(event.envelope).encode())
        self._wake.set()
        return str(event.agreement_id)

    async def _publish(self, channel: AbstractChannel, rows: list[asyncpg.Record]) -> None:
        """One row at a time, each confirmed by the broker before it is deleted."""
        exchange = await channel.get_exchange(self._exchange_name)
        for row in rows:
            await exchange.publish(  # returns once the broker confirmed the message
                aio_pika.Message(row["payload"], delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                 message_id=str(row["event_id"]), content_type="application/json"),
                row["routing_key"])
            await self.pool.execute("DELETE FROM outbox WHERE id = $1", row["id"])

    async def delivered(self, message: AbstractIncomingMessage) -> None:
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


async def naive_pipeline(config: BenchConfig) -> list[Figure]:
    path = CommandPath(KEY, "(g) naive pipeline → read model", config, rates=RATES)
    path.throughput.notes.append(ISSUE)
    return await measure(NaivePipeline, KEY, path, config)
