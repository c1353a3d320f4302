"""An append-only event store on PostgreSQL with optimistic concurrency and a gap-safe global order.

Appends are one SQL statement: it checks the stream's head against the expected version and
inserts the events and their outbox rows together, so they commit or roll back as one. Two
writers racing for the same stream version meet the ``(stream_id, stream_version)`` unique
index; the loser gets `ConcurrencyError` and nothing of it is written.

Reading all events in global order uses ``(transaction_id, global_position)`` and only returns
rows of transactions older than the oldest still running (``pg_snapshot_xmin``), so a reader
never moves past an event whose transaction commits late — without a table lock that would
serialize every writer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar, cast
from uuid import UUID, uuid4

import asyncpg

from accord_runtime.doorbell import note_work_left
from accord_runtime.metrics import events_appended
from accord_runtime.postgres import json_bytes
from contracts import CloudEvent, EventData


class ConcurrencyError(Exception):
    """The stream moved on since the caller read it; nothing was written."""

    def __init__(self, stream_id: str, expected: int, actual: int | None) -> None:
        self.stream_id, self.expected, self.actual = stream_id, expected, actual
        found = "a concurrent append" if actual is None else f"version {actual}"
        super().__init__(f"stream {stream_id!r}: expected version {expected}, found {found}")

MAX_ATTEMPTS = 5
T = TypeVar("T")


async def retry_on_conflict(attempt: Callable[[], Awaitable[T]], *, attempts: int = MAX_ATTEMPTS) -> T:
    """Run a load-decide-append `attempt` again while another writer moved its stream meanwhile.

    Each attempt must load afresh; after `attempts` conflicts the last `ConcurrencyError` propagates.
    """
    for _ in range(attempts - 1):
        try:
            return await attempt()
        except ConcurrencyError:
            continue
    return await attempt()


async def retry_on_conflict_in(conn: asyncpg.Connection, attempt: Callable[[], Awaitable[T]], *,
                               attempts: int = MAX_ATTEMPTS) -> T:
    """`retry_on_conflict` inside the caller's transaction (a timer's, a consumer's): each attempt
    runs in a savepoint, so a conflict undoes only that attempt."""

    async def in_savepoint() -> T:
        async with conn.transaction():
            return await attempt()

    return await retry_on_conflict(in_savepoint, attempts=attempts)


class DuplicateEventError(Exception):
    """An event id that is already in the store was appended again; nothing was written."""

class Position(NamedTuple):
    """A place in the global order: the writing transaction, then the position within it."""

    transaction_id: int
    global_position: int

START = Position(0, 0)

@dataclass(frozen=True)
class Metadata:
    """Why an event happened and who caused it; carried in the envelope's extensions."""

    actor: str
    correlation_id: UUID
    causation_id: UUID | None = None

    @classmethod
    def new(cls, actor: str) -> Metadata:
        return cls(actor=actor, correlation_id=uuid4())

    def caused_by(self, envelope: CloudEvent, actor: str | None = None) -> Metadata:
        """Metadata for an event that reacts to `envelope`: same correlation, caused by it."""
        return Metadata(actor or self.actor, envelope.correlationid, envelope.id)

class RecordedEvent(NamedTuple):
    """An event as read in global order (a tuple: a rebuild makes tens of thousands)."""

    position: Position
    envelope: CloudEvent

@dataclass(frozen=True)
class AppendResult:
    stream_id: str
    version: int
    envelopes: list[CloudEvent]

