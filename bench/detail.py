"""Benchmark: `GET /agreements/{id}` (the detail view) against the length of an agreement's history.

The detail view returns the agreement's snapshot and its whole history, or with
`?history_limit=10` only the latest ten entries of it (what `accord agreements show` asks for);
both are timed, and a page of 100 entries of `GET /agreements/{id}/history`. This starts the
agreements service through its app's lifespan in a throwaway database, seeds agreements of
growing length as `bench.history` does (status updates on an active agreement), and times the
detail view of each through the app in this process (httpx's ASGI transport, a bearer token).

    .venv/bin/python -m bench.detail [--lengths 10,100,1000,3000] [--samples 15]

Prints the median time, in ms, and the size of the response per length and request.
"""

from __future__ import annotations

import statistics
import time

import httpx

from accord_runtime.service import ServiceRuntime
from bench.harness import BenchConfig, by_length_cli, throwaway_database
from bench.history import seed
from bench.service import Storage, delete_broker_objects, issue_token, register_parties, settings_for
from services.agreements import handlers
from services.agreements.main import DEFINITION


async def main(lengths: list[int], samples: int) -> None:
    config = BenchConfig.create(quick=False)
    async with throwaway_database(config) as url:
        runtime = ServiceRuntime(DEFINITION, settings_for(url, "detail", amqp_url=config.amqp_url,
                                                          exchange=config.exchange_name("detail"),
                                                          queue_prefix=f"bench.{config.run_id}.detail"))
        try:
            await measure(runtime, lengths, samples)
        finally:
            await delete_broker_objects(runtime, exchange=True)


async def measure(runtime: ServiceRuntime, lengths: list[int], samples: int) -> None:
    app = runtime.app()
    async with app.router.lifespan_context(app):
        assert runtime.projections is not None
        service = Storage(runtime.pool, runtime.store, runtime.projections)
        ctx = handlers.Context(runtime.store, runtime.pool)
        parties = await register_parties(ctx, runtime.projections)
        headers = {"Authorization": f"Bearer {await issue_token(ctx, runtime.projections, parties.client)}"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://accord") as api:
            requests = {"whole": ("", {}), "latest 10": ("", {"history_limit": 10}),
                        "history page": ("/history", {"after": 0, "limit": 100})}
            print(f"{'events':>7}  " + "  ".join(f"{name + ' ms':>15} {'KB':>6}" for name in requests))
            for length in lengths:
                agreement_id = await seed(service, length, parties.client, parties.provider)
                await runtime.projections.catch_up(timeout=None)
                cells = []
                for path, params in requests.values():
                    took = []
                    for _ in range(samples):
                        started = time.perf_counter()
                        response = await api.get(f"/agreements/{agreement_id}{path}", params=params, headers=headers)
                        took.append(time.perf_counter() - started)
                        response.raise_for_status()
                    cells.append(f"{statistics.median(took) * 1000:15.1f} {len(response.content) / 1024:6.0f}")
                print(f"{length:>7}  " + "  ".join(cells))


def cli() -> None:
    by_length_cli("python -m bench.detail", __doc__, main, lengths="10,100,1000,3000", samples=15)


if __name__ == "__main__":
    cli()
