"""The RabbitMQ topology the outbox relay and the consumers share.

Every event goes to one durable topic exchange; its routing key is ``<service>.<EventName>``
(`contracts.CloudEvent.routing_key`), so a consumer binds its queue with patterns such as
``agreements.*`` or ``agreements.AgreementAccepted``.
"""

from __future__ import annotations

from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel, AbstractExchange

#: Content type of every event message: a CloudEvents structured-mode JSON body.
CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"


async def declare_exchange(channel: AbstractChannel, name: str) -> AbstractExchange:
    """Declare (idempotently) the durable topic exchange all events are published to."""
    return await channel.declare_exchange(name, ExchangeType.TOPIC, durable=True)