_APPEND = """
WITH request AS (
    SELECT * FROM unnest($1::text[], $2::int[]) AS r(stream_id, expected)
), head AS (
    SELECT r.stream_id, r.expected,
           coalesce((SELECT max(stream_version) FROM events e WHERE e.stream_id = r.stream_id), 0) AS version
    FROM request r
), event AS (
    SELECT * FROM unnest($3::uuid[], $4::text[], $5::int[], $6::text[], $7::text[], $8::uuid[], $9::uuid[],
                         $10::text[], $11::timestamptz[], $12::text[], $13::bytea[])
        WITH ORDINALITY AS e(event_id, stream_id, stream_version, event_type, data, correlation_id, causation_id,
                             actor, recorded_at, routing_key, payload, n)
), written AS (
    INSERT INTO events (event_id, stream_id, stream_version, event_type, data,
                        correlation_id, causation_id, actor, recorded_at)
    SELECT e.event_id, e.stream_id, e.stream_version, e.event_type, e.data::jsonb,
           e.correlation_id, e.causation_id, e.actor, e.recorded_at
    FROM event e JOIN head h ON h.stream_id = e.stream_id AND h.version = h.expected
    ORDER BY e.n
    RETURNING global_position, event_id
), outboxed AS (
    INSERT INTO outbox (global_position, event_id, routing_key, payload)
    SELECT w.global_position, w.event_id, e.routing_key, e.payload FROM written w JOIN event e USING (event_id)
)
SELECT stream_id, version FROM head
"""

_READ_ALL = """
SELECT transaction_id::text::bigint AS tx, global_position, event_id, stream_id, stream_version,
       event_type, data, correlation_id, causation_id, actor, recorded_at
FROM events
WHERE (transaction_id, global_position) > ($1::text::xid8, $2)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY transaction_id, global_position
LIMIT $3
"""

_READ_STREAMS = """
SELECT transaction_id::text::bigint AS tx, global_position, event_id, stream_id, stream_version,
       event_type, data, correlation_id, causation_id, actor, recorded_at
FROM events
WHERE stream_id = ANY($1::text[])
ORDER BY stream_id, stream_version
"""

_READ_STREAM = """
SELECT transaction_id::text::bigint AS tx, global_position, event_id, stream_id, stream_version,
       event_type, data, correlation_id, causation_id, actor, recorded_at
FROM events
WHERE stream_id = $1 AND stream_version >= $2 AND recorded_at <= $3
ORDER BY stream_version
"""

