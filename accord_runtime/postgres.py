"""Connection pools bound to one service's schema."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import cast

import asyncpg
import orjson
from pydantic_core import from_json

_JSONB_VERSION = b"\x01"  # the first byte of jsonb's binary form: the text follows


def json_bytes(value: object) -> bytes:
    """`value` as JSON text: by orjson (a tenth of the json module's cost), or by the json module
    for what orjson refuses, such as an integer beyond 64 bits (which Postgres stores exactly)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(value).encode()


def _encode_jsonb(value: object) -> bytes:
    return _JSONB_VERSION + json_bytes(value)


def _decode_jsonb(data: bytes) -> object:
    # pydantic-core's parser: a third of the json module's cost (a rebuild decodes every event's
    # data). Not orjson: it reads an integer beyond 64 bits as a float, silently losing digits.
    return from_json(data[1:])


async def _init_connection(conn: asyncpg.Connection) -> None:
    """jsonb in and out as Python values, in binary form (no text codec on the way)."""
    await conn.set_type_codec("jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb, schema="pg_catalog",
                              format="binary")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release a connection without asyncpg's reset query (advisory unlock, UNLISTEN, RESET ALL).

    asyncpg still rolls back an open transaction and drops listeners on release. Pooled code keeps
    no session state — the relay's leader lock, LISTEN and migrations have connections of their
    own — and the query cost a round trip per checkout: about a third of an append (bench/).
    """


async def create_pool(dsn: str, schema: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections resolve unqualified names in `schema` (the service's own data).

    Prepared statements always use their generic plan: every statement here is a short one whose
    best plan does not depend on its parameter values, and statements taking arrays (appends,
    batched read-model writes) were otherwise planned again on every execution, because
    PostgreSQL prices a generic plan for arrays of unknown length above the custom plans:
    0.3 ms of planning per append, twice the cost of executing it (bench/).
    """
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": schema, "application_name": f"accord-{schema}",
                         "plan_cache_mode": "force_generic_plan"},
        init=_init_connection,
        reset=_keep_session,
    )
    assert pool is not None
    return pool


@contextlib.asynccontextmanager
async def transaction(pool: asyncpg.Pool, *, durable: bool = True) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection inside a transaction (committed on success, rolled back on error).

    `durable=False` commits without waiting for the WAL flush (``synchronous_commit = off``), so
    the commit costs no fsync of its own; a crash in the next few hundred milliseconds may lose
    the transaction, whole and after everything committed before it. Only for work that is done
    again when lost: a projection batch, whose checkpoint is lost with it. Never before an
    acknowledgement to someone else (a command's caller, a broker's ack).
    """
    async with pool.acquire() as conn, conn.transaction():
        if not durable:
            await conn.execute("SET LOCAL synchronous_commit = off")
        yield cast(asyncpg.Connection, conn)


async def connect(dsn: str, schema: str) -> asyncpg.Connection:
    """A single connection in `schema`, for listeners and leader locks that outlive a pool checkout."""
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema, "application_name": f"accord-{schema}"})
    await _init_connection(conn)
    return conn


# Anything a lost, refused or killed connection can raise, and any server error: what a
# long-running worker (relay, doorbell) survives by reconnecting and trying again.
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)

# Errors that mean "try again later", not "this work is wrong". When the server drops a
# connection, asyncpg may report it as InterfaceError (masking the server's error) or
# InternalClientError (a protocol state broken by the unexpected close), so both count.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    OSError,  # includes TimeoutError (pool acquire) and refused connections
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections
    asyncpg.exceptions.TransactionRollbackError,  # serialization failure, deadlock
)
