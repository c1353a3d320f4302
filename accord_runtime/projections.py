"""Read models built by idempotent projections, and the runner that keeps them up to date.

A `Projection` turns events into rows of its own tables. The same `apply` serves three feeds:
the catch-up runner over the service's own event store (with a checkpoint), the bus consumer
over other services' events (with the inbox), and `rebuild`, which clears the tables and replays
everything — so a rebuilt read model equals the incrementally built one by construction, and a
test holds it to that.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable
from uuid import UUID

import asyncpg
import structlog

from accord_runtime.doorbell import work_left
from accord_runtime.eventstore import START, EventStore, Position, RecordedEvent
from accord_runtime.metrics import HANDLER_LATENCY, PROJECTION_POSITION
from accord_runtime.postgres import TRANSIENT_ERRORS, transaction
from contracts import CloudEvent

log = structlog.get_logger(__name__)


class EventHandler(Protocol):
    """Handles events inside the caller's transaction: a projection, or a policy reacting to them."""

    name: str
    handles: frozenset[str]  # current CloudEvents types (e.g. "accord.agreements.AgreementDrafted.v1")

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        """Handle one event. Called at most once per event id per handler."""


@runtime_checkable
class AppliesBatches(Protocol):
    """A projection that folds a batch of events at once (a rebuild reads thousands per batch)."""

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[CloudEvent]) -> None:
        """Fold `events` (in global order) in; the same result as applying them one by one."""


@runtime_checkable
class Projection(EventHandler, Protocol):
    """An event handler that folds events into read-model tables of its own, so it can be rebuilt."""

    async def clear(self, conn: asyncpg.Connection) -> None:
        """Delete every row this projection wrote (before a rebuild)."""


@functools.lru_cache(maxsize=4096)
def uuid_from(value: str | UUID) -> UUID:
    """An id from event data, remembered: a projection reads the same agreement's id from each of
    its events in a batch, and `UUID()` costs 1.5 µs (a rebuild does it several times per event)."""
    return UUID(str(value))


async def apply_all(handler: EventHandler, conn: asyncpg.Connection, events: Sequence[CloudEvent]) -> None:
    """Apply those of `events` the handler handles, in order: as one batch where the handler takes
    batches, else one by one."""
    events = [e for e in events if e.type in handler.handles]
    if not events:
        return
    if isinstance(handler, AppliesBatches):
        await handler.apply_batch(conn, events)
    else:
        for event in events:
            await handler.apply(conn, event)


