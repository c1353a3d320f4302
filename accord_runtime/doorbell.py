"""Wake the outbox relay and projections as soon as events were committed, in any process.

`Doorbell.ring()` is called after an append has committed (``EventStore.on_append``). It wakes
this process's waiters at once and sends one ``NOTIFY`` so the processes of the same service
that ``LISTEN`` on the schema's channel wake too. The ``NOTIFY`` runs in its own statement after
the commit, never inside the append transaction: Postgres serializes the commits of every
transaction that notifies, which halves append throughput. Rings that arrive while a ``NOTIFY``
is being sent, or less than `notify_interval` (5 ms) after it, coalesce into one more: other
processes learn of a burst of appends at most that much later, for one round trip per interval.

Notifications are a latency optimisation only: waiters also time out after `poll_interval`
and look for work anyway, so a lost notification (e.g. while reconnecting) delays, never loses.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable
from contextvars import ContextVar

import asyncpg
import structlog

from accord_runtime.postgres import DATABASE_ERRORS, connect

log = structlog.get_logger(__name__)



#: How many times the task in hand left work for the workers inside a transaction it does not
#: commit itself (a consumer's or a timer's): events appended, timers set. The code that commits
#: compares the count before and after, and rings the doorbell only if the transaction left any.
_WORK_LEFT: ContextVar[int] = ContextVar("accord_work_left", default=0)


def note_work_left() -> None:
    """Note that the current transaction appended events or set a timer (see `work_left`)."""
    _WORK_LEFT.set(_WORK_LEFT.get() + 1)


def work_left() -> int:
    """A count that moves whenever this task's transactions leave work for the workers."""
    return _WORK_LEFT.get()


def channel_of(schema: str) -> str:
    """The NOTIFY channel on which the relays, projections and timers of `schema` listen."""
    return f"accord_{schema}_appended"


async def ring_from_outside(pool: asyncpg.Pool, schema: str) -> None:
    """Wake a running service's workers from a process without a doorbell (an operator command)."""
    await pool.execute("SELECT pg_notify($1, '')", channel_of(schema))


