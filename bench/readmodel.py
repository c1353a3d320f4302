"""(d) Command → read model: DraftAgreement through its handler until its agreement_summaries row
is visible, with the projection runner running as in the service (rung by every append).

How visibility is observed (no polling, which would take CPU from the system under test): the
runner's `AgreementSummaries` is a subclass that notes the agreement ids it inserts, and the
runner is a subclass that marks those ids as arrived when a batch returns — right after the
batch's transaction committed, from when other connections can read the rows. This hooks the
runner's private ``_batch`` (one transaction per batch); if that ever goes away, every command
counts as lost and the benchmark says so. At the end of each run the number of rows is checked
against the commands sent.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any

import asyncpg

from accord_runtime.eventstore import EventStore
from accord_runtime.projections import Projection, ProjectionRunner
from bench.harness import Arrivals, BenchConfig, database_of, throwaway_database
from bench.latency import CommandPath
from bench.report import Figure
from bench.service import draft, register_parties, settings_for, storage
from contracts import CloudEvent
from contracts.agreements import AgreementDrafted
from services.agreements import handlers
from services.agreements.main import DEFINITION
from services.agreements.projections import AgreementSummaries

DRAFTED = AgreementDrafted.event_type()


class _ObservedSummaries(AgreementSummaries):
    """`AgreementSummaries` that remembers the agreements it inserted since the last commit."""

    def __init__(self) -> None:
        self.inserted: list[str] = []

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[CloudEvent]) -> None:
        await super().apply_batch(conn, events)  # what the runner calls (`apply` delegates to it too)
        self.inserted.extend(str(e.data["agreement_id"]) for e in events if e.type == DRAFTED)


class _TimedRunner(ProjectionRunner):
    """A `ProjectionRunner` that reports the agreement rows a batch made visible, as it commits."""

    def __init__(self, store: EventStore, pool: asyncpg.Pool, projections: Sequence[Projection],
                 observed: _ObservedSummaries, arrivals: Arrivals) -> None:
        super().__init__(store, pool, projections, service="agreements")
        self._observed, self._arrivals = observed, arrivals

    async def _batch(self, *args: Any, **kwargs: Any) -> Any:
        try:
            result = await super()._batch(*args, **kwargs)
        except BaseException:
            self._observed.inserted.clear()  # rolled back: not visible
            raise
        self._arrivals.mark(self._observed.inserted)
        self._observed.inserted.clear()
        return result


async def command_to_read_model(config: BenchConfig) -> list[Figure]:
    path = CommandPath("readmodel", "(d) command → read model", config)
    async with throwaway_database(config) as url:
        for run in range(config.runs):
            async with storage(settings_for(url, f"readmodel_{run}")) as service:
                arrivals = Arrivals()
                observed = _ObservedSummaries()
                projections = [observed if isinstance(p, AgreementSummaries) else p
                               for p in DEFINITION.projections]
                runner = _TimedRunner(service.store, service.pool, projections, observed, arrivals)
                ctx = handlers.Context(service.store, service.pool)
                parties = await register_parties(ctx, runner)
                service.store.on_append(runner.ring)
                running = asyncio.create_task(runner.run(), name="projections")
                try:
                    await path.measure(functools.partial(draft, ctx, parties), arrivals,
                                       database=database_of(url))
                finally:
                    runner.stop()
                    await asyncio.wait_for(running, timeout=10)
                rows = await service.pool.fetchval("SELECT count(*) FROM agreement_summaries")
                if rows != len(arrivals.seen):
                    raise RuntimeError(f"{rows} agreement rows, but {len(arrivals.seen)} observed")
    return path.figures()
