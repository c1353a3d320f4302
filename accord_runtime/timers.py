"""Durable timers: deadlines kept in Postgres, fired once by whichever replica gets there first.

`schedule` upserts a timer keyed by (kind, key) — inside the caller's transaction when given
one, so a deadline is set if and only if the command that set it commits. The `TimerScheduler`
sleeps until the earliest due timer or until woken — the service wakes it on every committed
append (the doorbell, which also hears other replicas), since timers are set in the same
transaction as the events that call for them; `max_sleep` bounds the rest. Woken, it first looks
(one query for the earliest due time) and only when something is due claims due timers with
``FOR UPDATE SKIP LOCKED``, firing each in the same transaction that marks it fired: a crash
before the commit leaves the timer due, to be fired on restart, and two replicas never fire the
same timer. Timers missed while every replica was down fire on start.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from accord_runtime.doorbell import note_work_left, work_left
from accord_runtime.metrics import TIMER_DELAY, TIMERS_FIRED
from accord_runtime.postgres import TRANSIENT_ERRORS, transaction

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Timer:
    kind: str
    key: str
    due_at: datetime
    payload: dict[str, Any]


TimerHandler = Callable[[asyncpg.Connection, Timer], Awaitable[None]]


async def schedule(conn: asyncpg.Connection | asyncpg.Pool, kind: str, key: str, due_at: datetime,
                   payload: Mapping[str, Any] | None = None) -> None:
    """Set (or move) the timer (kind, key) to fire at `due_at`; a fired one is re-armed."""
    if due_at.tzinfo is None:
        raise ValueError("due_at must be timezone-aware")
    await conn.execute(
        "INSERT INTO timers (kind, key, due_at, payload) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (kind, key) DO UPDATE SET due_at = EXCLUDED.due_at, payload = EXCLUDED.payload,"
        " fired_at = NULL, attempts = 0, last_error = NULL",
        kind, key, due_at, dict(payload or {}))
    note_work_left()  # the scheduler may have to wake earlier than it planned


async def cancel(conn: asyncpg.Connection | asyncpg.Pool, kind: str, key: str) -> bool:
    """Remove a pending timer; True if there was one."""
    result = await conn.execute("DELETE FROM timers WHERE kind = $1 AND key = $2 AND fired_at IS NULL", kind, key)
    return bool(result != "DELETE 0")


class DueWorker:
    """A loop that drains what is due, then sleeps until the next due time or a wake-up.

    Subclasses say what draining is and when the next thing falls due. Each turn first looks
    (`next_due`, one query) and drains only if something is due, so a wake-up with nothing to do
    — most of them: workers are woken on every committed append — costs one query, not a
    claiming transaction. After a drain it looks again at once. If something is due but a drain
    finds nothing to claim (another replica holds it, or the clocks disagree), it waits `idle_pause`
    instead of spinning. The loop survives lost database connections (it tries again a second
    later) and stops promptly on `stop()`.
    """

    _what = "due worker"  # names the worker in logs

    def __init__(self, *, max_sleep: float, idle_pause: float = 0.05, min_interval: float = 0.0) -> None:
        self._max_sleep = max_sleep
        self._idle_pause = min(idle_pause, max_sleep)
        self._min_interval = min_interval  # wake-ups closer than this after a look coalesce into one
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def wake(self) -> None:
        """Something may be due sooner than planned: look again."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def drain(self) -> int:
        """Handle what is due now (all of it, or a batch: the loop looks again after it); how many
        items were handled."""
        raise NotImplementedError

    async def next_due(self) -> datetime | None:
        """When the next thing falls due (None: nothing pending)."""
        raise NotImplementedError

    async def run(self) -> None:
        """Look, drain if something is due, else sleep until the next due time or a wake-up; until stopped."""
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                due = await self.next_due()
                if due is None or due > datetime.now(UTC):
                    pause = self._seconds_until(due)
                elif await self.drain():
                    continue  # look again at once: more may be due
                else:
                    pause = self._idle_pause  # due, yet nothing to claim: do not spin
            except TRANSIENT_ERRORS as error:
                log.warning(f"{self._what} interrupted; retrying", error=str(error))
                pause = 1.0
            looked_at = time.monotonic()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._wake.wait()
                    # Woken, not due: wake-ups within `min_interval` of the last look make one look.
                    rest = looked_at + self._min_interval - time.monotonic()
                    if rest > 0 and not self._stopping.is_set():
                        await asyncio.sleep(rest)

    def _seconds_until(self, due: datetime | None) -> float:
        if due is None:
            return self._max_sleep
        return float(max(0.0, min(self._max_sleep, (due - datetime.now(UTC)).total_seconds())))


