"""Run one outbox relay until SIGTERM or SIGINT, so a test can run it in a process and kill it.

    python -m tests.integration.relay_process --database-url ... --schema ... \\
        --amqp-url ... --exchange ...
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from accord_runtime.doorbell import Doorbell
from accord_runtime.logs import configure_logging
from accord_runtime.outbox import OutboxRelay
from accord_runtime.postgres import create_pool


async def main(args: argparse.Namespace) -> None:
    configure_logging("INFO", json=True)
    pool = await create_pool(args.database_url, args.schema, min_size=1, max_size=4)
    doorbell = Doorbell(args.database_url, args.schema)
    await doorbell.start()
    relay = OutboxRelay(pool, args.database_url, args.schema, args.amqp_url, args.exchange,
                        args.service, doorbell, batch_size=args.batch_size)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: stopping.append(loop.create_task(relay.stop())))
    try:
        await relay.run()
    finally:
        await doorbell.stop()
        await pool.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--exchange", required=True)
    parser.add_argument("--service", default="relayprocess")
    parser.add_argument("--batch-size", type=int, default=500)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