class Waiter:
    """One consumer's view of the doorbell: remembers a ring until that consumer waits."""

    def __init__(self, poll_interval: float, *, rung: bool = False) -> None:
        self._poll_interval = poll_interval
        self._event = asyncio.Event()
        if rung:
            self._event.set()

    def wake(self) -> None:
        self._event.set()

    async def wait(self, timeout: float | None = None) -> bool:
        """True once rung since the previous wait; False after `timeout` (or the poll interval)."""
        try:
            async with asyncio.timeout(self._poll_interval if timeout is None else timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        self._event.clear()
        return True


class Doorbell:
    """Rings when events of one schema were committed; see the module docstring."""

    def __init__(self, dsn: str, schema: str, *, poll_interval: float = 5.0,
                 keepalive_interval: float = 10.0, max_reconnect_delay: float = 5.0,
                 notify_interval: float = 0.005) -> None:
        self._dsn, self._schema = dsn, schema
        self.channel = channel_of(schema)
        self.poll_interval = poll_interval
        self._keepalive_interval = keepalive_interval
        self._notify_interval = notify_interval  # at most one NOTIFY per interval; rings coalesce
        self._max_reconnect_delay = max_reconnect_delay
        self._waiters: weakref.WeakSet[Waiter] = weakref.WeakSet()
        self._subscribers: list[Callable[[], None]] = []
        self._task_waiters: weakref.WeakKeyDictionary[asyncio.Task[object], Waiter] = (
            weakref.WeakKeyDictionary()
        )
        self._conn: asyncpg.Connection | None = None
        self._conn_lock = asyncio.Lock()  # one statement at a time on the LISTEN connection
        self._lost = asyncio.Event()
        self._notify_pending = False
        self._sender: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call `callback` (sync, cheap) on every ring, local or from another process."""
        self._subscribers.append(callback)

    def waiter(self) -> Waiter:
        """A waiter of one's own: each consumer (relay, projection runner) must see every ring."""
        waiter = Waiter(self.poll_interval)
        self._waiters.add(waiter)
        return waiter

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait for a ring with the calling task's own waiter (see `Waiter.wait`).

        The first call in a task returns at once, so a ring before it is never missed.
        """
        task = asyncio.current_task()
        assert task is not None
        waiter = self._task_waiters.get(task)
        if waiter is None:
            waiter = self._task_waiters[task] = Waiter(self.poll_interval, rung=True)
            self._waiters.add(waiter)
        return await waiter.wait(timeout)

    def ring(self) -> None:
        """Events were committed: wake local waiters now and other processes soon. Cheap, sync."""
        self._wake_local()
        self._notify_pending = True
        self._start_sender()

    async def start(self) -> None:
        """Connect and LISTEN (raising if Postgres is unreachable), then stay connected."""
        await self._connect()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"doorbell {self.channel}")

    async def stop(self) -> None:
        conn, self._conn = self._conn, None  # rings from now on only wake local waiters
        for task in (self._supervisor, self._sender):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._supervisor = self._sender = None
        if conn is not None:
            try:
                await conn.close(timeout=2)
            except DATABASE_ERRORS:
                conn.terminate()

    def _wake_local(self) -> None:
        for waiter in self._waiters:
            waiter.wake()
        for callback in self._subscribers:
            callback()

    def _start_sender(self) -> None:
        if self._conn is not None and (self._sender is None or self._sender.done()):
            self._sender = asyncio.create_task(self._send_notifications())

    async def _send_notifications(self) -> None:
        while self._notify_pending and self._conn is not None:
            self._notify_pending = False
            conn = self._conn
            try:
                async with self._conn_lock:
                    await conn.execute("SELECT pg_notify($1, '')", self.channel)
            except DATABASE_ERRORS as error:
                self._notify_pending = True  # sent again once reconnected
                self._drop(conn, "notify failed", error)
                return
            await asyncio.sleep(self._notify_interval)  # the rings meanwhile make one more NOTIFY

    async def _connect(self) -> None:
        conn = await connect(self._dsn, self._schema)
        try:
            await conn.add_listener(self.channel, self._on_notification)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._on_terminated)
        self._lost.clear()
        self._conn = conn

    def _on_notification(self, conn: object, pid: int, channel: str, payload: object) -> None:
        if self._conn is None or pid != self._conn.get_server_pid():  # not our own echo
            self._wake_local()

    def _on_terminated(self, conn: object) -> None:
        if conn is self._conn:
            self._lost.set()

    def _drop(self, conn: asyncpg.Connection, reason: str, error: BaseException | None) -> None:
        if conn is self._conn:
            log.warning("doorbell connection lost", channel=self.channel, reason=reason,
                        error=repr(error) if error else None)
            self._conn = None
            self._lost.set()
        conn.terminate()

    async def _supervise(self) -> None:
        """Keep the LISTEN connection alive: notice a drop (even a silent one), reconnect."""
        delay = 0.1
        while True:
            if self._conn is None or self._conn.is_closed():
                try:
                    await self._connect()
                except DATABASE_ERRORS as error:
                    log.warning("doorbell reconnect failed", channel=self.channel,
                                error=repr(error), retry_in=delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._max_reconnect_delay)
                    continue
                log.info("doorbell listening again", channel=self.channel)
                delay = 0.1
                self._wake_local()  # notifications sent while we were away are lost: look anyway
                self._start_sender()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._keepalive_interval):
                    await self._lost.wait()
            conn = self._conn
            if conn is None:
                continue
            if self._lost.is_set() or conn.is_closed():
                self._drop(conn, "terminated", None)
                continue
            try:
                async with self._conn_lock, asyncio.timeout(self._keepalive_interval):
                    await conn.execute("SELECT 1")
            except DATABASE_ERRORS as error:  # TimeoutError is an OSError
                self._drop(conn, "keepalive failed", error)
