"""A running agreements service (in this process) and users of two organisations, for e2e tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aio_pika
import httpx
import pytest

from accord_runtime.eventstore import Metadata
from accord_runtime.service import ServiceRuntime
from accord_runtime.settings import ServiceSettings
from services.agreements import handlers
from services.agreements.commands import IssueApiToken, RegisterOrganisation, RegisterUser
from services.agreements.main import DEFINITION
from tests.conftest import RUN_ID


@dataclass(frozen=True)
class Party:
    organisation_id: uuid.UUID
    user_id: uuid.UUID
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def settings(database_url: str, amqp_url: str, schema: str, exchange_name: str) -> ServiceSettings:
    return ServiceSettings(service_name="agreements", database_url=database_url, database_schema=schema,
                           amqp_url=amqp_url, exchange=exchange_name, queue_prefix=f"test.{RUN_ID}")


async def delete_broker_objects(amqp_url: str, runtime: ServiceRuntime) -> None:
    """Delete the queues a test runtime declared, and its exchange: test runs leave nothing behind."""
    connection = await aio_pika.connect(amqp_url)
    try:
        for consumer in runtime.consumers:
            for queue in (consumer.queue_name, consumer.dlq_name):
                channel = await connection.channel()
                await channel.queue_delete(queue)
        channel = await connection.channel()
        await channel.exchange_delete(runtime.settings.exchange)
    finally:
        await connection.close()


@pytest.fixture
async def agreements(settings: ServiceSettings) -> AsyncIterator[ServiceRuntime]:
    runtime = ServiceRuntime(DEFINITION, settings)
    app = runtime.app()
    async with app.router.lifespan_context(app):
        runtime.http = app  # type: ignore[attr-defined]
        yield runtime
    await delete_broker_objects(settings.amqp_url, runtime)


@pytest.fixture
async def api(agreements: ServiceRuntime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=agreements.http)  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=transport, base_url="http://agreements") as client:
        yield client


async def register_party(runtime: ServiceRuntime, name: str) -> Party:
    ctx = handlers.Context(runtime.store, runtime.pool)
    meta = Metadata.new("operator")
    organisation_id = await handlers.register_organisation(ctx, RegisterOrganisation(display_name=name), meta)
    user_id = await handlers.register_user(
        ctx, RegisterUser(organisation_id=organisation_id, display_name=f"{name} user", email=f"u@{name}.test"), meta)
    token = await handlers.issue_api_token(ctx, IssueApiToken(user_id=user_id), meta)
    assert runtime.projections is not None
    await runtime.projections.catch_up()
    return Party(organisation_id, user_id, token)


@pytest.fixture
async def client_party(agreements: ServiceRuntime) -> Party:
    return await register_party(agreements, "client")


@pytest.fixture
async def provider_party(agreements: ServiceRuntime) -> Party:
    return await register_party(agreements, "provider")


@pytest.fixture
async def stranger(agreements: ServiceRuntime) -> Party:
    return await register_party(agreements, "stranger")