class EventStore:
    """The event store of one service (its pool is bound to the service's schema)."""

    def __init__(self, pool: asyncpg.Pool | None, source: str, *, conn: asyncpg.Connection | None = None) -> None:
        if (pool is None) == (conn is None):
            raise ValueError("an event store needs either a pool or a connection")
        self._pool = pool
        self._conn = conn
        self.source = source  # CloudEvents `source`, e.g. "/accord/agreements"
        self._service = source.rsplit("/", 1)[-1]
        self._after_append: list[Callable[[], None]] = []
        self._group = _GroupCommit(pool) if pool is not None else None

    @classmethod
    def on_connection(cls, conn: asyncpg.Connection, source: str) -> EventStore:
        """A store that reads and appends on `conn` only: the transaction of a timer or a consumer.

        Its appends commit with the caller's transaction; the timer scheduler and the consumer
        ring the service's doorbell after that commit, so relay and projections wake at once.
        """
        return cls(None, source, conn=conn)

    @contextlib.asynccontextmanager
    async def _connection(self, conn: asyncpg.Connection | None = None) -> AsyncIterator[asyncpg.Connection]:
        if conn is not None:
            yield conn
        elif self._conn is not None:
            yield self._conn
        else:
            assert self._pool is not None
            async with self._pool.acquire() as pooled:
                yield cast(asyncpg.Connection, pooled)

    def on_append(self, callback: Callable[[], None]) -> None:
        """Call `callback` (synchronously, cheaply) after every committed append in this process."""
        self._after_append.append(callback)

    def envelope(self, stream_id: str, version: int, event: EventData, metadata: Metadata,
                 time: datetime) -> CloudEvent:
        # Built from values made here and an already validated event: no need to validate again.
        return CloudEvent.trusted(
            id=uuid4(),
            source=self.source,
            type=event.event_type(),
            subject=stream_id,
            time=time,
            data=event.model_dump(mode="json"),
            sequence=version,
            correlationid=metadata.correlation_id,
            causationid=metadata.causation_id,
            actor=metadata.actor,
        )

    async def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[EventData],
        metadata: Metadata,
        *,
        conn: asyncpg.Connection | None = None,
    ) -> AppendResult:
        """Append `events` if the stream is exactly at `expected_version` (0: a new stream).

        With `conn`, the append joins the caller's transaction (e.g. a consumer's inbox write);
        the caller must then call `notify_appended()` after its commit (`doorbell.work_left()`
        tells whether it has to). Without, it may share its transaction with appends to other
        streams made at the same moment (`_GroupCommit`).
        """
        if not events:
            raise ValueError("nothing to append")
        now = datetime.now(UTC)
        request = _Append(stream_id, expected_version, [
            self.envelope(stream_id, expected_version + i, event, metadata, now)
            for i, event in enumerate(events, start=1)
        ])
        joins_caller = conn is not None or self._conn is not None
        if joins_caller:
            async with self._connection(conn) as target:
                await _write_one(target, request)
            note_work_left()
        else:
            assert self._group is not None
            await self._group.write(request)
        for envelope in request.envelopes:
            events_appended(self._service, envelope.type).inc()
        if not joins_caller:
            self.notify_appended()
        return AppendResult(stream_id, expected_version + len(events), request.envelopes)

    def notify_appended(self) -> None:
        for callback in self._after_append:
            callback()

    async def read_stream(
        self, stream_id: str, *, from_version: int = 1, as_of: datetime | None = None,
        conn: asyncpg.Connection | None = None,
    ) -> list[CloudEvent]:
        """The stream's events in order; with `as_of`, only those recorded by then."""
        as_of = as_of or datetime.max.replace(tzinfo=UTC)
        async with self._connection(conn) as target:
            rows = await target.fetch(_READ_STREAM, stream_id, from_version, as_of)
        return [_envelope(row, self.source) for row in rows]

    async def read_streams(
        self, stream_ids: Sequence[str], *, conn: asyncpg.Connection | None = None
    ) -> dict[str, list[CloudEvent]]:
        """Several streams' events at once (one query): stream id → its events in order."""
        async with self._connection(conn) as target:
            rows = await target.fetch(_READ_STREAMS, list(stream_ids))
        streams: dict[str, list[CloudEvent]] = {stream_id: [] for stream_id in stream_ids}
        for row in rows:
            streams[row["stream_id"]].append(_envelope(row, self.source))
        return streams

    async def read_all(
        self, after: Position = START, limit: int = 1000, *, conn: asyncpg.Connection | None = None
    ) -> list[RecordedEvent]:
        """Events after `after` in global order, never past a transaction that may still commit."""
        args = (str(after.transaction_id), after.global_position, limit)
        async with self._connection(conn) as target:
            rows = await target.fetch(_READ_ALL, *args)
        return [RecordedEvent(Position(row["tx"], row["global_position"]), _envelope(row, self.source))
                for row in rows]

def _envelope(row: asyncpg.Record | dict[str, Any], source: str) -> CloudEvent:
    return CloudEvent.trusted(
        id=row["event_id"],
        source=source,
        type=row["event_type"],
        subject=row["stream_id"],
        time=row["recorded_at"],
        data=row["data"],
        sequence=row["stream_version"],
        correlationid=row["correlation_id"],
        causationid=row["causation_id"],
        actor=row["actor"],
    )


@dataclass
class _Append:
    """One `append` call: its stream, the version it expects, its envelopes."""

    stream_id: str
    expected_version: int
    envelopes: list[CloudEvent]


async def _write(conn: asyncpg.Connection, requests: Sequence[_Append]) -> list[ConcurrencyError | None]:
    """Write `requests` (each to a different stream) in one statement; per request, None if it was
    written, else its `ConcurrencyError`. Raises `asyncpg.UniqueViolationError` if two writers
    raced for a stream version or an event id was reused: then nothing was written."""
    envelopes = [e for request in requests for e in request.envelopes]
    rows = await conn.fetch(
        _APPEND,
        [r.stream_id for r in requests], [r.expected_version for r in requests],
        [e.id for e in envelopes], [e.subject for e in envelopes], [e.sequence for e in envelopes],
        [e.type for e in envelopes], [json_bytes(e.data).decode() for e in envelopes],
        [e.correlationid for e in envelopes], [e.causationid for e in envelopes],
        [e.actor for e in envelopes], [e.time for e in envelopes],
        [e.routing_key for e in envelopes], [e.model_dump_json().encode() for e in envelopes],
    )
    heads = {row["stream_id"]: row["version"] for row in rows}
    return [None if heads[r.stream_id] == r.expected_version
            else ConcurrencyError(r.stream_id, r.expected_version, heads[r.stream_id]) for r in requests]


