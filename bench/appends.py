"""(b) Append throughput of `EventStore.append` and (e) the speed of a projection rebuild."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

from accord_runtime.eventstore import EventStore, Metadata
from bench.cpu import CpuMeter
from bench.harness import BenchConfig, closed_loop, database_of, throwaway_database
from bench.report import Figure, Target
from bench.service import ACTOR, settings_for, storage
from contracts.agreements import AgreementProposed
from services.agreements.domain import Agreement, stream_id

#: Appends to one stream before a writer moves on to a fresh one.
STREAM_LENGTH = 50
#: Events in each seeded agreement: drafted, proposed, accepted twice, activated.
EVENTS_PER_AGREEMENT = 5


def _appender(store: EventStore) -> Callable[[int], Awaitable[int]]:
    """`work(writer)` for `closed_loop`: one event per append, each writer on its own streams."""
    heads: dict[int, tuple[str, int]] = {}
    meta = Metadata.new(ACTOR)

    async def append(writer: int) -> int:
        stream, version = heads.get(writer, ("", STREAM_LENGTH))
        if version >= STREAM_LENGTH:
            stream, version = f"agreement-{uuid.uuid4()}", 0
        event = AgreementProposed(agreement_id=uuid.uuid4(), proposed_by_side="client")
        await store.append(stream, version, [event], meta)
        heads[writer] = (stream, version + 1)
        return 1

    return append


async def append_throughput(config: BenchConfig) -> list[Figure]:
    single = Figure("append_1", "(b) EventStore.append, 1 writer, 1 event/append", "events/s",
                    baseline="raw_insert")
    many = Figure("append_n", f"(b) EventStore.append, {config.writers} writers, 1 event/append",
                  "events/s", baseline="raw_insert",
                  target=Target("≥ 5,000/s and ≥ 80 % of (a)", at_least=5_000, min_ratio=0.8))
    async with throwaway_database(config) as url:
        for run in range(config.runs):
            for figure, writers in ((single, 1), (many, config.writers)):
                async with storage(settings_for(url, f"append_{run}_{writers}")) as service:
                    work = _appender(service.store)
                    await closed_loop(writers, config.warmup, work)
                    with CpuMeter(database_of(url)) as meter:
                        result = await closed_loop(writers, config.window, work)
                    figure.add_run(result.rate, meter.per(result.items))
    return [single, many]


async def seed_agreements(store: EventStore, events: int, writers: int) -> int:
    """Append whole agreement lifecycles (5 events per append) from `writers` tasks."""
    agreements = events // EVENTS_PER_AGREEMENT
    client, provider = uuid.uuid4(), uuid.uuid4()
    meta = Metadata.new(ACTOR)

    async def writer(share: range) -> None:
        for n in share:
            agreement = Agreement(uuid.uuid4())
            agreement.draft(title=f"Agreement {n}", summary="Seeded for a rebuild benchmark",
                            client_organisation_id=client, provider_organisation_id=provider,
                            by_organisation_id=client)
            agreement.propose(client)
            agreement.accept(client)
            agreement.accept(provider)
            await store.append(stream_id(agreement.agreement_id), 0, agreement.pending, meta)

    await asyncio.gather(*(writer(range(w, agreements, writers)) for w in range(writers)))
    return agreements * EVENTS_PER_AGREEMENT


class _BudgetSpent(Exception):
    """Raised by the progress callback to end a rebuild that is taking too long."""


class _Progress:
    """A rebuild's progress callback: counts the events read, and ends the rebuild between two
    batches (so no query is cancelled) once `budget` seconds have passed."""

    def __init__(self, budget: float) -> None:
        self.total = 0
        self._deadline = time.perf_counter() + budget

    def __call__(self, events: int) -> None:
        self.total += events
        if time.perf_counter() >= self._deadline:
            raise _BudgetSpent


async def rebuild(config: BenchConfig) -> list[Figure]:
    """(e) `ProjectionRunner.rebuild()` of every agreements projection over seeded events.

    The seeding is measured too (once): it is `EventStore.append` with 5 events per append.
    """
    seeding = Figure("seed", f"(e) seeding: EventStore.append, {config.writers} writers,"
                     f" {EVENTS_PER_AGREEMENT} events/append", "events/s", baseline="raw_insert")
    figure = Figure("rebuild", f"(e) ProjectionRunner.rebuild(), {config.rebuild_events:,} events",
                    "events/s", target=Target("≥ 20,000/s", at_least=20_000))
    async with throwaway_database(config) as url, storage(settings_for(url, "rebuild")) as service:
        started = time.perf_counter()
        with CpuMeter(database_of(url)) as meter:
            seeded = await seed_agreements(service.store, config.rebuild_events, config.writers)
        seeding.add_run(seeded / (time.perf_counter() - started), meter.per(seeded))
        complete = True
        for _ in range(config.runs):
            read = _Progress(config.rebuild_budget)
            started = time.perf_counter()
            with CpuMeter(database_of(url)) as meter:
                try:
                    async with asyncio.timeout(config.rebuild_budget + config.drain_timeout):
                        await service.projections.rebuild(progress=read)
                except _BudgetSpent:
                    complete = False
            figure.add_run(read.total / (time.perf_counter() - started), meter.per(read.total))
        if not complete:
            figure.notes.append(f"stopped after {config.rebuild_budget:.0f} s; rate of the part done")
        else:
            rows = await service.pool.fetchval("SELECT count(*) FROM agreement_history")
            if rows != seeded:
                raise RuntimeError(f"rebuild projected {rows} history rows of {seeded} events")
    return [seeding, figure]