class ProjectionRunner:
    """Keeps projections over the service's own event store up to date, with checkpoints.

    Each batch runs in one transaction that locks the projections' checkpoint rows, reads the
    next events in global order, applies them and moves the checkpoints — so replicas running
    the same runner never apply an event twice, and a crash mid-batch applies nothing of it.
    Those transactions commit without waiting for the WAL flush (`transaction(durable=False)`):
    one lost in a crash takes its checkpoint with it and is applied again. That holds only while
    projections write nothing but their tables, so a batch that appended events or set a timer
    (which the relay or the scheduler could act on before the flush) fails instead.
    """

    def __init__(self, store: EventStore, pool: asyncpg.Pool, projections: Sequence[Projection],
                 *, service: str, batch_size: int = 100, rebuild_batch_size: int = 1000,
                 poll_interval: float = 1.0) -> None:
        names = [p.name for p in projections]
        if len(set(names)) != len(names):
            raise ValueError(f"projection names must be unique: {names}")
        self._store, self._pool = store, pool
        self._projections = {p.name: p for p in projections}
        self._service = service
        # Live batches stay small: a batch's Python work runs between two awaits, and 500 events of
        # it held the event loop (and every command waiting on it) for 80-130 ms after a burst.
        self._batch_size = batch_size
        self._rebuild_batch_size = rebuild_batch_size
        self._poll_interval = poll_interval
        self._rung = asyncio.Event()
        self._stopping = asyncio.Event()

    def ring(self) -> None:
        """Wake the runner: new events were committed."""
        self._rung.set()

    async def run(self) -> None:
        """Catch up whenever rung (and every `poll_interval` as a safety net) until stopped."""
        while not self._stopping.is_set():
            self._rung.clear()
            try:
                await self.catch_up(timeout=None)
            except TRANSIENT_ERRORS as error:
                log.warning("projection catch-up interrupted; retrying", error=str(error))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wait_for_ring_or_stop()

    async def _wait_for_ring_or_stop(self) -> None:
        ring = asyncio.ensure_future(self._rung.wait())
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({ring, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ring.cancel()
            stop.cancel()

    def stop(self) -> None:
        self._stopping.set()

    async def catch_up(self, names: Iterable[str] | None = None, *, timeout: float | None = 30.0) -> int:
        """Apply every event committed before the call; return how many events were read.

        Reads stop short of transactions still running anywhere (the gap guard), so while one
        is open the runner retries every few milliseconds instead of reporting done early.
        """
        selected = sorted(names or self._projections)
        target = await self._head()
        total = 0
        async with asyncio.timeout(timeout):
            while True:
                read, reached = await self._batch(selected)
                total += read
                if read == self._batch_size:
                    continue
                if target is None or reached >= target or self._stopping.is_set():
                    return total
                await self._until_readable(target)

    async def _until_readable(self, target: Position) -> None:
        """Wait until no transaction older than `target`'s is running (the gap guard lets readers
        reach it), asking with one light query every few milliseconds rather than a batch."""
        pause = 0.001
        while not self._stopping.is_set():
            if await self._pool.fetchval(
                    "SELECT $1::text::xid8 < pg_snapshot_xmin(pg_current_snapshot())", str(target.transaction_id)):
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    async def _head(self) -> Position | None:
        """The last committed event in global order (whether or not readers may pass it yet)."""
        row = await self._pool.fetchrow(
            "SELECT transaction_id::text::bigint AS tx, global_position FROM events"
            " ORDER BY transaction_id DESC, global_position DESC LIMIT 1")
        return Position(row["tx"], row["global_position"]) if row else None

    async def _batch(self, names: list[str]) -> tuple[int, Position]:
        """Apply the next batch; return how many events were read and the lowest checkpoint after it."""
        async with self._batch_transaction(names) as conn:
            checkpoints = await self._lock_checkpoints(conn, names)
            start = min(checkpoints.values())
            started = time.perf_counter()
            events = await self._store.read_all(start, self._batch_size, conn=conn)
            if not events:
                return 0, start
            for name in names:
                projection = self._projections[name]
                await apply_all(projection, conn, [r.envelope for r in events if r.position > checkpoints[name]])
            moved = await self._move_checkpoints(conn, checkpoints, events[-1].position)
            HANDLER_LATENCY.labels(self._service, "projections").observe(time.perf_counter() - started)
            return len(events), min(moved.values())

    async def _fold(self, name: str, events: list[RecordedEvent]) -> None:
        """Apply `events` to one projection in a transaction of its own (a rebuild's step)."""
        projection = self._projections[name]
        async with self._batch_transaction([name]) as conn:
            checkpoint = (await self._lock_checkpoints(conn, [name]))[name]
            due = events if events[0].position > checkpoint else [r for r in events if r.position > checkpoint]
            await apply_all(projection, conn, [r.envelope for r in due])
            await self._move_checkpoints(conn, {name: checkpoint}, events[-1].position)

    @contextlib.asynccontextmanager
    async def _batch_transaction(self, names: list[str]) -> AsyncIterator[asyncpg.Connection]:
        """The transaction of a batch of the projections `names`: committed without waiting for the
        flush (if a crash loses it, its checkpoints go with it and the events are applied again),
        and rolled back with an error if the projections left work for the workers."""
        async with transaction(self._pool, durable=False) as conn:
            noted = work_left()
            yield conn
            if work_left() != noted:
                raise RuntimeError(f"projections {names} appended events or set a timer: a projection of the"
                                   " runner may write only its own tables (its batches commit without waiting"
                                   " for the flush)")

    async def _move_checkpoints(self, conn: asyncpg.Connection, checkpoints: dict[str, Position],
                                last: Position) -> dict[str, Position]:
        """Move the (locked) checkpoints to `last`, never backwards; return where they are now."""
        moved = {name: max(checkpoint, last) for name, checkpoint in checkpoints.items()}
        await conn.execute(
            "UPDATE projection_checkpoints AS c SET transaction_id = m.tx::text::xid8,"
            " global_position = m.position, updated_at = now()"
            " FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS m(projection, tx, position)"
            " WHERE c.projection = m.projection",
            list(moved), [p.transaction_id for p in moved.values()], [p.global_position for p in moved.values()])
        for name, position in moved.items():
            PROJECTION_POSITION.labels(self._service, name).set(position.global_position)
        return moved

    async def _lock_checkpoints(self, conn: asyncpg.Connection, names: list[str]) -> dict[str, Position]:
        """Lock and read the projections' checkpoints, creating those that do not exist yet."""
        for _ in range(2):
            rows = await conn.fetch(
                "SELECT projection, transaction_id::text::bigint AS tx, global_position"
                " FROM projection_checkpoints WHERE projection = ANY($1::text[]) ORDER BY projection FOR UPDATE",
                names)
            if len(rows) == len(names):
                break
            await conn.execute(
                "INSERT INTO projection_checkpoints (projection, transaction_id, global_position)"
                " SELECT unnest($1::text[]), '0'::xid8, 0 ON CONFLICT DO NOTHING", names)
        return {r["projection"]: Position(r["tx"], r["global_position"]) for r in rows}

    async def rebuild(self, names: Iterable[str] | None = None,
                      progress: Callable[[int], None] | None = None) -> int:
        """Clear the projections' tables, reset their checkpoints and replay the whole store.

        The clear and the checkpoint reset commit together and every batch holds the checkpoint
        locks, so a runner in a running service never applies an event to a read model twice.
        Readers see the read model fill up again from empty while it runs.
        """
        selected = sorted(names or self._projections)
        unknown = set(selected) - set(self._projections)
        if unknown:
            raise KeyError(f"unknown projections: {sorted(unknown)}")
        async with transaction(self._pool) as conn:
            await self._lock_checkpoints(conn, selected)
            for name in selected:
                await self._projections[name].clear(conn)
            await conn.execute(
                "UPDATE projection_checkpoints SET transaction_id = '0'::xid8, global_position = 0"
                " WHERE projection = ANY($1::text[])", selected)
        return await self._replay(selected, progress) + await self.catch_up(selected)

    async def _replay(self, names: list[str], progress: Callable[[int], None] | None) -> int:
        """Read the store from the start and fold it into the projections, each in transactions
        of its own on a connection of its own, while the next batch is read: Postgres reads and
        writes while Python folds, instead of each waiting for the other (bench (e): 15,600-17,000
        → 17,500-20,000 events/s). Each transaction moves its projection's checkpoint with its rows."""
        total = 0
        reading = asyncio.ensure_future(self._store.read_all(START, self._rebuild_batch_size))
        try:
            while events := await reading:
                reading = asyncio.ensure_future(self._store.read_all(events[-1].position, self._rebuild_batch_size))
                await _all([self._fold(name, events) for name in names])
                total += len(events)
                if progress:
                    progress(len(events))
            return total
        finally:
            reading.cancel()


async def _all(steps: Iterable[Awaitable[None]]) -> None:
    """Run `steps` concurrently; if one fails, cancel the others and raise its error."""
    tasks = [asyncio.ensure_future(step) for step in steps]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
