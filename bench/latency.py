"""Command-to-somewhere figures: latency at offered rates (open loop) and sustained throughput."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from bench.cpu import CpuMeter
from bench.harness import Arrivals, BenchConfig, open_loop, sustained
from bench.report import Figure, Target


class CommandPath:
    """The figures of one path (e.g. command → read model), filled in run by run."""

    def __init__(self, key: str, title: str, config: BenchConfig, *,
                 rates: tuple[int, ...] | None = None,
                 p99_targets: dict[int, Target] | None = None,
                 sustained_target: Target | None = None,
                 sustained_baseline: str | None = None) -> None:
        self.config = config
        self.rates = rates or config.rates  # offered rates of the open-loop measurements
        self.percentiles: dict[tuple[int, int], Figure] = {}
        for rate in self.rates:
            for q in (50, 99):
                target = (p99_targets or {}).get(rate) if q == 99 else None
                self.percentiles[rate, q] = Figure(
                    f"{key}_p{q}_{rate}", f"{title}: p{q} latency at {rate:,}/s offered", "ms",
                    target=target)
        self.throughput = Figure(f"{key}_sustained",
                                 f"{title}: sustained, {config.writers} writers (closed loop)",
                                 "events/s", baseline=sustained_baseline,
                                 target=sustained_target)

    async def measure(self, command: Callable[[], Coroutine[Any, Any, str]], arrivals: Arrivals, *,
                      database: str, rabbitmq: bool = False, helpers: frozenset[int] = frozenset()) -> None:
        """One run: a warm-up, every offered rate in turn, then the closed loop (whose CPU use
        is measured for this process and the `helpers` processes, `database`'s backends, and
        RabbitMQ's if `rabbitmq`)."""
        config = self.config
        await sustained(config.writers, config.warmup, command, arrivals, config.drain_timeout)
        for rate in self.rates:
            latencies = await open_loop(rate, config.latency_window, command, arrivals,
                                        config.drain_timeout)
            self.percentiles[rate, 50].add_run(latencies.p50 * 1000)
            self.percentiles[rate, 99].add_run(latencies.p99 * 1000)
            if latencies.failed or latencies.missing:
                first = f" (first: {latencies.first_error})" if latencies.first_error else ""
                self.percentiles[rate, 99].notes.append(
                    f"{latencies.failed} failed{first}, {latencies.missing} never arrived"
                    f" of {latencies.offered}")
        with CpuMeter(database, rabbitmq=rabbitmq, helpers=helpers) as meter:
            result = await sustained(config.writers, config.window, command, arrivals,
                                     config.drain_timeout)
        self.throughput.add_run(result.rate, meter.per(result.items))

    def figures(self) -> list[Figure]:
        return [*self.percentiles.values(), self.throughput]
