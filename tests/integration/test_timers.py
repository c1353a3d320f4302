"""Durable timers against a real PostgreSQL: fire once, survive restarts, never double-fire."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from accord_runtime.timers import Timer, TimerScheduler, cancel, schedule
from tests.support import eventually

pytestmark = pytest.mark.servers


class Recorder:
    """A timer handler that writes what it fired into a table (in the firing transaction)."""

    def __init__(self, fail_times: int = 0) -> None:
        self.fail_times = fail_times

    async def __call__(self, conn: asyncpg.Connection, timer: Timer) -> None:
        if self.fail_times:
            self.fail_times -= 1
            raise RuntimeError("handler failed")
        await conn.execute("INSERT INTO fired (key, fired_by) VALUES ($1, $2)", timer.key, timer.payload["by"])


@pytest.fixture
async def fired_table(pool: asyncpg.Pool) -> None:
    await pool.execute("CREATE TABLE fired (key text NOT NULL, fired_by text NOT NULL, at timestamptz DEFAULT now())")


def soon(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


@pytest.mark.usefixtures("fired_table")
async def test_timer_fires_once_near_its_due_time(pool: asyncpg.Pool) -> None:
    scheduler = TimerScheduler(pool, {"test.due": Recorder()}, service="test", max_sleep=30)
    task = asyncio.create_task(scheduler.run())
    try:
        await asyncio.sleep(0.05)  # the scheduler sleeps: nothing is due
        due = soon(0.3)
        await schedule(pool, "test.due", "a", due, {"by": "x"})
        scheduler.wake()
        row = await eventually(lambda: pool.fetchrow("SELECT * FROM fired"), timeout=5)
        delay = (row["at"] - due).total_seconds()
        assert 0 <= delay < 0.2, delay
        await asyncio.sleep(0.3)
        assert await pool.fetchval("SELECT count(*) FROM fired") == 1
    finally:
        scheduler.stop()
        await asyncio.wait_for(task, 5)


@pytest.mark.usefixtures("fired_table")
async def test_missed_timers_fire_on_start_and_rescheduling_moves_them(pool: asyncpg.Pool) -> None:
    await schedule(pool, "test.due", "missed-1", soon(-60), {"by": "x"})
    await schedule(pool, "test.due", "missed-2", soon(-1), {"by": "x"})
    await schedule(pool, "test.due", "moved", soon(-1), {"by": "x"})
    await schedule(pool, "test.due", "moved", soon(3600), {"by": "x"})  # moved into the future
    await schedule(pool, "test.due", "cancelled", soon(-1), {"by": "x"})
    assert await cancel(pool, "test.due", "cancelled")
    scheduler = TimerScheduler(pool, {"test.due": Recorder()}, service="test")
    assert await scheduler.fire_due() == 2
    assert await scheduler.fire_due() == 0
    keys = [r["key"] for r in await pool.fetch("SELECT key FROM fired ORDER BY key")]
    assert keys == ["missed-1", "missed-2"]


@pytest.mark.usefixtures("fired_table")
async def test_two_replicas_never_fire_the_same_timer(pool: asyncpg.Pool) -> None:
    for n in range(300):
        await schedule(pool, "test.due", f"t{n}", soon(-1), {"by": "x"})
    replicas = [TimerScheduler(pool, {"test.due": Recorder()}, service="test", batch_size=7) for _ in range(3)]

    async def drain(s: TimerScheduler) -> None:
        for _ in range(300):  # bounded: each call claims at least one timer until none is due
            if not await s.fire_due():
                return
            await asyncio.sleep(0)  # let the other replicas claim in between

    await asyncio.gather(*(drain(s) for s in replicas))
    counts = await pool.fetch("SELECT key, count(*) AS n FROM fired GROUP BY key")
    assert len(counts) == 300 and {r["n"] for r in counts} == {1}


@pytest.mark.usefixtures("fired_table")
async def test_a_failing_handler_is_retried_and_its_work_undone(pool: asyncpg.Pool) -> None:
    await schedule(pool, "test.due", "flaky", soon(-1), {"by": "x"})
    await schedule(pool, "test.due", "fine", soon(-1), {"by": "x"})
    await schedule(pool, "test.unknown", "orphan", soon(-1), {"by": "x"})
    scheduler = TimerScheduler(pool, {"test.due": Recorder(fail_times=1)}, service="test", retry_delay=0.2)
    await scheduler.fire_due()
    failed = await pool.fetch("SELECT key, attempts, last_error FROM timers WHERE fired_at IS NULL ORDER BY key")
    assert [(r["key"], r["attempts"]) for r in failed] == [("flaky", 1), ("orphan", 1)]  # "fine" fired
    assert all(r["last_error"] for r in failed)
    await asyncio.sleep(0.3)
    await scheduler.fire_due()
    assert sorted(r["key"] for r in await pool.fetch("SELECT key FROM fired")) == ["fine", "flaky"]
    orphan = await pool.fetchrow("SELECT attempts, last_error FROM timers WHERE key = 'orphan'")
    assert "no handler" in orphan["last_error"] and orphan["attempts"] == 2


@pytest.mark.usefixtures("fired_table")
async def test_a_crash_before_commit_leaves_the_timer_due(pool: asyncpg.Pool) -> None:
    """Simulates a process dying mid-fire: the claiming transaction never commits."""
    await schedule(pool, "test.due", "survivor", soon(-1), {"by": "x"})

    async def die(conn: asyncpg.Connection, timer: Timer) -> None:
        await conn.execute("INSERT INTO fired (key, fired_by) VALUES ($1, 'ghost')", timer.key)
        raise asyncpg.InterfaceError("connection lost")  # transient: propagates, rolls back all

    with pytest.raises(asyncpg.InterfaceError):
        await TimerScheduler(pool, {"test.due": die}, service="test").fire_due()
    assert await pool.fetchval("SELECT count(*) FROM fired") == 0
    assert await TimerScheduler(pool, {"test.due": Recorder()}, service="test").fire_due() == 1
    assert await pool.fetchval("SELECT fired_by FROM fired") == "x"


@pytest.mark.usefixtures("fired_table")
async def test_a_handler_may_re_arm_its_own_timer(pool: asyncpg.Pool) -> None:
    """A recurring deadline: the handler moves its own timer on; it stays pending, not fired."""
    rang: list[int] = []

    async def recurring(conn: asyncpg.Connection, timer: Timer) -> None:
        await conn.execute("INSERT INTO fired (key, fired_by) VALUES ($1, 'recurring')", timer.key)
        await schedule(conn, timer.kind, timer.key, soon(3600), {"by": "x"})

    await schedule(pool, "test.recurring", "every-hour", soon(-1), {"by": "x"})
    scheduler = TimerScheduler(pool, {"test.recurring": recurring}, service="test", on_commit=lambda: rang.append(1))
    assert await scheduler.fire_due() == 1
    assert rang == [1]  # the service's doorbell is rung after the commit
    row = await pool.fetchrow("SELECT fired_at, due_at FROM timers WHERE key = 'every-hour'")
    assert row["fired_at"] is None and row["due_at"] > soon(3000)
    assert await scheduler.fire_due() == 0
