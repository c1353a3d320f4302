"""The integrators' example subscriber (examples/subscriber) against real RabbitMQ.

Real CloudEvents, built from the contracts models and published as the outbox relay publishes
them, reach the example's own queue; its SQLite projection counts open queries per agreement
once per event, in stream order, and dead-letters a version it does not know.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import pytest

from accord_runtime.topology import CONTENT_TYPE
from contracts import CloudEvent, EventData
from contracts.queries import QueryAnswered, QueryClosed, QueryCommented, QueryOverdue, QueryRaised
from examples.subscriber.subscriber import Config, Projection, declare, run
from tests.conftest import RUN_ID

pytestmark = pytest.mark.servers

ROOT = Path(__file__).resolve().parents[2]


class Stream:
    """The events of one query, numbered as the queries service numbers them."""

    def __init__(self, agreement_id: uuid.UUID) -> None:
        self.agreement_id, self.query_id = agreement_id, uuid.uuid4()
        self.sequence = 0

    def event(self, data: EventData, *, event_type: str | None = None) -> CloudEvent:
        self.sequence += 1
        return CloudEvent(id=uuid.uuid4(), source="/accord/queries", type=event_type or data.event_type(),
                          subject=f"query-{self.query_id}", time=datetime.now(UTC),
                          data=data.model_dump(mode="json"), sequence=self.sequence,
                          correlationid=uuid.uuid4(), actor="user:test")

    def raised(self) -> CloudEvent:
        return self.event(QueryRaised(query_id=self.query_id, agreement_id=self.agreement_id,
                                      raised_by_side="client", addressed_to_side="provider", priority="high",
                                      subject="Where is the report?", body="It was due on Monday."))

    def answered(self) -> CloudEvent:
        return self.event(QueryAnswered(query_id=self.query_id, agreement_id=self.agreement_id,
                                        answered_by_side="provider", answer="Tomorrow."))

    def commented(self) -> CloudEvent:
        return self.event(QueryCommented(query_id=self.query_id, agreement_id=self.agreement_id,
                                         commented_by_side="client", body="Thanks.", commented_at=datetime.now(UTC)))

    def overdue(self) -> CloudEvent:
        return self.event(QueryOverdue(query_id=self.query_id, agreement_id=self.agreement_id,
                                       clock="resolution", priority="high", addressed_to_side="provider",
                                       due_at=datetime.now(UTC)))

    def closed(self) -> CloudEvent:
        return self.event(QueryClosed(query_id=self.query_id, agreement_id=self.agreement_id,
                                      closed_by_side="client"))


@pytest.fixture
def config(amqp_url: str, exchange_name: str, tmp_path: Path) -> Config:
    return Config(amqp_url=amqp_url, exchange=exchange_name, queue=f"test.{RUN_ID}.example.{uuid.uuid4().hex[:8]}",
                  database=tmp_path / "projection.sqlite3")


@pytest.fixture
async def channel(config: Config) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(config.amqp_url)
    async with connection:
        channel = await connection.channel()  # publisher confirms: each publish waits for the broker
        await declare(channel, config)  # the subscriber's queue exists before anything is published
        yield channel
        await channel.queue_delete(config.queue)
        await channel.queue_delete(f"{config.queue}.dlq")
        await channel.exchange_delete(config.exchange)


async def publish(channel: aio_pika.abc.AbstractChannel, exchange: str, *events: CloudEvent) -> None:
    """As the outbox relay does: persistent, CloudEvents content type, message id = event id."""
    target = await channel.get_exchange(exchange)
    for event in events:
        await target.publish(aio_pika.Message(event.model_dump_json().encode(), content_type=CONTENT_TYPE,
                                              delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                              message_id=str(event.id)),
                             routing_key=event.routing_key)


def open_queries(config: Config) -> dict[str, int]:
    projection = Projection(config.database)
    try:
        return projection.open_queries()
    finally:
        projection.close()


async def consume(config: Config, messages: int) -> dict[str, int]:
    config = Config(**{**config.__dict__, "max_messages": messages})
    return dict(await asyncio.wait_for(run(config), timeout=30))


async def test_projection_counts_each_event_once_and_in_stream_order(
        channel: aio_pika.abc.AbstractChannel, config: Config) -> None:
    agreement_a, agreement_b = uuid.uuid4(), uuid.uuid4()
    first, second, third = Stream(agreement_a), Stream(agreement_a), Stream(agreement_b)
    first_raised, first_answered, first_commented = first.raised(), first.answered(), first.commented()
    first_closed = first.closed()
    second_raised, second_overdue = second.raised(), second.overdue()
    third_raised = third.raised()
    newer = third.event(QueryClosed(query_id=third.query_id, agreement_id=agreement_b, closed_by_side="client"),
                        event_type="accord.queries.QueryClosed.v2")  # a version this subscriber does not know
    events = [
        first_raised, first_answered,
        first_closed, first_commented,  # arrives before its predecessor: parked until it comes
        first_raised,  # a redelivery: skipped by id
        second_raised, second_overdue,
        third_raised, newer,
    ]
    await publish(channel, config.exchange, *events)

    outcomes = await consume(config, len(events))

    assert open_queries(config) == {str(agreement_a): 1, str(agreement_b): 1}
    # The comment is a type the projection skips, yet it fills the gap before the parked close.
    assert outcomes == {"applied": 5, "parked": 1, "skipped": 1, "duplicate": 1, "dead-lettered": 1}
    dlq = await channel.declare_queue(f"{config.queue}.dlq", passive=True)
    dead = await dlq.get(timeout=5)
    assert dead is not None and json.loads(dead.body)["id"] == str(newer.id)
    await dead.ack()

    # The same events again (a redelivery after a crash, a republish by the relay): nothing moves.
    await publish(channel, config.exchange, *events[:-1])
    again = await consume(config, len(events) - 1)
    assert again == {"duplicate": len(events) - 1}
    assert open_queries(config) == {str(agreement_a): 1, str(agreement_b): 1}


async def test_command_line_runs_and_prints_the_projection(
        channel: aio_pika.abc.AbstractChannel, config: Config) -> None:
    stream = Stream(uuid.uuid4())
    await publish(channel, config.exchange, stream.raised())
    command = [sys.executable, "-m", "examples.subscriber", "--amqp-url", config.amqp_url,
               "--exchange", config.exchange, "--queue", config.queue, "--database", str(config.database),
               "--max-messages", "1", "--idle-exit", "20"]
    result = await asyncio.to_thread(subprocess.run, command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"open_queries": {str(stream.agreement_id): 1}}
