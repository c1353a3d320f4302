"""The agreements service under test, built the way the service builds itself.

`storage()` gives the pool, event store and projection runner (`ServiceRuntime.open_storage()`);
`running()` starts the whole service in this process (`ServiceRuntime.start()`: doorbell,
outbox relay, projections). Both work in a schema of the benchmark's own.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from uuid import UUID

import aio_pika
import asyncpg

from accord_runtime.eventstore import EventStore, Metadata
from accord_runtime.projections import ProjectionRunner
from accord_runtime.service import ServiceRuntime
from accord_runtime.settings import ServiceSettings
from bench.harness import DEFAULT_AMQP_URL
from services.agreements import handlers
from services.agreements.commands import (
    DraftAgreement,
    IssueApiToken,
    RegisterOrganisation,
    RegisterUser,
)
from services.agreements.main import DEFINITION

ACTOR = "user:bench"


def settings_for(database_url: str, schema: str, *, amqp_url: str = DEFAULT_AMQP_URL,
                 exchange: str = "accord.bench.unused", queue_prefix: str = "bench.unused",
                 ) -> ServiceSettings:
    """Settings of an agreements service in `schema`, publishing to `exchange` (if started)."""
    return ServiceSettings(service_name="agreements", database_url=database_url,
                           database_schema=schema, amqp_url=amqp_url, exchange=exchange,
                           queue_prefix=queue_prefix, log_level="WARNING")


@dataclass(frozen=True)
class Storage:
    pool: asyncpg.Pool
    store: EventStore
    projections: ProjectionRunner


@asynccontextmanager
async def storage(settings: ServiceSettings) -> AsyncIterator[Storage]:
    """Migrated storage of the agreements service, as `ServiceRuntime.open_storage()` opens it."""
    runtime = ServiceRuntime(DEFINITION, settings)
    await runtime.open_storage()
    try:
        assert runtime.projections is not None
        yield Storage(runtime.pool, runtime.store, runtime.projections)
    finally:
        await runtime.pool.close()


@asynccontextmanager
async def running(settings: ServiceSettings) -> AsyncIterator[Storage]:
    """The whole agreements service running in this process (`ServiceRuntime.start()`).

    Its bus consumers' queues (and dead-letter queues) are deleted after it stopped.
    """
    runtime = ServiceRuntime(DEFINITION, settings)
    try:
        await runtime.start()
        assert runtime.projections is not None
        yield Storage(runtime.pool, runtime.store, runtime.projections)
    finally:
        await runtime.stop()
        await delete_broker_objects(runtime)


async def delete_broker_objects(runtime: ServiceRuntime, *, exchange: bool = False) -> None:
    """Delete the queues (and dead-letter queues) of a stopped runtime's bus consumers, and its
    exchange if `exchange`."""
    connection = await aio_pika.connect(runtime.settings.amqp_url)
    try:
        channel = await connection.channel()
        for consumer in runtime.consumers:
            for queue in (consumer.queue_name, consumer.dlq_name):
                await channel.queue_delete(queue)
        if exchange:
            await channel.exchange_delete(runtime.settings.exchange)
    finally:
        await connection.close()


@dataclass(frozen=True)
class Parties:
    client: UUID
    provider: UUID


async def register_parties(ctx: handlers.Context, runner: ProjectionRunner) -> Parties:
    """Two organisations, registered through the handlers and projected (as the e2e tests do)."""
    meta = Metadata.new("operator")
    client = await handlers.register_organisation(ctx, RegisterOrganisation(display_name="client"),
                                                  meta)
    provider = await handlers.register_organisation(
        ctx, RegisterOrganisation(display_name="provider"), meta)
    await runner.catch_up()
    return Parties(client, provider)


async def issue_token(ctx: handlers.Context, runner: ProjectionRunner, organisation_id: UUID) -> str:
    """A user of the organisation and an API token of theirs, projected so that it works at once."""
    meta = Metadata.new("operator")
    user_id = await handlers.register_user(ctx, RegisterUser(
        organisation_id=organisation_id, display_name="bench user", email="bench@client.test"), meta)
    token = await handlers.issue_api_token(ctx, IssueApiToken(user_id=user_id, label="bench"), meta)
    await runner.catch_up()
    return token


_numbers = itertools.count(1)


async def draft(ctx: handlers.Context, parties: Parties) -> str:
    """One DraftAgreement command through its handler; returns the new agreement's id."""
    command = DraftAgreement(title=f"Bench agreement {next(_numbers)}", summary="Benchmark",
                             client_organisation_id=parties.client,
                             provider_organisation_id=parties.provider)
    state = await handlers.draft_agreement(ctx, command, Metadata.new(ACTOR), parties.client)
    return str(state.agreement_id)
