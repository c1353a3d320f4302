"""Raw baselines: what plain asyncpg and plain aio-pika do on this machine, without Accord."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import aio_pika
import asyncpg

from bench.cpu import CpuMeter
from bench.harness import (
    BenchConfig,
    Throughput,
    bounded,
    closed_loop,
    database_of,
    throwaway_database,
)
from bench.report import Figure

_TABLE = """
CREATE TABLE raw_events (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id  uuid   NOT NULL UNIQUE,
    stream_id text   NOT NULL,
    data      jsonb  NOT NULL
)
"""
_INSERT = "INSERT INTO raw_events (event_id, stream_id, data) VALUES ($1, $2, $3::jsonb)"

#: A payload the size of an agreements event's CloudEvents envelope (~600 bytes).
PAYLOAD = json.dumps({
    "specversion": "1.0", "id": str(uuid.uuid4()), "source": "/accord/agreements",
    "type": "accord.agreements.AgreementProposed.v1", "subject": f"agreement-{uuid.uuid4()}",
    "time": "2025-01-01T00:00:00Z", "datacontenttype": "application/json",
    "data": {"agreement_id": str(uuid.uuid4()), "proposed_by_side": "client"},
    "sequence": 2, "correlationid": str(uuid.uuid4()), "causationid": None,
    "actor": f"user:{uuid.uuid4()}",
}).encode()
PERSISTENT = aio_pika.DeliveryMode.PERSISTENT
DATA = json.dumps({"agreement_id": str(uuid.uuid4()), "proposed_by_side": "client"})


async def raw_insert(config: BenchConfig) -> Figure:
    """(a) Single-row INSERT transactions (autocommit) from `writers` connections."""
    figure = Figure("raw_insert", f"(a) raw asyncpg INSERT, {config.writers} connections",
                    "events/s")
    async with throwaway_database(config) as url:
        for _ in range(config.runs):
            connections = [await asyncpg.connect(url) for _ in range(config.writers)]
            try:
                await connections[0].execute("DROP TABLE IF EXISTS raw_events")
                await connections[0].execute(_TABLE)

                async def insert(writer: int, conns: list[asyncpg.Connection] = connections) -> int:
                    await conns[writer].execute(_INSERT, uuid.uuid4(), f"raw-{writer}", DATA)
                    return 1

                await closed_loop(config.writers, config.warmup, insert)
                with CpuMeter(database_of(url)) as meter:
                    result = await closed_loop(config.writers, config.window, insert)
                figure.add_run(result.rate, meter.per(result.items))
            finally:
                await asyncio.gather(*(conn.close() for conn in connections))
    return figure


async def raw_publish(config: BenchConfig, window: int = 300) -> Figure:
    """(c) Persistent messages with publisher confirms, `window` publishes awaited together."""
    figure = Figure("raw_publish", f"(c) raw aio-pika persistent publish + confirms, windows of "
                    f"{window}", "msgs/s")
    connection = await aio_pika.connect(config.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(config.exchange_name("raw"),
                                                  aio_pika.ExchangeType.TOPIC, durable=True)
        # A durable queue bound to everything, so the persistent messages are really written.
        queue = await channel.declare_queue(f"{config.exchange_name('raw')}.all", durable=True)
        await queue.bind(exchange, "#")
        try:
            for _ in range(config.runs):
                await _publish_windows(exchange, config.warmup, window)
                with CpuMeter(rabbitmq=True) as meter:
                    result = await _publish_windows(exchange, config.window, window)
                figure.add_run(result.rate, meter.per(result.items))
                await queue.purge()
        finally:
            await queue.delete(if_unused=False, if_empty=False)
            await exchange.delete()
    finally:
        await connection.close()
    return figure


async def _publish_windows(exchange: aio_pika.abc.AbstractExchange, seconds: float,
                           window: int) -> Throughput:
    started = time.perf_counter()
    sent = 0
    for _ in bounded(seconds):
        await asyncio.gather(*(
            exchange.publish(aio_pika.Message(PAYLOAD, delivery_mode=PERSISTENT,
                                              message_id=str(uuid.uuid4())),
                             "agreements.AgreementProposed")
            for _ in range(window)))
        sent += window
    return Throughput(sent, time.perf_counter() - started)
