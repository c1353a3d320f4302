"""Helpers for tests (not fixtures)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Request:
    line: str  # e.g. "POST /hooks/ops HTTP/1.1"
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass
class HttpReceiver:
    """A minimal HTTP/1.1 server on 127.0.0.1 (webhooks' receiving end): answers each request with
    `status` (and a `location`), `delay` seconds after it arrived, keeping the connection open
    unless asked to close it, and notes every connection and request. With `hold_until`, it
    answers none before that many arrived. `answered` is called after each answer."""

    status: int = 200
    location: str | None = None
    delay: float = 0.0
    hold_until: int = 0
    connections: int = 0
    received: list[Request] = field(default_factory=list)
    port: int = 0
    _all_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _open: set[asyncio.StreamWriter] = field(default_factory=set)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        """Serve until the block ends; yields the server's base URL."""
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            try:
                yield f"http://127.0.0.1:{self.port}"
            finally:  # let held requests go and drop kept connections, so that the server can close
                self._all_arrived.set()
                for writer in self._open:
                    writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._open.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed the connection
                lines = head.decode("latin-1").split("\r\n")
                fields = (line.partition(":") for line in lines[1:] if line)
                headers = {name.strip().lower(): value.strip() for name, _, value in fields}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Request(lines[0], headers, body)
                self.received.append(request)
                if len(self.received) >= self.hold_until:
                    self._all_arrived.set()
                await self._all_arrived.wait()
                if self.delay:
                    await asyncio.sleep(self.delay)
                closing = headers.get("connection", "").lower() == "close"
                extra = (f"Location: {self.location}\r\n" if self.location else "") + \
                    ("Connection: close\r\n" if closing else "")
                reason = "OK" if self.status < 400 else "Error"
                writer.write(f"HTTP/1.1 {self.status} {reason}\r\nContent-Length: 0\r\n{extra}\r\n".encode())
                await writer.drain()
                self.answered(request)
                if closing:
                    return
        except ConnectionError:
            return
        finally:
            self._open.discard(writer)
            writer.close()

    def answered(self, request: Request) -> None:
        """Called once `request` was answered (for subclasses)."""
