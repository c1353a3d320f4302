"""What the fault tests drive: services as real processes, a steady HTTP load, a '#' subscriber on the
exchange, the faults themselves, and bounded waits for the system to settle afterwards.

Every wait here is bounded in time and every loop in count; a process the harness started is killed
by its own pid, never by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aio_pika
import asyncpg
import httpx
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

BIN = Path(sys.executable).parent
READY_TIMEOUT = 30.0
MAX_LOAD_SECONDS = 120.0  # a load generator stops by itself after this long


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def within(check: Callable[[], Awaitable[Any]], *, timeout: float, interval: float = 0.1,
                 what: str | Callable[[], str] = "condition") -> Any:
    """Await `check()` until it is truthy (returned) or `timeout` passes (AssertionError naming `what`,
    or what `what()` says then)."""
    deadline = time.monotonic() + timeout
    result: Any = None
    for _ in range(int(timeout / interval) + 2):  # bounded in count as well as in time
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(interval)
    raise AssertionError(f"{what if isinstance(what, str) else what()}: not reached within {timeout}s"
                         f" (last: {result!r})")


# --- services as processes ---------------------------------------------------------------------

@dataclass(frozen=True)
class Deployment:
    """Where one test's services live: its database, schemas, exchange and queue prefix."""

    database_url: str
    amqp_url: str
    exchange: str
    queue_prefix: str
    schemas: dict[str, str]  # service name → its schema

    def environment(self, service: str, port: int) -> dict[str, str]:
        return os.environ | {
            "ACCORD_SERVICE_NAME": service,
            "ACCORD_DATABASE_URL": self.database_url,
            "ACCORD_DATABASE_SCHEMA": self.schemas[service],
            "ACCORD_AMQP_URL": self.amqp_url,
            "ACCORD_EXCHANGE": self.exchange,
            "ACCORD_QUEUE_PREFIX": self.queue_prefix,
            "ACCORD_HTTP_PORT": str(port),
            "ACCORD_LOG_JSON": "true",
            # A good neighbour on a shared server (max_connections 100): two services and a rebuild fit.
            "ACCORD_DATABASE_POOL_SIZE": "6",
        }

    def application_name(self, service: str) -> str:
        """The Postgres application_name of every connection the service opens."""
        return f"accord-{self.schemas[service]}"


