"""Benchmark: what one more event costs on an agreement with a long history.

Agreements live for years, and every change is an event on the agreement's one stream. This
seeds agreements of growing length (status updates posted on an active agreement, appended in
bulk), then, for each length, times two things on it, one event at a time:

* **command**: `handlers.change_agreement` posting one more status update (load the agreement,
  decide, append with the status clock's timer), as the API runs it;
* **projections**: the agreements service's `ProjectionRunner.catch_up()` applying that event
  (every projection of the service, the shared-agreement document included).

    .venv/bin/python -m bench.history [--lengths 10,100,1000,3000] [--samples 30]

Prints the median and p90 of each, in ms, per length. A throwaway database, like `bench.run`'s.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from accord_runtime.eventstore import Metadata
from bench.harness import BenchConfig, by_length_cli, p50_p90_ms, throwaway_database
from bench.service import ACTOR, Storage, settings_for, storage
from services.agreements import handlers
from services.agreements.domain import Agreement, stream_id

CLIENT, PROVIDER = uuid.uuid4(), uuid.uuid4()
SEED_CHUNK = 500  # events appended at once while seeding


async def seed(service: Storage, length: int, client: uuid.UUID = CLIENT, provider: uuid.UUID = PROVIDER
               ) -> uuid.UUID:
    """An active agreement with a communication plan and status updates, `length` events in all."""
    agreement = Agreement(uuid.uuid4())
    agreement.draft(title="Long-lived", summary="", client_organisation_id=client,
                    provider_organisation_id=provider, by_organisation_id=client)
    agreement.set_communication_plan(client, status_update_every_seconds=None, meetings="weekly", channels=[],
                                     now=datetime.now(UTC))
    agreement.propose(client)
    agreement.accept(client)
    agreement.accept(provider)
    meta, version = Metadata.new(ACTOR), 0
    while True:
        while len(agreement.pending) < min(SEED_CHUNK, length - version):
            agreement.post_status_update(provider, update_id=uuid.uuid4(), summary="all well",
                                         now=datetime.now(UTC))
        result = await service.store.append(stream_id(agreement.agreement_id), version, agreement.pending, meta)
        version = result.version
        agreement.pending.clear()
        if version >= length:
            return agreement.agreement_id


async def measure(service: Storage, agreement_id: uuid.UUID, samples: int) -> tuple[list[float], list[float]]:
    ctx = handlers.Context(service.store, service.pool)
    meta = Metadata.new(ACTOR)
    commands, projections = [], []
    for _ in range(samples):
        started = time.perf_counter()
        await handlers.change_agreement(ctx, agreement_id, meta, lambda a, now: a.post_status_update(
            PROVIDER, update_id=uuid.uuid4(), summary="one more", now=now))
        commands.append(time.perf_counter() - started)
        started = time.perf_counter()
        await service.projections.catch_up()
        projections.append(time.perf_counter() - started)
    return commands, projections


async def main(lengths: list[int], samples: int) -> None:
    config = BenchConfig.create(quick=False)
    async with throwaway_database(config) as url, storage(settings_for(url, "history")) as service:
        print(f"{'events':>7}  {'command p50 / p90 ms':>21}  {'projections p50 / p90 ms':>25}")
        for length in lengths:
            agreement_id = await seed(service, length)
            await service.projections.catch_up(timeout=None)
            commands, projections = await measure(service, agreement_id, samples)
            print(f"{length:>7}  {p50_p90_ms(commands):>21}  {p50_p90_ms(projections):>25}")


def cli() -> None:
    by_length_cli("python -m bench.history", __doc__, main, lengths="10,100,1000,3000", samples=30)


if __name__ == "__main__":
    cli()
