"""(f) Command → another service's read model: DraftAgreement through its handler, with the
agreements service running in this process (`ServiceRuntime.start()`: doorbell, outbox relay,
projections), until the queries service — in a process of its own (`bench.far_service`), as
deployed — has committed the agreement's row in its read model of agreement parties, fed from
RabbitMQ through its bus consumer and inbox.

Both services publish to and consume from the benchmark's own exchange; the far service reports
each agreement with the `time.perf_counter()` of its commit (one clock for every process here).
The CPU figure counts both service processes, the Postgres backends of the benchmark's database
and RabbitMQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
from collections.abc import AsyncIterator

import aio_pika

from accord_runtime.settings import ServiceSettings
from bench.harness import Arrivals, BenchConfig, database_of, throwaway_database
from bench.latency import CommandPath
from bench.naive import NAIVE_SUSTAINED
from bench.report import Figure, Target
from bench.service import draft, register_parties, running, settings_for
from services.agreements import handlers
from services.queries.main import DEFINITION as QUERIES

START_TIMEOUT = 60.0


def _environment(settings: ServiceSettings) -> dict[str, str]:
    """The far service's ACCORD_* variables: same database, exchange and queue prefix."""
    return {**os.environ, "ACCORD_DATABASE_URL": settings.database_url,
            "ACCORD_DATABASE_SCHEMA": f"{settings.db_schema}_queries", "ACCORD_AMQP_URL": settings.amqp_url,
            "ACCORD_EXCHANGE": settings.exchange, "ACCORD_QUEUE_PREFIX": settings.queue_prefix,
            "ACCORD_LOG_LEVEL": "WARNING"}


@contextlib.asynccontextmanager
async def far_service(settings: ServiceSettings, arrivals: Arrivals) -> AsyncIterator[int]:
    """The queries service in a subprocess, marking in `arrivals` what it reports; yields its pid."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.far_service", env=_environment(settings),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    stdout = process.stdout

    async def report() -> None:
        while line := await stdout.readline():
            agreement, at = line.split()
            arrivals.mark([agreement.decode()], at=float(at))

    reader: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(START_TIMEOUT):
            ready = await stdout.readline()
        if ready != b"ready\n":
            raise RuntimeError(f"the far service did not start (it said {ready!r}; see its stderr)")
        reader = asyncio.create_task(report())
        yield process.pid
    finally:
        process.stdin.close()  # its signal to stop
        try:
            async with asyncio.timeout(30):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
        if reader is not None:
            await reader


async def command_to_read_model_elsewhere(config: BenchConfig) -> list[Figure]:
    path = CommandPath("e2e", "(f) command → another service's read model", config,
                       p99_targets={1000: Target("≤ 25 ms", at_most=25)},
                       sustained_target=Target("≥ 2,500/s and ≥ 4 times (g)", at_least=2_500,
                                               min_ratio=4),
                       sustained_baseline=NAIVE_SUSTAINED)
    exchange_name = config.exchange_name("e2e")
    try:
        async with throwaway_database(config) as url:
            for run in range(config.runs):
                settings = settings_for(url, f"e2e_{run}", amqp_url=config.amqp_url,
                                        exchange=exchange_name,
                                        queue_prefix=f"bench.{config.run_id}.{run}")
                arrivals = Arrivals()
                try:
                    async with running(settings) as service, far_service(settings, arrivals) as pid:
                        ctx = handlers.Context(service.store, service.pool)
                        parties = await register_parties(ctx, service.projections)
                        await path.measure(functools.partial(draft, ctx, parties), arrivals,
                                           database=database_of(url), rabbitmq=True,
                                           helpers=frozenset({pid}))
                finally:  # also when a measurement failed: the far service's queues are durable
                    await _delete_queues(config.amqp_url, settings.queue_prefix)
    finally:
        connection = await aio_pika.connect(config.amqp_url)
        async with connection:
            channel = await connection.channel()
            await channel.exchange_delete(exchange_name)
    return path.figures()


async def _delete_queues(amqp_url: str, queue_prefix: str) -> None:
    """The far service's queues (and dead-letter queues), named as `BusConsumer` names them."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for consumer in QUERIES.consumers:
            for suffix in ("", ".dlq"):
                await channel.queue_delete(f"{queue_prefix}.queries.{consumer.name}{suffix}")
