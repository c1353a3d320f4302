"""Draining and deleting the queue of a consumer that was merged into another.

A service receives each event once when one consumer (one queue) feeds every handler of the
events it needs. When two consumers are merged, the former one's queue may still hold messages
published before the upgrade, and it stays bound to the exchange until deleted. At start the
runtime unbinds it, drains it with the former consumer's own handlers, under its old name (so
its inbox still drops what it applied before), and deletes it once it is empty. Events published
before it was unbound reach both queues and are applied by both consumers: a former consumer's
handlers must therefore be idempotent projections, which the merged consumer also holds.
Rebuilds replay the inboxes of the merged consumer and of its former ones together
(`replay_inbox`).

Its dead-letter queue is deleted only if empty: the messages in it still need an operator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aio_pika
import structlog
from aio_pika.abc import AbstractConnection
from aio_pika.exceptions import AMQPError, ChannelNotFoundEntity

from accord_runtime.consumer import BusConsumer

log = structlog.get_logger(__name__)


async def drain_and_delete(new_consumer: Callable[[], BusConsumer], amqp_url: str, exchange_name: str, *,
                           poll_interval: float = 0.5, retry_delay: float = 5.0) -> None:
    """Unbind a former consumer's queue, consume it until it is empty, then delete it (and its DLQ
    if that is empty). `new_consumer()` makes the former consumer afresh; nothing happens if its
    queue is gone. Unbound first because quorum queues cannot be deleted "if empty": nothing can
    arrive between the last look and the deletion. Without the broker, it tries again every
    `retry_delay` seconds until it is done or cancelled (when the service stops)."""
    while True:
        try:
            await _drain_and_delete(new_consumer, amqp_url, exchange_name, poll_interval)
            return
        except (AMQPError, ConnectionError, TimeoutError) as error:
            log.warning("cannot retire the queue of a former consumer yet; trying again",
                        error=repr(error), retry_in=retry_delay)
            await asyncio.sleep(retry_delay)


async def _drain_and_delete(new_consumer: Callable[[], BusConsumer], amqp_url: str, exchange_name: str,
                            poll_interval: float) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        consumer = new_consumer()
        if await _ready_messages(connection, consumer.queue_name) is None:
            return
        log.info("draining the queue of a former consumer", queue=consumer.queue_name)
        while True:
            await consumer.start()  # declares and binds the queue as it always did
            try:
                await _unbind(connection, consumer, exchange_name)
                await _until_empty(connection, consumer.queue_name, poll_interval)
            finally:
                await consumer.stop()  # what it held unsettled goes back to the queue
            if not await _ready_messages(connection, consumer.queue_name):
                break
            consumer = new_consumer()
        await _delete(connection, consumer.queue_name)
        log.info("deleted the queue of a former consumer", queue=consumer.queue_name)
        left = await _ready_messages(connection, consumer.dlq_name)
        if left:
            log.warning("the former consumer's dead-letter queue still holds messages; it is kept",
                        queue=consumer.dlq_name, messages=left)
        else:
            await _delete(connection, consumer.dlq_name)


async def _unbind(connection: AbstractConnection, consumer: BusConsumer, exchange_name: str) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(consumer.queue_name, passive=True)
    for key in sorted(consumer.routing_keys):
        await queue.unbind(exchange_name, routing_key=key)
    await channel.close()


async def _ready_messages(connection: AbstractConnection, queue_name: str) -> int | None:
    """How many messages wait in the queue; None if there is no such queue."""
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(queue_name, passive=True)
    except ChannelNotFoundEntity:
        return None  # the broker closed the channel
    await channel.close()
    return queue.declaration_result.message_count or 0


async def _until_empty(connection: AbstractConnection, queue_name: str, poll_interval: float) -> None:
    """Return once no message has been waiting in the queue on two looks in a row."""
    empty_looks = 0
    while empty_looks < 2:
        await asyncio.sleep(poll_interval)
        empty_looks = empty_looks + 1 if not await _ready_messages(connection, queue_name) else 0


async def _delete(connection: AbstractConnection, queue_name: str) -> None:
    channel = await connection.channel()
    await channel.queue_delete(queue_name)
    await channel.close()
