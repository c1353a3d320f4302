"""Shared fixtures: real PostgreSQL and RabbitMQ, isolated per test run.

Servers come from ``ACCORD_TEST_DATABASE_URL`` / ``ACCORD_TEST_AMQP_URL`` when set, else the
local defaults when they answer, else containers started with testcontainers (needs Docker).
Each run creates its own database and its own exchange and queue names; each test that needs
storage gets its own schema, so runs and tests never see each other's data.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import pytest

from accord_runtime.eventstore import EventStore

LOCAL_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
RUN_ID = uuid.uuid4().hex[:10]


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def _containers() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


@pytest.fixture(scope="session")
def server_database_url(_containers: ExitStack) -> str:
    """A URL of a PostgreSQL server's maintenance database."""
    url = os.environ.get("ACCORD_TEST_DATABASE_URL")
    if url:
        return url
    if _answers(LOCAL_DATABASE_URL, 5432):
        return LOCAL_DATABASE_URL
    from testcontainers.postgres import PostgresContainer

    container = _containers.enter_context(PostgresContainer("postgres:16-alpine"))
    return str(container.get_connection_url(driver=None))


@pytest.fixture(scope="session")
def amqp_url(_containers: ExitStack) -> str:
    url = os.environ.get("ACCORD_TEST_AMQP_URL")
    if url:
        return url
    if _answers(LOCAL_AMQP_URL, 5672):
        return LOCAL_AMQP_URL
    from testcontainers.rabbitmq import RabbitMqContainer

    container = _containers.enter_context(RabbitMqContainer("rabbitmq:3.13-management-alpine"))
    params = container.get_connection_params()
    return f"amqp://guest:guest@{params.host}:{params.port}/"


@pytest.fixture(scope="session")
async def database_url(server_database_url: str) -> AsyncIterator[str]:
    """A database of this test run's own, dropped at the end."""
    name = f"accord_test_{RUN_ID}"
    admin = await asyncpg.connect(server_database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    parts = urlsplit(server_database_url)
    yield urlunsplit(parts._replace(path=f"/{name}"))
    admin = await asyncpg.connect(server_database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def schema() -> str:
    """A schema name of this test's own."""
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def exchange_name(amqp_url: str) -> AsyncIterator[str]:
    """A topic exchange name of this test's own; the exchange is deleted after the test, so that
    test runs leave nothing behind in RabbitMQ."""
    name = f"accord.test.{RUN_ID}.{uuid.uuid4().hex[:8]}"
    yield name
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.exchange_delete(name)  # RabbitMQ deletes an exchange that is not there as well


@pytest.fixture
async def amqp_connection(amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(amqp_url)
    yield connection
    await connection.close()



@pytest.fixture
async def pool(database_url: str, schema: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool in this test's own schema, with the runtime's migrations applied."""
    from accord_runtime.migrations import RUNTIME_MIGRATIONS, migrate, migrations_in
    from accord_runtime.postgres import create_pool

    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, schema, migrations_in("runtime", RUNTIME_MIGRATIONS))
    finally:
        await conn.close()
    pool = await create_pool(database_url, schema, min_size=1, max_size=10)
    yield pool
    await pool.close()


@pytest.fixture
def store(pool: asyncpg.Pool) -> EventStore:
    return EventStore(pool, source="/accord/test")


@pytest.fixture
async def notifier_pool(pool: asyncpg.Pool, database_url: str, schema: str) -> asyncpg.Pool:
    """`pool`, with the notifier's tables too."""
    from accord_runtime.migrations import migrate, migrations_in

    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, schema, migrations_in("notifier", "services.notifier"))
    finally:
        await conn.close()
    return pool
