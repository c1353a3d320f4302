"""Run every benchmark and print the figures: ``python -m bench.run [--quick] [--only a,b]``.

Each benchmark works in a database of its own (``accord_bench_<random>``, dropped at the end)
and on exchanges and queues of its own, so it never touches test or service data. Results go
to ``bench/results/latest.json`` and ``bench/results/<date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console

from accord_runtime.logs import configure_logging
from bench.api import api_commands
from bench.appends import append_throughput, rebuild
from bench.baselines import raw_insert, raw_publish
from bench.cpu import ForeignLoad
from bench.endtoend import command_to_read_model_elsewhere
from bench.harness import BenchConfig
from bench.naive import naive_pipeline
from bench.notifier import notifier_throughput
from bench.readmodel import command_to_read_model
from bench.report import Figure, Results
from bench.tuned import tuned_pipeline

RESULTS = Path(__file__).parent / "results"

Benchmark = Callable[[BenchConfig], Awaitable[Figure | list[Figure]]]


BENCHMARKS: dict[str, tuple[str, Benchmark]] = {
    "a": ("raw INSERT baseline", raw_insert),
    "b": ("EventStore.append", append_throughput),
    "c": ("raw publish baseline", raw_publish),
    "d": ("command → read model", command_to_read_model),
    "e": ("projection rebuild", rebuild),
    # (g) before (f): the naive pipeline is the baseline (f)'s sustained figure is rated against,
    # and the table lists figures in the order they were measured.
    "g": ("naive pipeline baseline", naive_pipeline),
    "j": ("hand-tuned pipeline baseline", tuned_pipeline),
    "f": ("command → another service's read model", command_to_read_model_elsewhere),
    "h": ("notifier: events → webhooks", notifier_throughput),
    "i": ("HTTP commands with authentication", api_commands),
}


def _loop_factory() -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    try:
        import uvloop
    except ImportError:
        return None, "asyncio default loop (uvloop not installed)"
    return uvloop.new_event_loop, f"uvloop {importlib.metadata.version('uvloop')}"


async def _environment(config: BenchConfig, loop: str) -> dict[str, str]:
    conn = await asyncpg.connect(config.database_url)
    try:
        server = await conn.fetchval("SHOW server_version")
        synchronous_commit = await conn.fetchval("SHOW synchronous_commit")
    finally:
        await conn.close()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "event_loop": loop, "python": platform.python_version(), "machine": platform.machine(),
        "cpus": str(os.cpu_count()),
        "postgres": server, "synchronous_commit": synchronous_commit,
        "commit": _commit(), "runs": str(config.runs), "window_s": str(config.window),
        "latency_window_s": str(config.latency_window),
    }


def _commit() -> str:
    """The checked-out commit, marked if the working tree differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False,
                              cwd=Path(__file__).parent).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return f"{commit} + uncommitted changes" if git("status", "--porcelain") else commit


async def main(config: BenchConfig, selected: list[str], loop: str, console: Console) -> Results:
    results = Results(await _environment(config, loop))
    for letter in selected:
        title, benchmark = BENCHMARKS[letter]
        started = time.perf_counter()
        foreign = ForeignLoad()
        foreign.start()
        # No spinner: a live display would take CPU from the system under test.
        console.log(f"({letter}) {title}…")
        try:
            measured = await benchmark(config)
        except Exception as error:  # noqa: BLE001 (report it, measure the others all the same)
            console.print_exception(max_frames=8)
            results.skipped[f"({letter}) {title}"] = f"failed: {type(error).__name__}: {error}"
            continue
        cores, stolen = foreign.cores(), foreign.stolen()
        if cores is not None:
            results.foreign_load[f"({letter}) {title}"] = cores
        if stolen is not None:
            results.stolen[f"({letter}) {title}"] = stolen
        for figure in measured if isinstance(measured, list) else [measured]:
            results.add(figure)
        console.log(f"({letter}) {title}: {time.perf_counter() - started:.1f} s"
                    + (f", other processes used {cores:.2f} cores" if cores is not None else "")
                    + (f", the hypervisor took {stolen:.0%} of the CPU time" if stolen is not None else ""))
    return results


def _run(coroutine: Coroutine[Any, Any, Results],
         factory: Callable[[], asyncio.AbstractEventLoop] | None) -> Results:
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coroutine)


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="one run of each, shorter windows (under ~90 s)")
    parser.add_argument("--runs", type=int, help="repetitions of each measurement")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    parser.add_argument("--output", type=Path, help="write the figures (JSON) to this file instead of bench/results/")
    parser.add_argument("--only", default="".join(BENCHMARKS),
                        help=f"benchmarks to run, e.g. 'abe' (default: all, in the order {''.join(BENCHMARKS)})")
    args = parser.parse_args()
    selected = [letter for letter in args.only.replace(",", "") if letter in BENCHMARKS]
    configure_logging("WARNING", json=False)
    config = BenchConfig.create(quick=args.quick, runs=args.runs)
    factory, loop = _loop_factory()
    console = Console(width=None if sys.stdout.isatty() else 150)
    console.log(f"event loop: {loop}; {config.runs} run(s) of each measurement")
    started = time.perf_counter()
    results = _run(main(config, selected, loop, console), factory)
    results.environment["total_s"] = f"{time.perf_counter() - started:.0f}"
    results.print(console)
    if args.output:
        results.save(args.output)
    elif not args.no_save:
        suffix = "-quick" if args.quick else ""
        dated = RESULTS / f"{datetime.date.today().isoformat()}{suffix}.json"
        results.save(RESULTS / "latest.json", dated)
        console.print(f"saved to {RESULTS / 'latest.json'} and {dated}")


if __name__ == "__main__":
    cli()
