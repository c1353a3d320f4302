"""Helpers for tests (not fixtures)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import pytest

from accord_runtime.eventstore import EventStore
from contracts import CloudEvent

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T | None]], timeout: float = 10.0, interval: float = 0.02
) -> T:
    """Await `check()` until it returns a truthy value (returned: never None) or `timeout` passes
    (AssertionError)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        await asyncio.sleep(interval)


def stream_reads(store: EventStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The `from_version` of every `read_stream` of `store` from now on, in order."""
    seen: list[int] = []
    read_stream = store.read_stream

    async def spy(stream: str, *, from_version: int = 1, **kwargs: object) -> list[CloudEvent]:
        seen.append(from_version)
        return await read_stream(stream, from_version=from_version, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "read_stream", spy)
    return seen


async def rows_of(db: asyncpg.Connection | asyncpg.Pool, table: str) -> list[str]:
    """Every row of `table` (schema-qualified or not) as JSON text, sorted: for comparing two states
    of a read model, e.g. before and after a rebuild."""
    rows = await db.fetch(f"SELECT row_to_json(t)::text AS r FROM {table} AS t ORDER BY 1")
    return [row["r"] for row in rows]
