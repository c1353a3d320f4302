"""The composition root every service uses: settings → pool → store → relay, projections,
consumers → HTTP app, plus the service's command line (serve, migrate, rebuild).

A service describes itself with a `ServiceDefinition`; nothing connects or reads the
environment until `ServiceRuntime.start()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aio_pika
import asyncpg
import structlog
from fastapi import APIRouter, FastAPI

from accord_runtime.consumer import BusConsumer, replay_inbox
from accord_runtime.doorbell import Doorbell
from accord_runtime.eventstore import EventStore
from accord_runtime.former_consumers import drain_and_delete
from accord_runtime.http import create_app
from accord_runtime.migrations import RUNTIME_MIGRATIONS, Migration, migrate, migrations_in
from accord_runtime.outbox import OutboxRelay
from accord_runtime.postgres import create_pool
from accord_runtime.projections import EventHandler, Projection, ProjectionRunner
from accord_runtime.settings import ServiceSettings
from accord_runtime.timers import TimerHandler, TimerScheduler

log = structlog.get_logger(__name__)


_YOUNG_COLLECTION_THRESHOLD = 7_000  # allocations between young collections (Python's default: 700)


def _settle_the_heap() -> None:
    """Once a process's service has opened its storage, put what is alive then (modules, models, pools,
    connections) out of the cyclic collector's reach, and collect the young generation a tenth
    as often. Busy services spent 5 to 9 % of their CPU in the collector, most of it walking those
    long-lived objects again in full collections; after this, under 1 %. Only the first service
    of a process does it (a test process starts many, and would freeze earlier tests' garbage)."""
    if gc.get_freeze_count():
        return
    gc.freeze()
    gc.set_threshold(_YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])


@dataclass(frozen=True)
class Context:
    """What a command handler needs: the service's event store, and its pool for read-model look-ups."""

    store: EventStore
    pool: asyncpg.Pool


class NotFound(LookupError):
    """A command names something that does not exist (HTTP 404)."""


@dataclass(frozen=True)
class ConsumerDefinition:
    """A bus consumer: its name (part of its queue's name) and the handlers it feeds.

    `formerly`: consumers merged into this one. Their queues are drained and deleted at start, and
    their inboxes replayed with this one's by rebuilds (see `accord_runtime.former_consumers`).
    """

    name: str
    handlers: Sequence[EventHandler]
    formerly: Sequence[ConsumerDefinition] = ()

    def __post_init__(self) -> None:
        for former in self.formerly:
            if not all(isinstance(h, Projection) for h in former.handlers):
                raise ValueError(f"a former consumer's handlers must be projections: {former.name}")

    def inboxes(self) -> list[str]:
        """The consumer names this consumer's inbox rows are stored under: its own and its former ones'."""
        return [self.name, *(former.name for former in self.formerly)]


@dataclass(frozen=True)
class ServiceDefinition:
    name: str
    migrations_package: str | None = None  # a package with a migrations/ folder of NNNN_name.sql
    projections: Sequence[Projection] = ()  # over the service's own event store
    consumers: Sequence[ConsumerDefinition] = ()  # over other services' events on the bus
    timers: Mapping[str, TimerHandler] = field(default_factory=dict)  # timer kind → handler
    routers: Sequence[APIRouter] = ()
    error_statuses: Mapping[type[Exception], int] = field(default_factory=dict)

    def rebuildable(self) -> list[str]:
        """Names of every read model `rebuild` can rebuild: own projections and bus-fed ones.

        Bus-fed handlers that are not projections (policies that act on events) are never
        replayed: replaying them would act again.
        """
        names = [p.name for p in self.projections]
        names += [h.name for c in self.consumers for h in c.handlers if isinstance(h, Projection)]
        return names

    def migrations(self) -> list[Migration]:
        own = migrations_in(self.name, self.migrations_package) if self.migrations_package else []
        return migrations_in("runtime", RUNTIME_MIGRATIONS) + own


