"""The agreements service as its own process, started by the entry points the image uses."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from accord_runtime.service import ServiceRuntime
from accord_runtime.settings import ServiceSettings
from tests.e2e.conftest import Party
from tests.support import eventually

pytestmark = pytest.mark.servers

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def environment(settings: ServiceSettings, port: int) -> dict[str, str]:
    return os.environ | {
        "ACCORD_SERVICE_NAME": settings.service_name,
        "ACCORD_DATABASE_URL": settings.database_url,
        "ACCORD_DATABASE_SCHEMA": settings.db_schema,
        "ACCORD_AMQP_URL": settings.amqp_url,
        "ACCORD_EXCHANGE": settings.exchange,
        "ACCORD_QUEUE_PREFIX": settings.queue_prefix,
        "ACCORD_HTTP_PORT": str(port),
    }


async def run(*args: str, env: dict[str, str]) -> dict[str, str]:
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    return json.loads(stdout.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


async def test_console_scripts_serve_the_slice_and_stop_gracefully(settings: ServiceSettings) -> None:
    port = free_port()
    env = environment(settings, port)
    client = await run(
        str(BIN / "accord-agreements"), "admin", "bootstrap", "Client Co", "Cleo", "cleo@client.test", env=env)
    provider = await run(sys.executable, "-m", "services.agreements", "admin", "bootstrap", "Agency", "Pat",
                         "pat@agency.test", env=env)
    assert client["token"].startswith("acc_") and client["token"] != provider["token"]

    server = await asyncio.create_subprocess_exec(
        str(BIN / "accord-agreements"), "serve", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            async def ready() -> bool:
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, timeout=30, interval=0.1)
            as_client = {"Authorization": f"Bearer {client['token']}"}
            as_provider = {"Authorization": f"Bearer {provider['token']}"}
            me = await http.get("/me", headers=as_client)
            assert me.json()["organisation_name"] == "Client Co"
            drafted = await http.post("/agreements", headers=as_client, json={
                "title": "Managed IT", "client_organisation_id": client["organisation_id"],
                "provider_organisation_id": provider["organisation_id"]})
            agreement = drafted.json()["agreement_id"]
            await http.post(f"/agreements/{agreement}/proposal", headers=as_client)
            await http.post(f"/agreements/{agreement}/acceptance", headers=as_client)
            done = await http.post(f"/agreements/{agreement}/acceptance", headers=as_provider)
            assert done.json()["status"] == "active"
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(server.communicate(), 30)
    # uvicorn re-raises the SIGTERM it handled once shutdown completed, hence -SIGTERM
    assert server.returncode in (0, -signal.SIGTERM), output.decode()[-2000:]
    lines = [json.loads(line) for line in output.decode().splitlines() if line.startswith("{")]
    assert any(line.get("event") == "service stopped" for line in lines)
    assert client["token"] not in output.decode()  # tokens never logged


async def test_rebuild_command_restores_read_models_from_the_event_store(
    settings: ServiceSettings, agreements: ServiceRuntime, api: httpx.AsyncClient,
    client_party: Party, provider_party: Party,
) -> None:
    for n in range(3):
        response = await api.post("/agreements", headers=client_party.headers, json={
            "title": f"Agreement {n}", "client_organisation_id": str(client_party.organisation_id),
            "provider_organisation_id": str(provider_party.organisation_id)})
        agreement = response.json()["agreement_id"]
        if n:
            await api.post(f"/agreements/{agreement}/proposal", headers=client_party.headers)
    assert agreements.projections is not None
    await agreements.projections.catch_up()
    tables = ("agreement_summaries", "agreement_history", "api_tokens")
    before = {t: await agreements.pool.fetch(f"SELECT * FROM {t} ORDER BY 1, 2") for t in tables}
    await agreements.pool.execute("UPDATE agreement_summaries SET title = 'corrupted'")
    await agreements.pool.execute("DELETE FROM agreement_history WHERE sequence > 1")
    await agreements.pool.execute("DELETE FROM api_tokens")

    process = await asyncio.create_subprocess_exec(
        str(BIN / "accord-agreements"), "rebuild", env=environment(settings, free_port()),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    assert "rebuilt" in stderr.decode()
    after = {t: await agreements.pool.fetch(f"SELECT * FROM {t} ORDER BY 1, 2") for t in tables}
    assert after == before

    unknown = await asyncio.create_subprocess_exec(
        str(BIN / "accord-agreements"), "rebuild", "--projection", "nope", env=environment(settings, free_port()),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(unknown.communicate(), 60)
    assert unknown.returncode == 2 and "unknown projection" in stderr.decode()


async def test_an_operator_revokes_a_token_and_it_stops_working(
    settings: ServiceSettings, agreements: ServiceRuntime, api: httpx.AsyncClient, client_party: Party,
) -> None:
    assert (await api.get("/me", headers=client_party.headers)).status_code == 200
    env = environment(settings, free_port()) | {"ACCORD_REVOKE_TOKEN": client_party.token}
    revoked = await run(str(BIN / "accord-agreements"), "admin", "revoke-token", env=env)
    assert uuid.UUID(revoked["revoked_token_id"])

    async def refused() -> bool:
        return (await api.get("/me", headers=client_party.headers)).status_code == 401

    await eventually(refused)  # the running service's projection learns it (the operator rang its doorbell)
    again = await asyncio.create_subprocess_exec(
        str(BIN / "accord-agreements"), "admin", "revoke-token", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(again.communicate(), 60)
    assert again.returncode == 2 and "already revoked" in stderr.decode()
