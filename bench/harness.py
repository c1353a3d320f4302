"""What the benchmarks share: settings, throwaway databases, bounded loops, drivers, statistics.

Every loop here is bounded twice, by a count and by a deadline, so a benchmark of a stalled
system ends instead of hanging.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import math
import os
import statistics
import time
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Iterator,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"

#: Upper bound of operations in any one measurement window, whatever its duration.
MAX_OPERATIONS = 200_000


@dataclass(frozen=True)
class BenchConfig:
    """How long and how often to measure, and against which servers."""

    database_url: str  # the server's maintenance database; benchmarks create their own
    amqp_url: str
    runs: int  # repetitions of each measurement; the median is quoted
    window: float  # seconds of each throughput measurement
    latency_window: float  # seconds of each open-loop latency measurement
    rebuild_events: int  # events seeded before timing a projection rebuild
    warmup: float  # seconds of unmeasured load first (fills pools, prepares statements)
    rebuild_budget: float  # seconds after which a slow rebuild is stopped and rated on its part
    writers: int = 8
    rates: tuple[int, ...] = (100, 1000)
    drain_timeout: float = 30.0  # how long to wait for stragglers before counting them lost
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    @classmethod
    def create(cls, *, quick: bool, runs: int | None = None) -> BenchConfig:
        database_url = os.environ.get("ACCORD_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
        amqp_url = os.environ.get("ACCORD_BENCH_AMQP_URL", DEFAULT_AMQP_URL)
        if quick:
            return cls(database_url, amqp_url, runs=runs or 1, window=2.0, latency_window=2.0,
                       rebuild_events=20_000, warmup=0.5, rebuild_budget=10.0)
        return cls(database_url, amqp_url, runs=runs or 3, window=3.0, latency_window=5.0,
                   rebuild_events=50_000, warmup=1.0, rebuild_budget=20.0)

    def exchange_name(self, label: str) -> str:
        """A topic exchange name of this benchmark's own (never the services' exchange)."""
        return f"accord.bench.{self.run_id}.{label}"


def database_url_for(server_url: str, database: str) -> str:
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{database}"))


def database_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


@asynccontextmanager
async def throwaway_database(config: BenchConfig) -> AsyncIterator[str]:
    """A database of the caller's own (``accord_bench_<random>``), dropped WITH (FORCE) after."""
    name = f"accord_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(config.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield database_url_for(config.database_url, name)
    finally:
        admin = await asyncpg.connect(config.database_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def bounded(seconds: float, limit: int = MAX_OPERATIONS) -> Iterator[int]:
    """0, 1, 2, ... until `seconds` have passed or `limit` values were yielded."""
    deadline = time.perf_counter() + seconds
    for i in range(limit):
        if time.perf_counter() >= deadline:
            return
        yield i


@dataclass(frozen=True)
class Throughput:
    items: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.items / self.seconds


async def closed_loop(writers: int, seconds: float,
                      work: Callable[[int], Awaitable[int]]) -> Throughput:
    """Run `work(writer)` back to back in `writers` tasks for `seconds`.

    `work` returns how many items (events, messages) it completed.
    """
    async def writer(number: int) -> int:
        return sum([await work(number) for _ in bounded(seconds)])

    started = time.perf_counter()
    done = await asyncio.gather(*(writer(n) for n in range(writers)))
    return Throughput(sum(done), time.perf_counter() - started)


class Arrivals:
    """When each key (an agreement id) arrived at the far end: marked by a hook, awaited here."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self._awaited: set[str] = set()  # keys `wait_for` still waits for
        self._all_arrived = asyncio.Event()

    def mark(self, keys: Iterable[str], at: float | None = None) -> None:
        """Record that `keys` arrived now, or `at` (a `time.perf_counter()` of this machine);
        cheap: it runs inside the system under test."""
        now = time.perf_counter() if at is None else at
        for key in keys:
            self.seen.setdefault(key, now)
            self._awaited.discard(key)
        if not self._awaited:
            self._all_arrived.set()

    async def wait_for(self, keys: Collection[str], seconds: float) -> int:
        """Wait until every key arrived or `seconds` passed; return how many are still missing."""
        self._awaited = {key for key in keys if key not in self.seen}
        if self._awaited:
            self._all_arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._all_arrived.wait()
        missing = len(self._awaited)
        self._awaited = set()
        return missing


@dataclass(frozen=True)
class Latencies:
    """One open-loop measurement: latency percentiles (seconds) and what was lost on the way."""

    offered: int
    p50: float
    p99: float
    failed: int  # commands that raised (or had not returned within the drain timeout)
    missing: int  # commands whose result never arrived within the drain timeout
    first_error: str | None = None


async def open_loop(rate: float, seconds: float, command: Callable[[], Coroutine[Any, Any, str]],
                    arrivals: Arrivals, drain_timeout: float) -> Latencies:
    """Start `command` `rate` times a second for `seconds`, whether earlier ones finished or not.

    Each command returns the key its result arrives under in `arrivals`. Latency runs from the
    command's *scheduled* start, so a client that falls behind schedule shows up in the figures
    instead of hiding (no coordinated omission). Lost commands count as infinitely slow.
    """
    total = min(round(rate * seconds), MAX_OPERATIONS)
    # Only unfinished commands are held: this load generator shares the service's process, and
    # keeping every finished task (with its coroutine and context) for the whole window made the
    # service's cyclic collector walk tens of thousands of objects more in each collection.
    pending: set[asyncio.Task[str]] = set()
    unanswered: set[asyncio.Task[str]] = set()
    keys: dict[str, float] = {}
    errors: list[str] = []

    def settle(due: float, task: asyncio.Task[str]) -> None:
        pending.discard(task)
        if task in unanswered:
            return
        if task.cancelled():
            errors.append("cancelled")
        elif (error := task.exception()) is not None:
            errors.append(repr(error))
        else:
            keys[task.result()] = due

    started = time.perf_counter()
    for i in range(total):
        due = started + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(command())
        pending.add(task)
        task.add_done_callback(functools.partial(settle, due))
    if pending:
        await asyncio.wait(set(pending), timeout=drain_timeout)
    unanswered.update(pending)
    for task in unanswered:
        task.cancel()
    errors += [f"no answer in {drain_timeout:.0f} s"] * len(unanswered)
    missing = await arrivals.wait_for(keys, drain_timeout)
    latencies = [arrivals.seen.get(key, math.inf) - due for key, due in keys.items()]
    latencies += [math.inf] * len(errors)
    return Latencies(total, percentile(latencies, 50), percentile(latencies, 99), len(errors),
                     missing, errors[0] if errors else None)


async def sustained(writers: int, seconds: float, command: Callable[[], Awaitable[str]],
                    arrivals: Arrivals, drain_timeout: float) -> Throughput:
    """Closed loop: `writers` tasks issue commands back to back for `seconds`; the results that
    arrived, over the time from the first command to the last arrival."""
    started = time.perf_counter()

    async def writer() -> list[str]:
        return [await command() for _ in bounded(seconds)]

    keys = [key for keys in await asyncio.gather(*(writer() for _ in range(writers)))
            for key in keys]
    missing = await arrivals.wait_for(keys, drain_timeout)
    if missing:
        raise RuntimeError(f"{missing} of {len(keys)} results did not arrive in {drain_timeout} s")
    return Throughput(len(keys), max(arrivals.seen[key] for key in keys) - started)


def percentile(values: list[float], q: float) -> float:
    """The `q`-th percentile by nearest rank (inf if there is nothing to rank)."""
    if not values:
        return math.inf
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def p50_p90_ms(seconds: list[float]) -> str:
    """`seconds` as "p50 / p90" in ms: the median, and the value 90 % of the way up the sorted list."""
    ordered = sorted(seconds)
    return f"{statistics.median(ordered) * 1000:7.2f} / {ordered[int(len(ordered) * 0.9)] * 1000:7.2f}"


def by_length_cli(prog: str, description: str | None, main: Callable[[list[int], int], Coroutine[Any, Any, None]],
                  *, lengths: str, samples: int) -> None:
    """The command line of a benchmark over histories of growing length (``--lengths``, ``--samples``),
    run on uvloop with warnings-only logs."""
    import uvloop

    from accord_runtime.logs import configure_logging

    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default=lengths)
    parser.add_argument("--samples", type=int, default=samples)
    args = parser.parse_args()
    configure_logging("WARNING", json=False)
    uvloop.run(main([int(n) for n in args.lengths.split(",")], args.samples))
