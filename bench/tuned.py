"""(j) A hand-tuned pipeline, command → read model, with Accord's guarantees and none of its code:
what this machine allows, for (f) to be read against.

The issue quotes such a pipeline ("outbox in the append transaction, confirmed persistent
publishing, idempotent consumer acking after commit") at about 3,400 events/s and p99 10 to 14 ms
at 1,000/s on its machine. This is one, in plain asyncpg, aio-pika and aiormq, in one process:

* A command writes its event and its outbox row in one statement (one round trip, one commit),
  then wakes the relay. The pool skips asyncpg's reset query on release and uses generic plans,
  as Accord's pools do.
* The relay reads the outbox (up to 500 rows in order), publishes them all at once, persistent,
  with publisher confirms (aiormq, ``wait=False``, as Accord's relay does), awaits the confirms,
  deletes the confirmed rows in one statement, and goes on while rows are left; with nothing to
  do it waits for a wake-up or polls every 100 ms.
* A consumer on a durable quorum queue (as Accord's consumers declare theirs; prefetch 64, as
  theirs) takes each delivery and those already waiting behind it (up to 100), writes their inbox
  rows and the read-model rows of the events not seen before in one transaction, and acks them
  all with one ack after the commit.

What it leaves out, against (f): the domain model and its checks, event validation and
upcasting, the agreements service's own read models, a second process, metrics and logs; and
it does not group concurrent commands into one commit, as Accord's appends do. A
result counts as arrived right after the consumer's commit, as in (g). Each run checks the read
model's row count against the results seen and that the outbox is empty.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import uuid
from collections.abc import Coroutine
from typing import Any, ClassVar, cast

import aiormq
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from bench.harness import MAX_OPERATIONS, Arrivals, BenchConfig, bounded
from bench.latency import CommandPath
from bench.naive import NAIVE_SUSTAINED
from bench.pipelines import EVENT_TYPE, LIFETIME, ROUTING_KEY, Drafted, Pipeline, measure
from bench.report import Figure

KEY = "tuned"
BATCH = 100  # messages handled in one transaction, at most (BusConsumer's batch_size)

_DRAFT = """
WITH event AS (INSERT INTO events (event_id, stream_id, event_type, data) VALUES ($1, $2, $3, $4::jsonb))
INSERT INTO outbox (event_id, routing_key, payload) VALUES ($1, $5, $6)
"""
_INBOX = """
INSERT INTO inbox (event_id) SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING RETURNING event_id
"""
_READ_MODEL = """
INSERT INTO agreement_summaries
SELECT a, t, 'draft', c, p, u FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::timestamptz[])
    AS rows(a, t, c, p, u)
"""


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Release connections without asyncpg's reset query: nothing here keeps session state."""


class TunedPipeline(Pipeline):
    """Commands in one round trip each; the outbox published a page at a time; deliveries in batches."""

    prefetch: ClassVar[int] = 64  # ServiceSettings.prefetch
    pool_options: ClassVar[dict[str, Any]] = {
        "reset": _no_reset, "server_settings": {"plan_cache_mode": "force_generic_plan"}}
    page: ClassVar[int] = 500

    def __init__(self, pool: asyncpg.Pool, connection: AbstractConnection, exchange_name: str,
                 arrivals: Arrivals) -> None:
        super().__init__(pool, connection, exchange_name, arrivals)
        self._received: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()

    async def draft(self) -> str:
        """One command: the event and its outbox row in one statement; the agreement's id."""
        event = Drafted("Tuned", self._client, self._provider)
        await self.pool.execute(_DRAFT, event.event_id, event.stream_id, EVENT_TYPE, json.dumps(event.data),
                                ROUTING_KEY, json.dumps(event.envelope).encode())
        self._wake.set()
        return str(event.agreement_id)

    def loops(self) -> list[Coroutine[Any, Any, None]]:
        return [*super().loops(), self._consume()]

    async def _publish(self, channel: AbstractChannel, rows: list[asyncpg.Record]) -> None:
        """Every row in flight at once (aiormq, ``wait=False``); the confirmed ones deleted together."""
        underlay = cast(aiormq.Channel, await channel.get_underlay_channel())
        await asyncio.gather(*(underlay.basic_publish(
            row["payload"], exchange=self._exchange_name, routing_key=row["routing_key"],
            properties=aiormq.spec.Basic.Properties(
                content_type="application/json", delivery_mode=2, message_id=str(row["event_id"])),
            wait=False) for row in rows))  # raises unless every message was confirmed
        await self.pool.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", [row["id"] for row in rows])

    def stop(self) -> None:
        super().stop()
        self._received.put_nowait(None)

    async def delivered(self, message: AbstractIncomingMessage) -> None:
        self._received.put_nowait(message)

    async def _consume(self) -> None:
        """Each delivery and those waiting behind it: one transaction, one ack after the commit."""
        for _ in bounded(LIFETIME, limit=10 * MAX_OPERATIONS):
            if (first := await self._received.get()) is None:
                return  # stopped
            batch = [first]
            while len(batch) < BATCH and not self._received.empty() and (more := self._received.get_nowait()):
                batch.append(more)
            events = [json.loads(message.body) for message in batch]
            async with self.pool.acquire() as conn, conn.transaction():
                fresh = {row["event_id"] for row in await conn.fetch(
                    _INBOX, [uuid.UUID(event["id"]) for event in events])}
                new = [event for event in events if uuid.UUID(event["id"]) in fresh]
                if new:
                    await conn.execute(
                        _READ_MODEL, [uuid.UUID(e["data"]["agreement_id"]) for e in new],
                        [e["data"]["title"] for e in new],
                        [uuid.UUID(e["data"]["client_organisation_id"]) for e in new],
                        [uuid.UUID(e["data"]["provider_organisation_id"]) for e in new],
                        [datetime.datetime.fromisoformat(e["time"]) for e in new])
            await batch[-1].ack(multiple=True)
            self._arrivals.mark([event["data"]["agreement_id"] for event in events])


async def tuned_pipeline(config: BenchConfig) -> list[Figure]:
    path = CommandPath(KEY, "(j) hand-tuned pipeline → read model", config, sustained_baseline=NAIVE_SUSTAINED)
    return await measure(TunedPipeline, KEY, path, config)
