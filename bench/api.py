"""(i) HTTP commands per second: ``POST /agreements`` (a draft) with a bearer token, through the
agreements service's FastAPI app served by uvicorn on 127.0.0.1, with the whole service running.

The service starts through its app's lifespan (`ServiceRuntime.app()`: doorbell, outbox relay,
projections, bus consumers), in a schema of its own, publishing to the benchmark's exchange; uvicorn
serves the app in this process on a free loopback port, configured as `serve` configures it (but
its lifespan off: the benchmark runs the app's lifespan itself, so a failing start-up raises here
instead of exiting). An organisation pair, a user of the client and an API token are made through
the handlers, as the operator commands make them. Then a load generator in a process of its own
(`bench.httpload`: `writers` keep-alive connections over loopback) posts drafts back to back: a
warm-up, then the measured window (closed loop). The CPU meter's *this* is therefore the service
alone; the load generator's CPU per request is a figure of its own. Latency is each response's,
from the request's start, in the closed loop (so it is the latency at the throughput reached, not
at an offered rate). Each run checks that the service recorded one `AgreementDrafted` per 201.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from accord_runtime.cli import uvicorn_config
from accord_runtime.service import ServiceRuntime
from bench.cpu import CpuMeter
from bench.harness import BenchConfig, bounded, database_of, percentile, throwaway_database
from bench.httpload import LoadSpec, Window
from bench.report import Figure
from bench.service import Parties, delete_broker_objects, issue_token, register_parties, settings_for
from contracts.agreements import AgreementDrafted
from services.agreements import handlers
from services.agreements.main import DEFINITION

STARTUP_SECONDS = 10.0
LOAD_GENERATOR_START = 30.0  # seconds for the load generator to start and to finish its last requests
ROOT = Path(__file__).resolve().parent.parent


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
    server = _Server(uvicorn_config(app, lifespan="off", timeout_graceful_shutdown=5))
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


#: Bytes of one report line: it carries every latency of the window (above 64 KiB from ~3,000 requests).
REPORT_LIMIT = 64 * 1024 * 1024


@contextlib.asynccontextmanager
async def load_generator(spec: LoadSpec) -> AsyncIterator[tuple[Window, Callable[[], Awaitable[Window]]]]:
    """`bench.httpload` started in a process of its own; yields its warm-up and how to run the window.

    The window starts when the caller asks for it (after starting its CPU meter) and ends when the
    generator reports it, so the meter spans the whole window and nothing of the warm-up.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.httpload", json.dumps(dataclasses.asdict(spec)),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
        limit=REPORT_LIMIT)
    assert process.stdin is not None and process.stdout is not None
    stdin, stdout = process.stdin, process.stdout
    limit = LOAD_GENERATOR_START + spec.warmup + spec.window

    async def report() -> Window:
        line = await asyncio.wait_for(stdout.readline(), timeout=limit)
        if not line:
            raise RuntimeError(f"the load generator exited ({await process.wait()}) without reporting")
        return Window.from_json(line.decode())

    async def window() -> Window:
        stdin.write(b"go\n")
        await stdin.drain()
        return await report()

    try:
        yield await report(), window
    finally:
        if process.returncode is None:
            stdin.close()  # the generator stops at end of input
            try:
                await asyncio.wait_for(process.wait(), timeout=STARTUP_SECONDS)
            except TimeoutError:
                process.kill()
                await process.wait()


async def api_commands(config: BenchConfig) -> list[Figure]:
    title = f"(i) POST /agreements over HTTP with a bearer token, {config.writers} clients"
    rate = Figure("api_sustained", f"{title} (closed loop)", "commands/s")
    p50 = Figure("api_p50", f"{title}: p50 latency", "ms")
    p99 = Figure("api_p99", f"{title}: p99 latency", "ms")
    generator = Figure("api_client_cpu", f"{title}: the load generator's CPU (another process, not in this)",
                       "µs/request")
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
                    spec = LoadSpec(base_url, "/agreements", draft_body(parties),
                                    {"Authorization": f"Bearer {token}"}, config.writers, config.warmup,
                                    config.window)
                    async with load_generator(spec) as (warmup, measure):
                        with CpuMeter(database_of(url), rabbitmq=True) as meter:
                            window = await measure()
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
            generator.add_run(window.cpu_seconds * 1e6 / max(window.statuses.total(), 1))
    return [p50, p99, rate, generator]


def draft_body(parties: Parties) -> dict[str, Any]:
    return {"title": "Bench agreement", "summary": "Benchmark",
            "client_organisation_id": str(parties.client), "provider_organisation_id": str(parties.provider)}
