"""The open-loop driver of the benchmarks: latency from the scheduled start, failures and lost
results counted, and finished commands let go while the window runs."""

from __future__ import annotations

import asyncio
import gc
import math
import weakref

from bench.harness import Arrivals, open_loop


async def test_counts_failures_and_lost_results_as_infinitely_slow() -> None:
    arrivals = Arrivals()
    started = 0

    async def command() -> str:
        nonlocal started
        started += 1
        key = f"k{started}"
        if started % 10 == 0:
            raise RuntimeError("refused")
        if started % 10 != 5:  # every tenth result, offset by 5, never arrives
            arrivals.mark([key])
        return key

    result = await open_loop(1000, 0.1, command, arrivals, drain_timeout=0.2)
    assert result.offered == 100 and started == 100
    assert result.failed == 10 and result.first_error == "RuntimeError('refused')"
    assert result.missing == 10
    assert result.p50 < 0.1  # marked as soon as it ran: within the window of its scheduled start
    assert math.isinf(result.p99)  # 20 of 100 never arrived


async def test_a_command_still_running_after_the_drain_timeout_is_unanswered() -> None:
    arrivals = Arrivals()

    async def command() -> str:
        await asyncio.sleep(10)
        return "never"

    result = await open_loop(100, 0.03, command, arrivals, drain_timeout=0.05)
    assert result.failed == result.offered == 3
    assert result.first_error == "no answer in 0 s"
    assert math.isinf(result.p50)


async def test_finished_commands_are_not_held_while_the_window_runs() -> None:
    """The driver runs in the service's process: what it holds, the cyclic collector walks."""
    arrivals = Arrivals()
    finished: list[weakref.ref[asyncio.Task[str]]] = []
    held_later: list[int] = []

    async def command() -> str:
        task = asyncio.current_task()
        assert task is not None
        if len(finished) == 40:  # the first 20 ended long ago (one a millisecond)
            gc.collect()
            held_later.append(sum(ref() is not None for ref in finished[:20]))
        finished.append(weakref.ref(task))
        key = f"k{len(finished)}"
        arrivals.mark([key])
        return key

    result = await open_loop(1000, 0.05, command, arrivals, drain_timeout=1)
    assert result.failed == result.missing == 0
    assert held_later == [0]
