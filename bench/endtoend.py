"""(f) Command → RabbitMQ: DraftAgreement through its handler, with the whole service running
(`ServiceRuntime.start()`: doorbell, outbox relay, projections), until a plain aio-pika consumer
receives the AgreementDrafted message.

The consumer is a queue of the benchmark's own, bound with ``#`` to the benchmark's exchange
(the service publishes there instead of ``accord.events``), consuming with automatic acks in
this process; a message counts as arrived when its delivery callback runs.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import AsyncIterator

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from accord_runtime.topology import declare_exchange
from bench.harness import Arrivals, BenchConfig, database_of, throwaway_database
from bench.latency import CommandPath
from bench.naive import NAIVE_SUSTAINED
from bench.report import Figure, Target
from bench.service import draft, register_parties, running, settings_for
from contracts.agreements import AgreementDrafted
from services.agreements import handlers

DRAFTED_KEY = AgreementDrafted.routing_key()


@contextlib.asynccontextmanager
async def consumer(channel: AbstractChannel, exchange_name: str, queue_name: str,
                   arrivals: Arrivals) -> AsyncIterator[None]:
    """Mark every AgreementDrafted message's agreement id in `arrivals` as it is delivered."""
    exchange = await declare_exchange(channel, exchange_name)
    queue = await channel.declare_queue(queue_name, exclusive=True, auto_delete=True)
    await queue.bind(exchange, "#")

    async def received(message: AbstractIncomingMessage) -> None:
        if message.routing_key == DRAFTED_KEY:
            arrivals.mark([json.loads(message.body)["data"]["agreement_id"]])

    tag = await queue.consume(received, no_ack=True)
    try:
        yield
    finally:
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)


async def command_to_consumer(config: BenchConfig) -> list[Figure]:
    path = CommandPath("e2e", "(f) command → RabbitMQ consumer", config,
                       p99_targets={1000: Target("≤ 25 ms", at_most=25)},
                       sustained_target=Target("≥ 2,500/s and ≥ 4 times (g)", at_least=2_500,
                                               min_ratio=4),
                       sustained_baseline=NAIVE_SUSTAINED)
    exchange_name = config.exchange_name("e2e")
    connection = await aio_pika.connect(config.amqp_url)
    channel = await connection.channel()
    try:
        async with throwaway_database(config) as url:
            for run in range(config.runs):
                settings = settings_for(url, f"e2e_{run}", amqp_url=config.amqp_url,
                                        exchange=exchange_name,
                                        queue_prefix=f"bench.{config.run_id}.{run}")
                arrivals = Arrivals()
                async with consumer(channel, exchange_name, f"{exchange_name}.consumer.{run}",
                                    arrivals), running(settings) as service:
                    ctx = handlers.Context(service.store, service.pool)
                    parties = await register_parties(ctx, service.projections)
                    await path.measure(functools.partial(draft, ctx, parties), arrivals,
                                       database=database_of(url), rabbitmq=True)
    finally:
        await channel.exchange_delete(exchange_name)
        await connection.close()
    return path.figures()
