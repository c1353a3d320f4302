"""The `accord` CLI against the four services running in this process behind real HTTP servers (uvicorn on
free loopback ports), on the real PostgreSQL and RabbitMQ: `accord demo` seeds an engagement that the
read commands then show, `events tail` sees live events, a poisoned message is listed in its consumer's
dead-letter queue and requeued to its original routing key, a rebuild, and the error exit codes.

The CLI runs as a subprocess (`python -m accord_cli`), as an operator would run it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import httpx
import pytest
import uvicorn

from accord_runtime.service import ServiceDefinition, ServiceRuntime
from accord_runtime.settings import ServiceSettings
from accord_runtime.topology import declare_exchange
from services.agreements.main import DEFINITION as AGREEMENTS
from services.kpi.main import DEFINITION as KPI
from services.notifier.main import definition as notifier_definition
from services.notifier.settings import NotifierSettings
from services.queries.main import DEFINITION as QUERIES
from tests.conftest import RUN_ID
from tests.e2e.conftest import delete_broker_objects
from tests.support import eventually

pytestmark = pytest.mark.servers


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.code == 0, self
        return json.loads(self.stdout)


@dataclass
class Deployment:
    """Four services on their own schemas, exchange and queue prefix; the CLI's environment for them."""

    runtimes: dict[str, ServiceRuntime]
    env: dict[str, str]
    amqp_url: str
    exchange: str
    prefix: str

    async def accord(self, *args: str, timeout: float = 60, **env: str) -> Result:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "accord_cli", *args, env={**self.env, **env},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
        assert process.returncode is not None
        return Result(process.returncode, stdout.decode(), stderr.decode())


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serving(runtime: ServiceRuntime) -> AsyncIterator[str]:
    """The runtime's app (lifespan included) behind uvicorn on a free loopback port; yields its base URL."""
    sock = _free_socket()
    server = uvicorn.Server(uvicorn.Config(runtime.app(), log_config=None, access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: _started(server, task), timeout=30)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        sock.close()


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> bool:
    if task.done():
        raise AssertionError(f"the server stopped while starting: {task.exception()!r}")
    return server.started


@pytest.fixture(scope="module")
async def deployment(database_url: str, amqp_url: str) -> AsyncIterator[Deployment]:
    tag = uuid.uuid4().hex[:8]
    exchange, prefix = f"accord.test.{RUN_ID}.cli{tag}", f"test.{RUN_ID}.cli{tag}"
    base = ServiceSettings(database_url=database_url, amqp_url=amqp_url, exchange=exchange, queue_prefix=prefix)

    def settings_of(name: str) -> ServiceSettings:
        return base.model_copy(update={"service_name": name, "database_schema": f"cli_{name}_{tag}"})

    closed_port = _free_socket()  # notifications go nowhere: the SMTP port refuses connections
    notifier_settings = NotifierSettings(**{**settings_of("notifier").model_dump(),
                                            "notifier_smtp_port": closed_port.getsockname()[1]})
    definitions: dict[str, tuple[ServiceDefinition, ServiceSettings]] = {
        "agreements": (AGREEMENTS, settings_of("agreements")), "queries": (QUERIES, settings_of("queries")),
        "kpi": (KPI, settings_of("kpi")), "notifier": (notifier_definition(notifier_settings), notifier_settings)}
    runtimes = {name: ServiceRuntime(d, s) for name, (d, s) in definitions.items()}
    async with contextlib.AsyncExitStack() as stack:
        urls = await asyncio.gather(*(stack.enter_async_context(serving(r)) for r in runtimes.values()))
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
        env.update({f"ACCORD_{name.upper()}_URL": url for name, url in zip(runtimes, urls, strict=True)})
        env.update(ACCORD_DATABASE_URL=database_url, ACCORD_DATABASE_SCHEMA=runtimes["agreements"].settings.db_schema,
                   ACCORD_AMQP_URL=amqp_url, ACCORD_EXCHANGE=exchange, ACCORD_QUEUE_PREFIX=prefix, COLUMNS="250")
        yield Deployment(runtimes, env, amqp_url, exchange, prefix)
    closed_port.close()
    for runtime in runtimes.values():
        await delete_broker_objects(amqp_url, runtime)


@pytest.fixture(scope="module")
async def demo(deployment: Deployment) -> dict[str, Any]:
    """`accord demo --json`, once for the module: the engagement the other tests look at."""
    seeded = await deployment.accord("demo", "--json", "--timeout", "20")
    summary: dict[str, Any] = seeded.json()
    return summary


async def test_the_demo_engagement_is_visible_through_the_cli(deployment: Deployment, demo: dict[str, Any]) -> None:
    agreement = demo["agreement_id"]
    as_client = {"ACCORD_TOKEN": demo["client"]["token"]}
    assert demo["client"]["organisation"] == "Contoso Retail" and demo["health"]["band"] in ("green", "yellow", "red")

    listed = (await deployment.accord("agreements", "list", "--json", **as_client)).json()
    assert [(a["agreement_id"], a["status"]) for a in listed] == [(agreement, "active")]
    shown = (await deployment.accord("agreements", "show", agreement, "--json", **as_client)).json()
    requirements = shown["agreement"]["requirements"]
    assert requirements[demo["requirements"]["forecast"]]["clarifications"][0]["answer"] == \
        "13 weeks, in weekly buckets"
    assert shown["agreement"]["scope_changes"][demo["scope_change"]]["status"] == "approved"
    assert demo["personnel_change"]["contact_id"] in shown["agreement"]["contacts"]
    latest = await deployment.accord("agreements", "show", agreement, "--history", "2", **as_client)
    last_two = [h["event_type"].split(".")[2] for h in shown["history"][-2:]]
    assert latest.code == 0 and "Latest events" in latest.stdout and all(n in latest.stdout for n in last_two)
    assert "1 posted, 0 missed" in latest.stdout
    assert str(shown["history"][-3]["sequence"]) not in latest.stdout.split("Latest events")[1].split()
    paged = (await deployment.accord("agreements", "history", agreement, "--after", "2", "--limit", "3", "--json",
                                      **as_client)).json()
    assert [e["sequence"] for e in paged["items"]] == [3, 4, 5] and paged["next_after"] == 5
    assert paged["items"] == shown["history"][2:5] and paged["total"] == len(shown["history"])
    listed_page = await deployment.accord("agreements", "history", agreement, "--limit", "2", **as_client)
    assert listed_page.code == 0 and f"Events: 1 to 2 ({paged['total']} in all)" in listed_page.stdout
    assert "more: --after 2" in listed_page.stdout
    updates = await deployment.accord("agreements", "history", agreement, "--type", "StatusUpdatePosted", **as_client)
    [update] = (await deployment.accord("agreements", "history", agreement, "--type", "StatusUpdatePosted", "--json",
                                        **as_client)).json()["items"]
    assert update["data"]["summary"].startswith("Failover for the warehouse is live")
    assert f"StatusUpdatePosted events: {update['sequence']} to {update['sequence']} (1 in all)" in updates.stdout
    assert shown["agreement"]["status_updates_posted"] == 1
    document = await deployment.accord("agreements", "document", agreement, **as_client)
    assert document.code == 0 and "Retail analytics retainer" in document.stdout

    queries = (await deployment.accord("queries", "list", agreement, "--json", **as_client)).json()
    by_id = {q["query_id"]: q for q in queries["items"]}
    assert by_id[demo["queries"]["urgent_overdue_soon"]]["priority"] == "urgent"
    assert by_id[demo["queries"]["answered_and_closed"]]["status"] == "closed"
    assert demo["clarification_query"] in by_id
    table = await deployment.accord("queries", "list", agreement, **as_client)
    assert table.code == 0 and "Dashboard shows no sales" in table.stdout

    health = (await deployment.accord("kpi", "health", agreement, "--json", **as_client)).json()
    assert health["health"]["score"] == pytest.approx(demo["health"]["score"], abs=50)
    assert {k["name"]: k["status"] for k in health["kpis"]}["Dashboard availability"] == "breached"
    pretty = await deployment.accord("kpi", "health", agreement, "--history", "2", **as_client)
    assert pretty.code == 0 and "Customer health" in pretty.stdout and "Latest scores" in pretty.stdout
    moves = (await deployment.accord("kpi", "health", agreement, "--history", "2", "--json", **as_client)).json()
    assert 1 <= len(moves["history"]) <= 2 and moves["history"][-1]["recorded_at"] >= moves["history"][0]["recorded_at"]
    assert "history" not in health  # only when asked for

    # a rebuild of the queries read models leaves the same answers
    rebuilt = (await deployment.accord("rebuild", "queries", "--json", ACCORD_DATABASE_SCHEMA=deployment.runtimes[
        "queries"].settings.db_schema)).json()
    assert "query_views" in rebuilt["rebuilt"] or rebuilt["rebuilt"]
    after = (await deployment.accord("queries", "list", agreement, "--json", **as_client)).json()
    assert after["total"] == queries["total"]

    status = (await deployment.accord("status", "--json")).json()
    assert all(s["ready"] for s in status.values())


async def test_events_tail_streams_live_events_with_filters(deployment: Deployment, demo: dict[str, Any]) -> None:
    agreement = demo["agreement_id"]
    tail = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "accord_cli", "events", "tail", "--key", "queries.*", "--agreement", agreement,
        "--type", "QueryRaised", "--type", "queries.QueryAnswered", "--count", "2", "--timeout", "30", "--json",
        env=deployment.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert tail.stderr is not None and tail.stdout is not None
    listening = await asyncio.wait_for(tail.stderr.readline(), 15)
    assert b"listening on" in listening

    raised = (await deployment.accord("queries", "raise", agreement, "Invoice for March?", "--priority", "low",
                                      "--json", ACCORD_TOKEN=demo["client"]["token"])).json()
    answered = await deployment.accord("queries", "answer", raised["query_id"], "Sent on Monday",
                                       ACCORD_TOKEN=demo["provider"]["token"])
    assert answered.code == 0, answered
    stdout, _ = await asyncio.wait_for(tail.communicate(), 30)
    assert tail.returncode == 0
    events = [json.loads(line) for line in stdout.decode().splitlines()]
    assert [e["type"] for e in events] == ["accord.queries.QueryRaised.v1", "accord.queries.QueryAnswered.v1"]
    assert {e["data"]["query_id"] for e in events} == {raised["query_id"]}

    quiet = await deployment.accord("events", "tail", "--type", "NoSuchEvent", "--count", "1", "--timeout", "0.5")
    assert quiet.code == 1 and "only 0 of 1 events" in quiet.stderr


async def test_a_poisoned_message_is_listed_with_its_cause_and_requeued(deployment: Deployment) -> None:
    consumer = next(c for c in deployment.runtimes["queries"].consumers if c.consumer_name == "agreements")
    key = sorted(consumer.routing_keys)[0]
    poison_id = str(uuid.uuid4())
    connection = await aio_pika.connect(deployment.amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await declare_exchange(channel, deployment.exchange)
        watcher = await channel.declare_queue(exclusive=True, auto_delete=True)
        await watcher.bind(exchange, key)
        await exchange.publish(aio_pika.Message(b'{"not": "a CloudEvent"', message_id=poison_id,
                                                content_type="application/json"), routing_key=key)
        assert (await watcher.get(timeout=5)).message_id == poison_id

        async def dead_lettered() -> int:
            probe = await connection.channel()
            queue = await probe.declare_queue(consumer.dlq_name, passive=True)
            count = queue.declaration_result.message_count or 0
            await probe.close()
            return count

        await eventually(dead_lettered, timeout=30)  # a busy shared host can take more than the default 10 s
        for _ in range(2):  # looking does not remove (every consumer bound to the key dead-letters a copy)
            listed = (await deployment.accord("dlq", "list", "--json")).json()
            [letter] = [m for m in listed["messages"] if m["message_id"] == poison_id and
                        m["dlq"] == consumer.dlq_name]
            assert (letter["stage"], letter["consumer"], letter["original_routing_key"]) == (
                "envelope", "agreements", key)
            assert "JSON" in letter["error"] or "json" in letter["error"]
            assert listed["queues"][consumer.dlq_name] == 1
        table = await deployment.accord("dlq", "list", "--queue", consumer.queue_name)
        assert table.code == 0 and poison_id in table.stdout

        requeued = (await deployment.accord("dlq", "requeue", "--queue", consumer.queue_name, "--id", poison_id,
                                            "--json")).json()
        assert [m["message_id"] for m in requeued["requeued"]] == [poison_id] and requeued["not_found"] == []
        again = await watcher.get(timeout=5)
        assert again.message_id == poison_id and again.body == b'{"not": "a CloudEvent"'
        assert again.headers["x-accord-requeued-from"] == consumer.dlq_name
        assert "x-accord-error" not in again.headers
        await eventually(dead_lettered)  # still poison: the consumer dead-letters it again, with its cause

    missing = await deployment.accord("dlq", "requeue", "--id", "no-such-message")
    assert missing.code == 1 and "no-such-message" in missing.stderr
    usage = await deployment.accord("dlq", "requeue")
    assert usage.code == 2 and "--all" in usage.stderr


async def test_errors_have_their_exit_codes(deployment: Deployment, demo: dict[str, Any]) -> None:
    refused = await deployment.accord("agreements", "list", ACCORD_TOKEN="acc_not-a-token")
    async with httpx.AsyncClient() as http:
        expected = (await http.get(f"{deployment.env['ACCORD_AGREEMENTS_URL']}/agreements",
                                   headers={"Authorization": "Bearer acc_not-a-token"})).json()["detail"]
    assert refused.code == 1 and "401" in refused.stderr and expected in refused.stderr
    assert "acc_not-a-token" not in refused.stderr + refused.stdout

    unknown = await deployment.accord("queries", "list", str(uuid.uuid4()), ACCORD_TOKEN=demo["client"]["token"])
    assert unknown.code == 1 and "404" in unknown.stderr

    invalid = await deployment.accord("queries", "raise", demo["agreement_id"], "Subject", "--priority", "bogus",
                                      ACCORD_TOKEN=demo["client"]["token"])
    assert invalid.code == 1 and "422" in invalid.stderr and "priority" in invalid.stderr

    closed = _free_socket()
    port = closed.getsockname()[1]
    closed.close()
    unreachable = await deployment.accord("queries", "list", demo["agreement_id"], ACCORD_TOKEN="t",
                                          ACCORD_QUERIES_URL=f"http://127.0.0.1:{port}")
    assert unreachable.code == 3 and f"127.0.0.1:{port}" in unreachable.stderr
    no_broker = await deployment.accord("events", "tail", "--count", "1", "--timeout", "1",
                                        ACCORD_AMQP_URL=f"amqp://guest:guest@127.0.0.1:{port}/")
    assert no_broker.code == 3 and "guest:guest" not in no_broker.stderr
