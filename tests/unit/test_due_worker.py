"""The due-work loop every timer-like worker shares (timers, the notifier's deliveries): a wake-up with
nothing due only looks, due work is drained and then looked at again, and work that is due but cannot
be claimed (another replica holds it) is retried after a short pause instead of in a busy loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from accord_runtime.timers import DueWorker


class Tasks(DueWorker):
    """Due times in memory; `claimable` False plays another replica holding every due item."""

    def __init__(self, *, max_sleep: float = 30.0, idle_pause: float = 0.05, min_interval: float = 0.0) -> None:
        super().__init__(max_sleep=max_sleep, idle_pause=idle_pause, min_interval=min_interval)
        self.due: list[datetime] = []
        self.claimable = True
        self.looks = 0
        self.drains = 0
        self.handled = 0

    async def next_due(self) -> datetime | None:
        self.looks += 1
        return min(self.due, default=None)

    async def drain(self) -> int:
        self.drains += 1
        if not self.claimable:
            return 0
        now = datetime.now(UTC)
        batch = [due for due in self.due if due <= now][:2]  # a batch of two: the loop comes back for more
        for due in batch:
            self.due.remove(due)
        self.handled += len(batch)
        return len(batch)


@pytest.fixture
async def tasks() -> AsyncIterator[Tasks]:
    worker = Tasks()
    running = asyncio.create_task(worker.run())
    await asyncio.sleep(0.02)
    yield worker
    worker.stop()
    await asyncio.wait_for(running, 2)


async def test_a_wake_up_with_nothing_due_only_looks(tasks: Tasks) -> None:
    tasks.due.append(datetime.now(UTC) + timedelta(hours=1))
    for _ in range(5):
        tasks.wake()
        await asyncio.sleep(0.01)
    assert tasks.drains == 0 and tasks.looks >= 5


async def test_due_work_is_drained_batch_after_batch_then_the_worker_sleeps(tasks: Tasks) -> None:
    tasks.due.extend([datetime.now(UTC) - timedelta(seconds=1)] * 5)
    tasks.wake()
    await asyncio.sleep(0.05)
    assert tasks.handled == 5 and tasks.drains == 3  # 2 + 2 + 1, then nothing is due: no empty drain
    looks = tasks.looks
    await asyncio.sleep(0.1)
    assert tasks.looks == looks  # asleep until woken (or `max_sleep`)


async def test_work_due_later_is_drained_when_it_falls_due_without_a_wake_up(tasks: Tasks) -> None:
    tasks.due.append(datetime.now(UTC) + timedelta(seconds=0.1))
    tasks.wake()
    await asyncio.sleep(0.03)
    assert tasks.handled == 0
    await asyncio.sleep(0.15)
    assert tasks.handled == 1


async def test_due_work_another_replica_holds_is_retried_after_a_pause_not_in_a_busy_loop(tasks: Tasks) -> None:
    tasks.claimable = False
    tasks.due.append(datetime.now(UTC) - timedelta(seconds=1))
    tasks.wake()
    await asyncio.sleep(0.2)
    assert 2 <= tasks.drains <= 6  # every 50 ms
    tasks.claimable = True
    await asyncio.sleep(0.1)
    assert tasks.handled == 1


async def test_wake_ups_close_together_make_one_look_but_due_times_are_kept() -> None:
    """With `min_interval`, a burst of wake-ups (one per committed append) costs one look per
    interval; work falling due is still handled on time, since due times are not wake-ups."""
    worker = Tasks(min_interval=0.2)
    running = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.02)
        looks = worker.looks
        for _ in range(50):
            worker.wake()
            await asyncio.sleep(0.002)
        assert worker.looks - looks <= 2  # 50 wake-ups in ~0.1 s: at most one look more, plus the last
        worker.due.append(datetime.now(UTC) + timedelta(seconds=0.3))
        worker.wake()
        await asyncio.sleep(0.6)
        assert worker.handled == 1
    finally:
        worker.stop()
        await asyncio.wait_for(running, 2)
