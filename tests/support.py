"""Helpers for tests (not fixtures)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

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


@dataclass
class RecordedRequest:
    connection: int
    headers: dict[str, str]
    body: bytes


HttpReply = Callable[[int], bytes | None]  # request number → raw response (None: never answer)


def reply_ok(_: int) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class ScriptedHttpServer:
    """An HTTP/1.1 server on 127.0.0.1 answering request number n with `reply(n)` (raw bytes), keeping
    connections open unless `close_after`; it records each request and the connection it came on."""

    reply: HttpReply = reply_ok
    close_after: bool = False
    requests: list[RecordedRequest] = field(default_factory=list)
    connections: int = 0
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                lines = head.decode("latin-1").split("\r\n")
                fields = (line.partition(":") for line in lines[1:] if line)
                headers = {name.strip().lower(): value.strip() for name, _, value in fields}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append(RecordedRequest(number, headers, body))
                response = self.reply(len(self.requests))
                if response is None:
                    await asyncio.sleep(3600)
                    return
                writer.write(response)
                await writer.drain()
                if self.close_after:
                    return
        finally:
            writer.close()


    @contextlib.asynccontextmanager
    async def listening(self, path: str = "/") -> AsyncIterator[ScriptedHttpServer]:
        """Serve until the block ends; `url` is set to `path` on this server."""
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}{path}"
        async with server:
            yield self
            server.close()