class ServiceRuntime:
    """Owns a running service's connections and background workers."""

    def __init__(self, definition: ServiceDefinition, settings: ServiceSettings) -> None:
        self.definition = definition
        self.settings = settings
        self._tasks: list[asyncio.Task[None]] = []
        self._retiring: list[asyncio.Future[None]] = []  # former consumers being drained
        self._pool: asyncpg.Pool | None = None
        self._store: EventStore | None = None
        self.doorbell: Doorbell | None = None
        self.relay: OutboxRelay | None = None
        self.projections: ProjectionRunner | None = None
        self.consumers: list[BusConsumer] = []
        self.timers: TimerScheduler | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the service has not started")
        return self._pool

    @property
    def store(self) -> EventStore:
        if self._store is None:
            raise RuntimeError("the service has not started")
        return self._store

    async def migrate(self) -> None:
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            await migrate(conn, self.settings.db_schema, self.definition.migrations())
        finally:
            await conn.close()

    async def open_storage(self) -> None:
        """Migrate, then open the pool and the event store (enough for commands and rebuilds)."""
        await self.migrate()
        self._pool = await create_pool(self.settings.database_url, self.settings.db_schema,
                                       max_size=self.settings.database_pool_size)
        self._store = EventStore(self._pool, source=self.settings.source)
        self.projections = ProjectionRunner(self._store, self._pool, self.definition.projections,
                                            service=self.settings.service_name)
        _settle_the_heap()

    async def rebuild(self, names: Sequence[str] | None = None,
                      progress: Callable[[int], None] | None = None) -> int:
        """Rebuild read models: own projections from the event store, bus-fed ones from the inbox."""
        selected = set(names or self.definition.rebuildable())
        unknown = selected - set(self.definition.rebuildable())
        if unknown:
            raise KeyError(f"unknown read models: {sorted(unknown)}")
        assert self.projections is not None, "open_storage() first"
        own = [p.name for p in self.definition.projections if p.name in selected]
        total = await self.projections.rebuild(own, progress=progress) if own else 0
        for consumer in self.definition.consumers:
            fed = [h for h in consumer.handlers if isinstance(h, Projection) and h.name in selected]
            if fed:
                replayed = await replay_inbox(self.pool, consumer.inboxes(), fed)
                if progress:
                    progress(replayed)
                total += replayed
        return total

    async def start(self) -> None:
        """Open storage and start every background worker."""
        await self.open_storage()
        settings = self.settings
        self.doorbell = Doorbell(settings.database_url, settings.db_schema)
        await self.doorbell.start()
        self.store.on_append(self.doorbell.ring)
        assert self.projections is not None
        self.doorbell.subscribe(self.projections.ring)
        self.relay = OutboxRelay(
            pool=self.pool, dsn=settings.database_url, schema=settings.db_schema, amqp_url=settings.amqp_url,
            exchange_name=settings.exchange, service_name=settings.service_name, doorbell=self.doorbell,
            batch_size=settings.outbox_batch_size)
        self._spawn(self.relay.run(), "outbox relay")
        self._spawn(self.projections.run(), "projections")
        if self.definition.timers:
            self.timers = TimerScheduler(self.pool, self.definition.timers, service=settings.service_name,
                                         on_commit=self.store.notify_appended)
            self.doorbell.subscribe(self.timers.wake)  # timers are set along with the events calling for them
            self._spawn(self.timers.run(), "timers")
        for definition in self.definition.consumers:
            consumer = self._consumer(definition)
            await consumer.start()
            self.consumers.append(consumer)
        for former in (f for definition in self.definition.consumers for f in definition.formerly):
            retiring = asyncio.ensure_future(drain_and_delete(functools.partial(self._consumer, former),
                                                              settings.amqp_url, settings.exchange))
            retiring.add_done_callback(_log_failure)
            self._retiring.append(retiring)  # not a worker: it ends once the queue is gone
        log.info("service started", service=settings.service_name, schema=settings.db_schema)

    def _consumer(self, definition: ConsumerDefinition) -> BusConsumer:
        settings = self.settings
        return BusConsumer(
            pool=self.pool, amqp_url=settings.amqp_url, exchange_name=settings.exchange,
            service_name=settings.service_name, consumer_name=definition.name,
            handlers=definition.handlers, queue_prefix=settings.queue_prefix, prefetch=settings.prefetch,
            on_commit=self.store.notify_appended)

    def _spawn(self, work: object, name: str) -> None:
        task = asyncio.ensure_future(work)  # type: ignore[call-overload]
        task.set_name(name)
        task.add_done_callback(_log_failure)
        self._tasks.append(task)

    async def stop(self) -> None:
        """Stop consuming, let in-flight work finish, then close connections."""
        for retiring in self._retiring:
            retiring.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        for consumer in self.consumers:
            await consumer.stop()
        if self.relay:
            await self.relay.stop()
        if self.projections:
            self.projections.stop()
        if self.timers:
            self.timers.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), timeout=10)
        if self.doorbell:
            await self.doorbell.stop()
        if self._pool:
            await self._pool.close()
        log.info("service stopped", service=self.settings.service_name)

    async def workers_running(self) -> bool:
        return all(not task.done() for task in self._tasks)

    async def database_ready(self) -> bool:
        return bool(await self.pool.fetchval("SELECT 1"))

    async def broker_ready(self) -> bool:
        connection = await aio_pika.connect(self.settings.amqp_url, timeout=2)
        await connection.close()
        return True

    def app(self) -> FastAPI:
        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            await self.start()
            app.state.pool = self.pool
            app.state.store = self.store
            try:
                yield
            finally:
                await self.stop()

        return create_app(
            title=f"Accord {self.definition.name}",
            routers=self.definition.routers,
            readiness={"database": self.database_ready, "broker": self.broker_ready,
                       "workers": self.workers_running},
            error_statuses=self.definition.error_statuses,
            lifespan=lifespan,
        )


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background worker failed", worker=task.get_name(), exc_info=task.exception())
