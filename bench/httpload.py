"""The load generator of (i), run as a process of its own: ``python -m bench.httpload '<json spec>'``.

`writers` clients (keep-alive HTTP/1.1, one connection each) post the same JSON body back to back
to one URL: a warm-up, then — once the parent writes a line to stdin, having started its CPU
meter — the measured window (closed loop). After each phase it prints one JSON line: seconds, the
latency of each 201 response, the count of each status, and the CPU seconds this process used.

A process of its own, so that its CPU is not counted as the service's, and a minimal client (the
request's bytes built once, responses parsed by httptools, the parser uvicorn uses), so that it
takes little of the machine's two cores from the service: an httpx request cost about 2.5 ms of
CPU here, as much as the service's whole handling of it. It imports nothing of the service.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

from bench.harness import bounded


@dataclass(frozen=True)
class LoadSpec:
    base_url: str
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    writers: int
    warmup: float  # seconds
    window: float  # seconds


@dataclass
class Window:
    """What the clients saw in one closed-loop phase."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # of the 201 responses
    statuses: Counter[int] = field(default_factory=Counter)
    cpu_seconds: float = 0.0  # used by the load generator meanwhile

    def to_json(self) -> str:
        return json.dumps({"seconds": self.seconds, "latencies": self.latencies,
                           "statuses": dict(self.statuses), "cpu_seconds": self.cpu_seconds})

    @classmethod
    def from_json(cls, line: str) -> Window:
        fields = json.loads(line)
        return cls(fields["seconds"], fields["latencies"], Counter({int(k): v for k, v in fields["statuses"].items()}),
                   fields["cpu_seconds"])


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: sends a request, then waits for the whole response."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._response: asyncio.Future[int] | None = None
        self._lost: Exception | None = None

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        _, connection = await asyncio.get_running_loop().create_connection(cls, host, port)
        return connection

    async def exchange(self, request: bytes) -> int:
        """Send `request` (whole, in bytes); the response's status once all of it arrived."""
        if self._lost is not None or self._transport is None:
            raise ConnectionError(f"the connection was lost: {self._lost}")
        self._response = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return await self._response

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(error)

    def connection_lost(self, error: Exception | None) -> None:
        self._fail(error or ConnectionError("closed by the server"))

    def on_message_complete(self) -> None:  # called by the parser
        if self._response is not None and not self._response.done():
            self._response.set_result(self._parser.get_status_code())

    def _fail(self, error: Exception) -> None:
        self._lost = error
        if self._response is not None and not self._response.done():
            self._response.set_exception(error)


def encode_request(spec: LoadSpec) -> bytes:
    """The request's bytes, the same for every request."""
    url = urlsplit(spec.base_url)
    body = json.dumps(spec.body).encode()
    headers = {"Host": url.netloc, "Content-Type": "application/json", "Content-Length": str(len(body)),
               **spec.headers}
    head = f"POST {spec.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode() + body


async def drive(connections: list[Connection], request: bytes, seconds: float) -> Window:
    """One client per connection, sending `request` back to back for `seconds`."""
    window = Window()

    async def writer(connection: Connection) -> None:
        for _ in bounded(seconds):
            started = time.perf_counter()
            status = await connection.exchange(request)
            window.statuses[status] += 1
            if status == 201:
                window.latencies.append(time.perf_counter() - started)

    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(writer(c) for c in connections))
    window.seconds = time.perf_counter() - started
    window.cpu_seconds = time.process_time() - cpu
    return window


async def generate(spec: LoadSpec) -> None:
    url = urlsplit(spec.base_url)
    assert url.scheme == "http" and url.hostname and url.port, spec.base_url
    request = encode_request(spec)
    connections = [await Connection.open(url.hostname, url.port) for _ in range(spec.writers)]
    try:
        print((await drive(connections, request, spec.warmup)).to_json(), flush=True)
        if not sys.stdin.readline():  # the parent's CPU meter runs from here
            return
        print((await drive(connections, request, spec.window)).to_json(), flush=True)
    finally:
        for connection in connections:
            connection.close()


def main() -> None:
    spec = LoadSpec(**json.loads(sys.argv[1]))
    try:
        import uvloop
    except ImportError:
        asyncio.run(generate(spec))
    else:
        uvloop.run(generate(spec))


if __name__ == "__main__":
    main()
