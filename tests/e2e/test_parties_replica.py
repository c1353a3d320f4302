"""Another service learns tokens and agreement parties from the bus, and authorizes by them."""

from __future__ import annotations

import uuid

import aio_pika
import asyncpg
import httpx
import pytest
from fastapi import APIRouter, FastAPI

from accord_runtime.consumer import BusConsumer
from accord_runtime.identity import CurrentPrincipal
from accord_runtime.migrations import RUNTIME_MIGRATIONS, migrate, migrations_in
from accord_runtime.parties import side_of, with_parties
from accord_runtime.postgres import create_pool
from accord_runtime.settings import ServiceSettings
from tests.conftest import RUN_ID
from tests.e2e.conftest import Party, register_party
from tests.support import eventually

pytestmark = pytest.mark.servers


async def test_tokens_and_parties_replicate_over_the_bus(
    settings: ServiceSettings, agreements: object, api: httpx.AsyncClient, database_url: str,
) -> None:
    schema = f"replica_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(database_url)
    await migrate(conn, schema, migrations_in("runtime", RUNTIME_MIGRATIONS))
    await conn.close()
    pool = await create_pool(database_url, schema, min_size=1, max_size=4)
    definition = with_parties("replica")
    consumer = BusConsumer(pool=pool, amqp_url=settings.amqp_url, exchange_name=settings.exchange,
                           service_name="replica", consumer_name=definition.name, handlers=definition.handlers,
                           queue_prefix=f"test.{RUN_ID}")
    await consumer.start()  # the queue exists before the events are published
    try:
        client: Party = await register_party(agreements, "client")  # type: ignore[arg-type]
        provider: Party = await register_party(agreements, "provider")  # type: ignore[arg-type]
        stranger: Party = await register_party(agreements, "stranger")  # type: ignore[arg-type]
        drafted = await api.post("/agreements", headers=client.headers, json={
            "title": "Replicated", "client_organisation_id": str(client.organisation_id),
            "provider_organisation_id": str(provider.organisation_id)})
        agreement_id = uuid.UUID(drafted.json()["agreement_id"])
        await api.post(f"/agreements/{agreement_id}/proposal", headers=client.headers)
        for party in (client, provider):
            await api.post(f"/agreements/{agreement_id}/acceptance", headers=party.headers)

        await eventually(lambda: pool.fetchval(
            "SELECT status = 'active' FROM agreement_parties WHERE agreement_id = $1", agreement_id))
        await eventually(lambda: pool.fetchval("SELECT count(*) = 3 FROM api_tokens"))

        # a tiny service on the replica authorizes exactly as the agreements service does
        router = APIRouter()

        @router.get("/agreements/{agreement_id}/side")
        async def my_side(agreement_id: uuid.UUID, principal: CurrentPrincipal) -> dict[str, str]:
            return {"side": await side_of(pool, principal, agreement_id)}

        app = FastAPI()
        app.state.pool = pool
        app.include_router(router)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://replica") as replica:
            url = f"/agreements/{agreement_id}/side"
            assert (await replica.get(url, headers=client.headers)).json() == {"side": "client"}
            assert (await replica.get(url, headers=provider.headers)).json() == {"side": "provider"}
            assert (await replica.get(url, headers=stranger.headers)).status_code == 403
            assert (await replica.get(url)).status_code == 401
            assert (await replica.get(f"/agreements/{uuid.uuid4()}/side", headers=client.headers)).status_code == 404
    finally:
        await consumer.stop()
        await pool.close()
        connection = await aio_pika.connect(settings.amqp_url)  # test runs leave nothing behind
        async with connection:
            channel = await connection.channel()
            for queue in (consumer.queue_name, consumer.dlq_name):
                await channel.queue_delete(queue)
