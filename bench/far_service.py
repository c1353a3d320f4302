"""The far end of (f): the queries service in a process of its own, as deployed, telling when each
drafted agreement reached its read model of agreement parties.

``python -m bench.far_service`` takes its settings from ``ACCORD_*`` variables as the service
does, starts it (`ServiceRuntime.start()`: storage, relay, projections, timers, its bus
consumers), prints ``ready``, then one line ``<agreement id> <time.perf_counter()>`` per drafted
agreement right after the consumer's transaction that wrote it committed, until its standard
input closes. `time.perf_counter` is CLOCK_MONOTONIC on Linux, one clock for every process of
the machine, so the benchmark compares it with its own commands' start times.

It hooks the consumer's private `_store_and_apply` (the transaction of a batch); if that goes
away, no agreement is ever reported and the benchmark fails loudly.
"""

from __future__ import annotations

import asyncio
import sys
import time
from uuid import UUID

import uvloop

from accord_runtime import service
from accord_runtime.consumer import BusConsumer, _Received
from accord_runtime.logs import configure_logging
from contracts.agreements import AgreementDrafted
from services.queries.main import DEFINITION, QueriesSettings

DRAFTED = AgreementDrafted.event_type()


class ReportingConsumer(BusConsumer):
    """A bus consumer that prints the agreements drafted in each batch once it committed."""

    async def _store_and_apply(self, received: list[_Received]) -> set[UUID]:
        stored = await super()._store_and_apply(received)
        now = time.perf_counter()
        lines = [f"{r.event.data['agreement_id']} {now}\n" for r in received
                 if r.event.type == DRAFTED and r.event.id in stored and self.consumer_name == "agreements"]
        if lines:
            sys.stdout.write("".join(lines))
            sys.stdout.flush()
        return stored


async def main() -> None:
    configure_logging("WARNING", json=False)
    service.BusConsumer = ReportingConsumer  # type: ignore[attr-defined]  # the hook, see the docstring
    runtime = service.ServiceRuntime(DEFINITION, QueriesSettings())
    await runtime.start()
    try:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes
    finally:
        await runtime.stop()


if __name__ == "__main__":
    uvloop.run(main())