async def _write_one(conn: asyncpg.Connection, request: _Append) -> None:
    """Write one append; raise `ConcurrencyError` or `DuplicateEventError` if it cannot be."""
    try:
        [outcome] = await _write(conn, [request])
    except asyncpg.UniqueViolationError as error:
        if error.constraint_name == "events_stream_version_key":
            raise ConcurrencyError(request.stream_id, request.expected_version, None) from None
        raise DuplicateEventError(str(error)) from error
    if outcome is not None:
        raise outcome


class _GroupCommit:
    """Appends from concurrent callers, written together: one statement and one commit for all.

    A caller's append waits in a queue; up to `writers` statements run at once, each taking every
    waiting append (one per stream, at most `max_group`). At low load each append is written
    alone and at once; under load the commits, the costliest part of an append, are shared.
    If a group's statement fails on a unique index (two writers raced for a stream version, or
    an event id was reused), nothing of it was written, and each append is written again on its
    own, so that only the offending one fails. (The same for a deadlock, which the sorted
    order of each group should make impossible.)
    """

    def __init__(self, pool: asyncpg.Pool, *, writers: int = 4, max_group: int = 100) -> None:
        self._pool, self._writers, self._max_group = pool, writers, max_group
        self._waiting: deque[tuple[_Append, asyncio.Future[None]]] = deque()
        self._draining = 0  # counted here, not by the tasks' done callbacks, which run later
        self._drains: set[asyncio.Task[None]] = set()  # referenced until done

    async def write(self, request: _Append) -> None:
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((request, done))
        if self._draining < self._writers:
            self._draining += 1
            drain = asyncio.create_task(self._drain())
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
        await done

    async def _drain(self) -> None:
        try:
            while self._waiting:
                group = self._take()
                try:
                    outcomes = await self._write_group([request for request, _ in group])
                except Exception as error:  # noqa: BLE001 (each caller of the group gets it)
                    outcomes = [error] * len(group)
                except BaseException as error:  # cancelled: tell the callers, then stop
                    _settle(group, [error] * len(group))
                    raise
                _settle(group, outcomes)
        finally:
            self._draining -= 1  # no await since the queue was seen empty: no append is stranded

    def _take(self) -> list[tuple[_Append, asyncio.Future[None]]]:
        group: list[tuple[_Append, asyncio.Future[None]]] = []
        streams: set[str] = set()
        later = []
        while self._waiting and len(group) < self._max_group:
            item = self._waiting.popleft()
            if item[0].stream_id in streams:
                later.append(item)  # the same stream twice: the second waits for the next group
            else:
                streams.add(item[0].stream_id)
                group.append(item)
        self._waiting.extendleft(reversed(later))
        # Every group inserts its streams' rows in the same order, so two groups racing for the
        # same versions wait for each other instead of deadlocking.
        return sorted(group, key=lambda item: item[0].stream_id)

    async def _write_group(self, requests: list[_Append]) -> Sequence[BaseException | None]:
        async with self._pool.acquire() as pooled:
            conn = cast(asyncpg.Connection, pooled)
            if len(requests) > 1:
                try:
                    return await _write(conn, requests)
                except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError):
                    pass
            outcomes: list[BaseException | None] = []
            for request in requests:
                try:
                    await _write_one(conn, request)
                    outcomes.append(None)
                except (ConcurrencyError, DuplicateEventError) as error:
                    outcomes.append(error)
            return outcomes


def _settle(group: list[tuple[_Append, asyncio.Future[None]]], outcomes: Sequence[BaseException | None]) -> None:
    for (_, done), outcome in zip(group, outcomes, strict=True):
        if done.done():
            continue  # its caller was cancelled
        if outcome is None:
            done.set_result(None)
        else:
            done.set_exception(outcome)
