"""(i) HTTP commands per second: ``POST /agreements`` (a draft) with a bearer token, through the
agreements service's FastAPI app served by uvicorn on 127.0.0.1, with the whole service running.

The service starts through its app's lifespan (`ServiceRuntime.app()`: doorbell, outbox relay,
projections, bus consumers), in a schema of its own, publishing to the benchmark's exchange; uvicorn
serves the app in this process on a free loopback port (its lifespan off: the benchmark runs the
app's lifespan itself, so a failing start-up raises here instead of exiting). An organisation pair,
a user of the client and an API token are made through the handlers, as the operator commands make
them. Then `writers` clients (httpx, keep-alive, one connection each) post drafts back to back:
a warm-up, then the measured window (closed loop). Latency is each response's, from the request's
start, in the closed loop (so it is the latency at the throughput reached, not at an offered rate).
Each run checks that the service recorded one `AgreementDrafted` per 201 response.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import uvicorn
from fastapi import FastAPI

from accord_runtime.service import ServiceRuntime
from bench.cpu import CpuMeter
from bench.harness import BenchConfig, bounded, database_of, percentile, throwaway_database
from bench.report import Figure
from bench.service import Parties, delete_broker_objects, issue_token, register_parties, settings_for
from contracts.agreements import AgreementDrafted
from services.agreements import handlers
from services.agreements.main import DEFINITION

STARTUP_SECONDS = 10.0


class _Server(uvicorn.Server):
    """uvicorn inside the benchmark: Ctrl-C stops the benchmark, not just the server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """`app` served by uvicorn on a free port of 127.0.0.1 until the block ends; yields its URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = _Server(uvicorn.Config(app, lifespan="off", log_config=None, access_log=False,
                                    timeout_graceful_shutdown=5))
    task = asyncio.create_task(server.serve(sockets=[listener]), name="uvicorn")
    try:
        for _ in bounded(STARTUP_SECONDS):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if not server.started:
            if task.done():
                task.result()  # raises what stopped it
            raise RuntimeError(f"uvicorn did not start in {STARTUP_SECONDS} s")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=STARTUP_SECONDS)
        listener.close()


@dataclass
class Window:
    """What the clients saw in one closed-loop window."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # of the 201 responses
    statuses: Counter[int] = field(default_factory=Counter)


async def drive(client: httpx.AsyncClient, parties: Parties, writers: int, seconds: float) -> Window:
    """`writers` clients posting drafts back to back for `seconds`."""
    window = Window()
    body = {"title": "Bench agreement", "summary": "Benchmark",
            "client_organisation_id": str(parties.client), "provider_organisation_id": str(parties.provider)}

    async def writer() -> None:
        for _ in bounded(seconds):
            started = time.perf_counter()
            response = await client.post("/agreements", json=body)
            window.statuses[response.status_code] += 1
            if response.status_code == 201:
                window.latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    window.seconds = time.perf_counter() - started
    return window


async def api_commands(config: BenchConfig) -> list[Figure]:
    title = f"(i) POST /agreements over HTTP with a bearer token, {config.writers} clients"
    rate = Figure("api_sustained", f"{title} (closed loop)", "commands/s")
    p50 = Figure("api_p50", f"{title}: p50 latency", "ms")
    p99 = Figure("api_p99", f"{title}: p99 latency", "ms")
    exchange_name = config.exchange_name("api")
    async with throwaway_database(config) as url:
        for run in range(config.runs):
            settings = settings_for(url, f"api_{run}", amqp_url=config.amqp_url, exchange=exchange_name,
                                    queue_prefix=f"bench.{config.run_id}.api{run}")
            runtime = ServiceRuntime(DEFINITION, settings)
            app = runtime.app()
            try:
                async with app.router.lifespan_context(app), serving(app) as base_url:
                    assert runtime.projections is not None
                    ctx = handlers.Context(runtime.store, runtime.pool)
                    parties = await register_parties(ctx, runtime.projections)
                    token = await issue_token(ctx, runtime.projections, parties.client)
                    limits = httpx.Limits(max_connections=config.writers,
                                          max_keepalive_connections=config.writers)
                    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30,
                                                 headers={"Authorization": f"Bearer {token}"}) as client:
                        warmup = await drive(client, parties, config.writers, config.warmup)
                        with CpuMeter(database_of(url), rabbitmq=True) as meter:
                            window = await drive(client, parties, config.writers, config.window)
                        created = window.statuses[201]
                        cost = meter.per(created)
                    drafted = await runtime.pool.fetchval("SELECT count(*) FROM events WHERE event_type = $1",
                                                          AgreementDrafted.event_type())
            finally:
                await delete_broker_objects(runtime, exchange=True)
            if drafted != warmup.statuses[201] + created:
                raise RuntimeError(f"{drafted} agreements drafted, but {warmup.statuses[201] + created}"
                                   " answered 201")
            refused = {status: n for status, n in (warmup.statuses + window.statuses).items() if status != 201}
            if refused:
                rate.notes.append(f"run {run + 1}: answers other than 201: {refused}")
            rate.add_run(created / window.seconds, cost)
            p50.add_run(percentile(window.latencies, 50) * 1000)
            p99.add_run(percentile(window.latencies, 99) * 1000)
    return [p50, p99, rate]