class TimerScheduler(DueWorker):
    """Fires due timers with the handler registered for their kind."""

    _what = "timer scheduler"

    def __init__(self, pool: asyncpg.Pool, handlers: Mapping[str, TimerHandler], *, service: str,
                 batch_size: int = 200, max_sleep: float = 5.0, retry_delay: float = 30.0,
                 on_commit: Callable[[], None] | None = None, min_interval: float = 0.05) -> None:
        # Every committed append rings the doorbell and so wakes the scheduler, while the timers
        # appends set fall due minutes or days later: one look per `min_interval` is enough.
        super().__init__(max_sleep=max_sleep, min_interval=min_interval)
        self._pool = pool
        self._handlers = dict(handlers)
        self._service = service
        self._batch_size = batch_size
        self._retry_delay = retry_delay
        self._on_commit = on_commit  # ring the doorbell: after handlers appended events or set timers

    async def drain(self) -> int:
        return await self.fire_due()  # one batch: the loop looks again after it

    async def next_due(self) -> datetime | None:
        due: datetime | None = await self._pool.fetchval("SELECT min(due_at) FROM timers WHERE fired_at IS NULL")
        return due

    async def fire_due(self) -> int:
        """Fire the timers due now (one batch); return how many were claimed."""
        noted = work_left()
        async with transaction(self._pool) as conn:
            rows = await conn.fetch(
                "SELECT kind, key, due_at, payload FROM timers WHERE fired_at IS NULL AND due_at <= now()"
                " ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED", self._batch_size)
            for row in rows:
                timer = Timer(row["kind"], row["key"], row["due_at"], row["payload"])
                await self._fire(conn, timer)
        if self._on_commit and work_left() != noted:
            self._on_commit()  # the handlers appended events or set timers
        return len(rows)

    async def _fire(self, conn: asyncpg.Connection, timer: Timer) -> None:
        handler = self._handlers.get(timer.kind)
        if handler is None:
            await self._failed(conn, timer, f"no handler for timer kind {timer.kind!r}")
            return
        started = time.perf_counter()
        try:
            async with conn.transaction():  # a savepoint: a failing handler undoes only its own work
                await handler(conn, timer)
        except TRANSIENT_ERRORS:
            raise
        except Exception as error:  # noqa: BLE001 - recorded on the timer and retried later
            await self._failed(conn, timer, f"{type(error).__name__}: {error}")
            return
        # A handler may re-arm its own timer (a recurring deadline): then it stays pending.
        await conn.execute("UPDATE timers SET fired_at = now(), attempts = attempts + 1"
                           " WHERE kind = $1 AND key = $2 AND due_at = $3", timer.kind, timer.key, timer.due_at)
        TIMERS_FIRED.labels(self._service, timer.kind).inc()
        TIMER_DELAY.labels(self._service).observe(max(0.0, (datetime.now(UTC) - timer.due_at).total_seconds()))
        log.debug("timer fired", kind=timer.kind, key=timer.key,
                  handler_ms=round((time.perf_counter() - started) * 1000, 2))

    async def _failed(self, conn: asyncpg.Connection, timer: Timer, error: str) -> None:
        log.error("timer handler failed; retrying later", kind=timer.kind, key=timer.key, error=error)
        await conn.execute(
            "UPDATE timers SET attempts = attempts + 1, last_error = $3,"
            " due_at = now() + make_interval(secs => $4) WHERE kind = $1 AND key = $2",
            timer.kind, timer.key, error, self._retry_delay)

