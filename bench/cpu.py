"""Where the CPU went (Linux ``/proc``): per item measured, and how much other processes took.

A throughput figure on a 2-core machine says little about *why*; CPU time per item does, and it
barely moves when the machine is busy. `CpuMeter` splits it into this process (the service and
the benchmark driver), the PostgreSQL backends of the benchmark's own database, and RabbitMQ.
`ForeignLoad` reports the cores used meanwhile by everything else (a concurrent test run, a
package install), which moves every throughput and latency figure. Processes that exit
mid-measurement are not counted, so both are lower bounds. Elsewhere both report nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
RABBITMQ = frozenset({"beam.smp"})
#: Processes that serve the benchmarks (or watch them) rather than disturb them.
SERVERS = frozenset({"postgres", "beam.smp", "erl_child_setup", "epmd", "inet_gethost", "py-spy"})


def _processes() -> dict[int, tuple[str, int, Path]]:
    """pid → (command name, CPU ticks used so far, /proc entry), except this process."""
    found: dict[int, tuple[str, int, Path]] = {}
    me = os.getpid()
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        name, _, rest = stat.partition("(")[2].rpartition(")")
        fields = rest.split()
        found[int(entry.name)] = (name, int(fields[11]) + int(fields[12]), entry)  # utime+stime
    return found


def _is_backend_of(entry: Path, database: str) -> bool:
    try:
        title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return f" {database} " in title  # "postgres: 15/main: postgres <database> 127.0.0.1(…) idle"


def _delta(before: dict[int, tuple[str, int, Path]], after: dict[int, tuple[str, int, Path]],
           pids: Collection[int]) -> float:
    """CPU seconds the processes `pids` used between the two snapshots."""
    ticks = sum(after[pid][1] - (before[pid][1] if pid in before else 0) for pid in pids)
    return ticks / TICKS


@dataclass(frozen=True)
class CpuCost:
    """Microseconds of CPU per measured item."""

    client: float
    postgres: float | None = None
    rabbitmq: float | None = None


class CpuMeter:
    """``with CpuMeter(database) as meter: ...`` then ``meter.per(items)``."""

    def __init__(self, database: str | None = None, *, rabbitmq: bool = False,
                 helpers: frozenset[int] = frozenset()) -> None:
        self._database, self._rabbitmq = database, rabbitmq
        self._helpers = helpers  # pids of processes of the system under test, counted with this one
        self._available = (PROC / "self" / "stat").exists()
        self._before: dict[int, tuple[str, int, Path]] = {}
        self._after: dict[int, tuple[str, int, Path]] = {}
        self._client = 0.0

    def __enter__(self) -> CpuMeter:
        self._before = _processes() if self._available else {}
        self._client = time.process_time()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._client = time.process_time() - self._client
        self._after = _processes() if self._available else {}

    def per(self, items: int) -> CpuCost:
        scale = 1e6 / max(items, 1)
        postgres = rabbitmq = None
        if self._available and self._database:
            backends = {pid for pid, (name, _, entry) in self._after.items()
                        if name == "postgres" and _is_backend_of(entry, self._database)}
            postgres = _delta(self._before, self._after, backends) * scale
        if self._available and self._rabbitmq:
            brokers = {pid for pid, (name, _, _) in self._after.items() if name in RABBITMQ}
            rabbitmq = _delta(self._before, self._after, brokers) * scale
        helpers = _delta(self._before, self._after, self._helpers & self._after.keys()) if self._available else 0
        return CpuCost((self._client + helpers) * scale, postgres, rabbitmq)


def _steal_and_total() -> tuple[int, int]:
    """Ticks the hypervisor took from this machine's CPUs (``steal``) and all ticks, so far."""
    fields = [int(v) for v in (PROC / "stat").read_text().splitlines()[0].split()[1:]]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


class ForeignLoad:
    """Average cores used by processes other than this one and the servers, since `start()`."""

    def __init__(self) -> None:
        self._available = (PROC / "self" / "stat").exists()
        self._before: dict[int, tuple[str, int, Path]] = {}
        self._started = 0.0
        self._steal_before = (0, 0)

    def start(self) -> None:
        self._before = _processes() if self._available else {}
        self._steal_before = _steal_and_total() if self._available else (0, 0)
        self._started = time.perf_counter()

    def stolen(self) -> float | None:
        """The share of CPU time the hypervisor gave to other machines since `start()` (on a
        shared host: every figure is then pessimistic, CPU per item included)."""
        if not self._available:
            return None
        steal, total = _steal_and_total()
        elapsed = total - self._steal_before[1]
        return (steal - self._steal_before[0]) / elapsed if elapsed else 0.0

    def cores(self) -> float | None:
        if not self._available:
            return None
        after = _processes()
        others = {pid for pid, (name, _, _) in after.items() if name not in SERVERS}
        return _delta(self._before, after, others) / (time.perf_counter() - self._started)