class ServiceProcess:
    """``accord-<service> serve`` as a child process: started, killed (SIGKILL) or stopped (SIGTERM).

    Each incarnation writes its output to a log file of its own, so a failing test can show it.
    """

    def __init__(self, deployment: Deployment, service: str, log_dir: Path) -> None:
        self.service = service
        self.port = free_port()
        self.env = deployment.environment(service, self.port)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._log_dir = log_dir
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self.incarnations = 0
        self.last_readiness = ""

    @property
    def log_path(self) -> Path:
        return self._log_dir / f"{self.service}.{self.incarnations}.log"

    async def start(self) -> None:
        """Start a new incarnation with the same environment and wait until /readyz says ready."""
        assert self._process is None or self._process.returncode is not None, "already running"
        self.incarnations += 1
        self._log = self.log_path.open("wb")
        self._process = await asyncio.create_subprocess_exec(
            str(BIN / f"accord-{self.service}"), "serve", env=self.env,
            stdout=self._log, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL)
        await self.wait_ready()

    async def ready(self) -> bool:
        if self._process is None or self._process.returncode is not None:
            raise AssertionError(f"{self.service} exited with {self._process and self._process.returncode}:\n"
                                 f"{self.log_tail()}")
        try:
            async with httpx.AsyncClient(timeout=3) as http:
                response = await http.get(f"{self.base_url}/readyz")
        except httpx.TransportError as error:
            self.last_readiness = repr(error)
            return False
        self.last_readiness = response.text
        return response.status_code == 200

    async def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        await within(self.ready, timeout=timeout, interval=0.1,
                     what=lambda: f"{self.service} /readyz (last answer: {self.last_readiness})")

    def dead_workers(self) -> list[str]:
        """Background workers of this incarnation that died ("background worker failed" logged)."""
        return [f"{line['worker']}: {line.get('exception', '').strip().splitlines()[-1:]}"
                for line in self.log_lines(incarnation=self.incarnations)
                if line.get("event") == "background worker failed"]

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs; transactions in flight roll back when Postgres notices."""
        assert self._process is not None and self._process.returncode is None
        self._process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self._process.wait(), 10)
        self._close_log()

    async def stop(self, grace: float = 20.0) -> None:
        """SIGTERM, and SIGKILL after `grace` seconds; a no-op if it is not running."""
        process = self._process
        if process is None or process.returncode is not None:
            self._close_log()
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            process.send_signal(signal.SIGKILL)
            await asyncio.wait_for(process.wait(), 10)
        self._close_log()

    async def metrics(self) -> str:
        async with httpx.AsyncClient(timeout=3) as http:
            return (await http.get(f"{self.base_url}/metrics")).text

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_lines(self, *, incarnation: int | None = None) -> list[dict[str, Any]]:
        """The JSON log lines of one incarnation, or of all of them."""
        found: list[dict[str, Any]] = []
        for n in [incarnation] if incarnation else range(1, self.incarnations + 1):
            path = self._log_dir / f"{self.service}.{n}.log"
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    with contextlib.suppress(ValueError):
                        found.append(json.loads(line))
        return found

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass(frozen=True)
class Party:
    organisation_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def bootstrap_party(env: dict[str, str], organisation: str) -> Party:
    """``accord-agreements admin bootstrap``: an organisation, its first user and a token."""
    process = await asyncio.create_subprocess_exec(
        str(BIN / "accord-agreements"), "admin", "bootstrap", organisation, f"{organisation} user",
        f"user@{organisation.lower()}.test", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    created = json.loads(stdout.decode().strip().splitlines()[-1])
    return Party(created["organisation_id"], created["token"])


async def run_command(*args: str, env: dict[str, str], timeout: float = 60) -> str:
    """Run a command to its end (bounded); its stderr, asserting it succeeded."""
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    output = (stdout + stderr).decode(errors="replace")
    assert process.returncode == 0, f"{args} failed ({process.returncode}):\n{output[-3000:]}"
    return output


# --- the load ----------------------------------------------------------------------------------

#: The commands of one agreement's life in the load, in order: (name, path template, who sends it).
LIFECYCLE = (
    ("draft", "/agreements", "client"),
    ("propose", "/agreements/{id}/proposal", "client"),
    ("accept_client", "/agreements/{id}/acceptance", "client"),
    ("accept_provider", "/agreements/{id}/acceptance", "provider"),
)


@dataclass(frozen=True)
class Acknowledged:
    """A command the service answered with 2xx: its events must be in the store."""

    command: str
    agreement_id: uuid.UUID
    correlation_id: uuid.UUID
    version: int  # the stream version the response reported
    at: float  # time.monotonic() of the response


@dataclass
class LoadGenerator:
    """Workers that draft, propose and accept agreements over HTTP at a steady total `rate`.

    A command that fails (refused connection, timeout, 5xx) has an unknown outcome: the worker
    abandons that agreement and drafts a new one. Only 2xx answers are recorded as acknowledged.
    """

    base_url: str
    client: Party
    provider: Party
    rate: float = 80.0  # commands per second, all workers together
    workers: int = 8
    timeout: float = 3.0
    acknowledged: list[Acknowledged] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout,
                                       limits=httpx.Limits(max_connections=self.workers * 2))
        self._tasks = [asyncio.create_task(self._work(n), name=f"load worker {n}") for n in range(self.workers)]

    async def stop(self) -> None:
        self._stopping.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), self.timeout + 5)
        if self._http is not None:
            await self._http.aclose()

    def acknowledged_since(self, moment: float) -> int:
        return sum(1 for a in self.acknowledged if a.at >= moment)

    async def wait_acknowledged_since(self, moment: float, count: int, timeout: float = 15) -> None:
        async def enough() -> bool:
            return self.acknowledged_since(moment) >= count

        await within(enough, timeout=timeout,
                     what=lambda: f"{count} commands acknowledged (failures: {dict(self.failures)})")

    async def _work(self, worker: int) -> None:
        interval = self.workers / self.rate
        loop = asyncio.get_running_loop()
        next_at = loop.time() + interval * worker / self.workers  # spread the workers' phases
        agreement: uuid.UUID | None = None
        step = 0
        for _ in range(int(MAX_LOAD_SECONDS / interval)):  # bounded even if nobody stops it
            if self._stopping.is_set():
                return
            delay = next_at - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                if self._stopping.is_set():
                    return
            next_at = max(next_at + interval, loop.time())
            if agreement is None:
                step = 0
            agreement = await self._command(step, agreement)
            step = (step + 1) % len(LIFECYCLE)
            if step == 0:
                agreement = None  # active: start the next agreement

    async def _command(self, step: int, agreement: uuid.UUID | None) -> uuid.UUID | None:
        """Send the `step`th command; the agreement to continue with, or None to start over."""
        assert self._http is not None
        name, path, sender = LIFECYCLE[step]
        party = self.client if sender == "client" else self.provider
        correlation_id = uuid.uuid4()
        headers = party.headers | {"X-Correlation-ID": str(correlation_id)}
        body = None
        if name == "draft":
            body = {"title": f"Load {correlation_id.hex[:8]}", "client_organisation_id": self.client.organisation_id,
                    "provider_organisation_id": self.provider.organisation_id}
        try:
            response = await self._http.post(path.format(id=agreement), headers=headers, json=body)
        except httpx.HTTPError as error:
            self.failures[type(error).__name__] += 1
            return None
        if not response.is_success:
            self.failures[f"HTTP {response.status_code}"] += 1
            return None
        state = response.json()
        agreement_id = uuid.UUID(state["agreement_id"])
        self.acknowledged.append(Acknowledged(name, agreement_id, correlation_id, state["version"], time.monotonic()))
        return agreement_id


# --- the bus, seen from outside ----------------------------------------------------------------

class Subscriber:
    """A plain aio-pika consumer of a durable quorum queue bound with '#': every event id it received.

    It acks after recording, so a redelivery after a broker restart is counted again (at least once
    is allowed; `received` counts how often). The robust connection re-declares it after a restart.
    """

    def __init__(self, amqp_url: str, exchange: str, queue_name: str) -> None:
        self._amqp_url, self._exchange, self.queue_name = amqp_url, exchange, queue_name
        self.received: Counter[str] = Counter()
        self._connection: AbstractRobustConnection | None = None
        self._queue: AbstractQueue | None = None

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self._amqp_url, reconnect_interval=0.5, client_properties={"connection_name": self.queue_name})
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=200)
        exchange = await channel.declare_exchange(self._exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        self._queue = await channel.declare_queue(self.queue_name, durable=True,
                                                  arguments={"x-queue-type": "quorum"})
        await self._queue.bind(exchange, routing_key="#")
        await self._queue.consume(self._on_message)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self.received[str(json.loads(message.body)["id"])] += 1
        with contextlib.suppress(aio_pika.exceptions.AMQPError, ConnectionError):
            await message.ack()  # if the ack is lost, the redelivery is counted again

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(aio_pika.exceptions.AMQPError, ConnectionError, TimeoutError):
                await asyncio.wait_for(self._connection.close(), 10)


async def queue_depths(amqp_url: str, queues: list[str]) -> dict[str, int]:
    """Ready messages per queue (a queue that does not exist counts as -1)."""
    depths: dict[str, int] = {}
    connection = await aio_pika.connect(amqp_url, timeout=5)
    try:
        for name in queues:
            channel = await connection.channel()
            try:
                declared = await channel.declare_queue(name, passive=True)
                depths[name] = declared.declaration_result.message_count or 0
                await channel.close()
            except aio_pika.exceptions.ChannelClosed:
                depths[name] = -1
    finally:
        await connection.close()
    return depths


async def delete_broker_objects(amqp_url: str, exchange: str, queues: list[str]) -> None:
    """Delete one test's queues and its exchange (never anything else's)."""
    connection = await aio_pika.connect(amqp_url, timeout=10)
    try:
        for name in queues:
            channel = await connection.channel()
            await channel.queue_delete(name)
        channel = await connection.channel()
        await channel.exchange_delete(exchange)
    finally:
        await connection.close()


# --- the faults --------------------------------------------------------------------------------

async def rabbitmqctl(*args: str, timeout: float = 30) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL)
    output, _ = await asyncio.wait_for(process.communicate(), timeout)
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"rabbitmqctl {' '.join(args)}: {text}"
    return text


async def restart_broker(down_for: float = 2.0) -> float:
    """`stop_app`, wait `down_for`, `start_app`, `await_startup`; how long the broker was down."""
    started = time.monotonic()
    await rabbitmqctl("stop_app")
    try:
        await asyncio.sleep(down_for)
    finally:
        await rabbitmqctl("start_app")  # even if the test is cancelled meanwhile
    await rabbitmqctl("await_startup", timeout=60)
    return time.monotonic() - started


async def terminate_backends(database_url: str, application_names: list[str]) -> int:
    """pg_terminate_backend on every connection with one of these application names; how many."""
    admin = await asyncpg.connect(database_url, server_settings={"application_name": "accord-faults-admin"})
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = ANY($1::text[]) AND pid <> pg_backend_pid()", application_names)
    finally:
        await admin.close()
    return int(killed)


# --- settling ----------------------------------------------------------------------------------

async def wait_for_quiescence(db: asyncpg.Connection, schema: str, subscriber: Subscriber,
                              timeout: float = 30) -> float:
    """Wait until the schema's outbox is empty, its projections are at the head of its store and the
    subscriber has received every committed event; how long that took."""
    started = time.monotonic()
    left: dict[str, int] = {}

    async def settled() -> bool:
        left["outbox rows"] = await db.fetchval(f"SELECT count(*) FROM {schema}.outbox")
        left["projections behind"] = await db.fetchval(
            f"SELECT count(*) FROM {schema}.projection_checkpoints AS c, (SELECT transaction_id, global_position"
            f" FROM {schema}.events ORDER BY transaction_id DESC, global_position DESC LIMIT 1) AS head"
            " WHERE (c.transaction_id, c.global_position) < (head.transaction_id, head.global_position)")
        ids = {str(row["event_id"]) for row in await db.fetch(f"SELECT event_id FROM {schema}.events")}
        left["events not received"] = len(ids - set(subscriber.received))
        return not any(left.values())

    try:
        await within(settled, timeout=timeout, interval=0.2, what="quiescence")
    except AssertionError as error:
        raise AssertionError(f"{error}; still: {left}") from None
    return time.monotonic() - started
