"""Oversized messages on the bus, against real RabbitMQ and PostgreSQL: each is dead-lettered with its
reason (bounded in size, whatever the input's) and the consumer goes on with the next message.

Malformed JSON, an unknown (newer) version and invalid data are covered by `test_consumer.py`
(`test_bad_messages_are_dead_lettered_with_their_cause`); this file adds what is too big. A field the
model bounds is refused at its bound; a message over the consumer's size limit (1 MiB) is refused before
it is parsed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import asyncpg
import pytest

from contracts.agreements import AgreementDrafted
from tests.integration.test_consumer import AgreementStatus, Bus, consumed, drafted, read_model
from tests.support import eventually

pytestmark = pytest.mark.servers

FIVE_MB = 5 * 1024 * 1024
DRAFTED = AgreementDrafted.event_type()


@pytest.fixture
async def bus(pool: asyncpg.Pool, amqp_url: str, exchange_name: str,
              amqp_connection: aio_pika.abc.AbstractRobustConnection) -> AsyncIterator[Bus]:
    """`test_consumer.py`'s bus: its read-model table, the test's exchange, and cleanup of what it declared."""
    await pool.execute("CREATE TABLE agreement_status"
                       " (agreement_id uuid PRIMARY KEY, status text NOT NULL, events int NOT NULL)")
    channel = await amqp_connection.channel()
    exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
    bus = Bus(pool, amqp_url, exchange_name, channel, exchange)
    yield bus
    for consumer in bus.consumers:
        await consumer.stop(grace_period=5)
    cleanup = await amqp_connection.channel()
    for name in {n for c in bus.consumers for n in (c.queue_name, c.dlq_name)}:
        await cleanup.queue_delete(name, if_unused=False, if_empty=False)
    await cleanup.exchange_delete(exchange_name)


def drafted_data(**overrides: Any) -> dict[str, Any]:
    data = AgreementDrafted(agreement_id=uuid.uuid4(), title="Hosting", drafted_by_side="client",
                            client_organisation_id=uuid.uuid4(), provider_organisation_id=uuid.uuid4())
    return {**data.model_dump(mode="json"), **overrides}


async def test_oversized_messages_are_dead_lettered_with_the_reason_and_the_consumer_goes_on(
    bus: Bus, pool: asyncpg.Pool
) -> None:
    projection = AgreementStatus()
    consumer = await bus.consumer(projection)
    just_too_long = drafted(uuid.uuid4(), raw_data=drafted_data(title="t" * 201))  # Title: at most 200
    huge_field = drafted(uuid.uuid4(), raw_data=drafted_data(title="x" * FIVE_MB))
    huge_garbage = b"{" + b"\"x\" " * (FIVE_MB // 4)  # 5 MB that is not JSON
    for message in (just_too_long, huge_field):
        await bus.publish(message)
    await bus.publish(huge_garbage, routing_key="agreements.AgreementDrafted")
    good = uuid.uuid4()
    await bus.publish(drafted(good))

    async def good_one_applied() -> bool:
        return good in await read_model(pool)

    await eventually(good_one_applied, timeout=30)  # the consumer went on past 10 MB of bad input
    letters = await bus.dead_letters(consumer, 3, within=30)
    (small,) = [m for m in letters if m.headers["x-accord-error-stage"] == "data"]
    refused_by_size = [m for m in letters if m.headers["x-accord-error-stage"] == "envelope"]
    (garbage,) = [m for m in refused_by_size if m.body == huge_garbage]
    (big_field,) = [m for m in refused_by_size if m is not garbage]
    for letter in letters:
        reason = str(letter.headers["x-accord-error"])
        assert reason and len(reason) <= 2000  # the reason stays readable, whatever the input's size
        assert letter.headers["x-accord-consumer"] == consumer.consumer_name
    assert small.headers["x-accord-error-type"] == "ValidationError"
    assert "title" in str(small.headers["x-accord-error"])  # names the field that is too long
    for letter in (big_field, garbage):  # 5 MB: refused by the size limit before any parsing
        assert letter.headers["x-accord-error-type"] == "ValueError"
        assert "exceeds the limit" in str(letter.headers["x-accord-error"])
    assert b'"specversion"' in big_field.body  # kept whole too
    assert consumed(consumer, "dead_lettered") == 3 and consumed(consumer, "handled") == 1
    assert await bus.ready_messages(consumer.queue_name) == 0
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 1  # nothing oversized was stored


@pytest.mark.parametrize("where", ["subject", "unknown data field"])
async def test_an_oversized_envelope_around_valid_data_is_dead_lettered(
    bus: Bus, pool: asyncpg.Pool, where: str
) -> None:
    consumer = await bus.consumer(AgreementStatus())
    padding = "x" * FIVE_MB
    if where == "subject":
        oversized = drafted(uuid.uuid4(), subject="agreement-" + padding)
    else:
        oversized = drafted(uuid.uuid4(), raw_data=drafted_data(attachment=padding))
    await bus.publish(oversized)
    good = uuid.uuid4()
    await bus.publish(drafted(good))

    async def good_one_applied() -> bool:
        return good in await read_model(pool)

    await eventually(good_one_applied, timeout=30)
    stored = await pool.fetchval("SELECT max(octet_length(envelope::text)) FROM inbox")
    assert stored < 1024 * 1024, f"an envelope of {stored} bytes was stored in the inbox"
    (letter,) = await bus.dead_letters(consumer, 1)
    assert letter.headers["x-accord-error-stage"] == "envelope"
