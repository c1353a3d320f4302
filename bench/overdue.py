"""Benchmark: how soon after its deadline QueryOverdue reaches a subscriber, with 100,000 open timers.

A throwaway database (``accord_bench_<random>``, dropped at the end) gets 100,000 pending deadline
timers far in the future (seeded with COPY: the open queries' timers the scheduler must skip past)
and `--due` real queries — raised a minute before their deadlines under a 1-minute first-response
target — whose timers fall due spread over `--spread` seconds. A queries service runtime (timer
scheduler, outbox relay, projections; no bus consumers) fires them, and a plain aio-pika subscriber
measures, for each QueryOverdue, received time - deadline (and recorded time - deadline).

    .venv/bin/python -m bench.overdue [--open 100000] [--due 500] [--spread 10]

Bounded: the wait for messages ends `spread + 30` seconds after the first deadline at the latest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg

from accord_runtime.eventstore import Metadata
from accord_runtime.logs import configure_logging
from accord_runtime.postgres import transaction
from accord_runtime.service import ServiceRuntime
from accord_runtime.timers import schedule
from contracts import CloudEvent
from contracts.queries import QueryOverdue
from contracts.sla import BusinessCalendar, ResponseTarget, SLAPolicy, WorkingPeriod
from services.queries.deadlines import DEADLINE
from services.queries.domain import Query, stream_id
from services.queries.main import DEFINITION, QueriesSettings

SERVER_URL = os.environ.get("ACCORD_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("ACCORD_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POLICY = SLAPolicy(
    calendar=BusinessCalendar(timezone="UTC", working_periods=[
        WorkingPeriod.model_validate_json(f'{{"weekday": {d}, "start": "00:00:00", "end": "23:59:59.999999"}}')
        for d in range(7)]),
    targets=[ResponseTarget(priority="urgent", first_response_minutes=1, resolution_minutes=600)])
TARGET = timedelta(minutes=1)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def seed_open_timers(pool: asyncpg.Pool, count: int) -> None:
    """`count` pending timers of open queries, due in a year or more."""
    far = datetime.now(UTC) + timedelta(days=365)
    records = [(DEADLINE, str(uuid.uuid4()), far + timedelta(seconds=i), json.dumps({"query_id": "seeded"}))
               for i in range(count)]
    async with pool.acquire() as conn:
        await conn.execute("CREATE TEMP TABLE seed (kind text, key text, due_at timestamptz, payload text)")
        await conn.copy_records_to_table("seed", records=records)
        await conn.execute("INSERT INTO timers (kind, key, due_at, payload) SELECT kind, key, due_at,"
                           " payload::jsonb FROM seed")
        await conn.execute("ANALYZE timers")


async def raise_due_queries(runtime: ServiceRuntime, deadlines: list[datetime]) -> None:
    """A real query per deadline, raised `TARGET` before it, its timer set at the deadline itself."""
    client, provider = uuid.uuid4(), uuid.uuid4()
    for due in deadlines:
        query = Query(uuid.uuid4())
        query.raise_query(agreement_id=uuid.uuid4(), client_organisation_id=client,
                          provider_organisation_id=provider, by_organisation_id=client, priority="urgent",
                          subject="Benchmark", body="Due soon", policy=POLICY, at=due - TARGET)
        async with transaction(runtime.pool) as conn:
            await runtime.store.append(stream_id(query.query_id), 0, query.pending, Metadata.new("bench"), conn=conn)
            await schedule(conn, DEADLINE, str(query.query_id), due, {"query_id": str(query.query_id)})


async def run(open_timers: int, due: int, spread: float) -> dict[str, float]:
    token = secrets.token_hex(4)
    database = f"accord_bench_{token}"
    admin = await asyncpg.connect(SERVER_URL)
    await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.close()
    settings = QueriesSettings(
        database_url=urlunsplit(urlsplit(SERVER_URL)._replace(path=f"/{database}")), amqp_url=AMQP_URL,
        exchange=f"accord.bench.{token}", queue_prefix=f"bench.{token}", log_level="WARNING")
    definition = dataclasses.replace(DEFINITION, consumers=())  # no agreements feed needed here
    connection = await aio_pika.connect_robust(AMQP_URL)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(settings.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, QueryOverdue.routing_key())
        received: list[tuple[float, float]] = []  # (received - due, recorded - due) in seconds
        done = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            arrived = datetime.now(UTC)
            async with message.process():
                envelope = CloudEvent.model_validate_json(message.body)
                deadline = datetime.fromisoformat(envelope.data["due_at"])
                received.append(((arrived - deadline).total_seconds(), (envelope.time - deadline).total_seconds()))
                if len(received) >= due:
                    done.set()

        await queue.consume(on_message)

        seeding = ServiceRuntime(definition, settings)
        await seeding.open_storage()
        started = time.perf_counter()
        await seed_open_timers(seeding.pool, open_timers)
        first = datetime.now(UTC) + timedelta(seconds=8)
        deadlines = [first + timedelta(seconds=spread * i / due) for i in range(due)]
        await raise_due_queries(seeding, deadlines)
        await seeding.pool.close()
        seeded_in = time.perf_counter() - started

        runtime = ServiceRuntime(definition, settings)
        await runtime.start()
        try:
            pending = await runtime.pool.fetchval("SELECT count(*) FROM timers WHERE fired_at IS NULL")
            with_deadline = (first - datetime.now(UTC)).total_seconds() + spread + 30
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=max(with_deadline, 1.0))
            duplicates = await runtime.pool.fetchval(
                "SELECT count(*) - count(DISTINCT stream_id) FROM events WHERE event_type = $1",
                QueryOverdue.event_type())
        finally:
            await runtime.stop()
        await channel.exchange_delete(settings.exchange)
    finally:
        await connection.close()
        admin = await asyncpg.connect(SERVER_URL)
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()

    delays = [r for r, _ in received]
    recorded = [r for _, r in received]
    return {
        "pending_timers_at_start": pending, "due": due, "received": len(received), "duplicates": duplicates,
        "seeded_in_s": round(seeded_in, 2),
        **{f"received_{name}_ms": round(percentile(delays, q) * 1000, 1) for name, q in
           (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))},
        "received_min_ms": round(min(delays) * 1000, 1),
        **{f"recorded_{name}_ms": round(percentile(recorded, q) * 1000, 1) for name, q in
           (("p50", 0.5), ("p99", 0.99), ("max", 1.0))},
        "within_1s_share": sum(d <= 1.0 for d in delays) / len(delays),
    } if received else {"received": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--open", type=int, default=100_000, help="pending far-future timers (open queries)")
    parser.add_argument("--due", type=int, default=500, help="queries falling due during the run")
    parser.add_argument("--spread", type=float, default=10.0, help="seconds their deadlines are spread over")
    args = parser.parse_args()
    configure_logging("WARNING", json=False)
    print(json.dumps(asyncio.run(run(args.open, args.due, args.spread)), indent=2))


if __name__ == "__main__":
    main()
