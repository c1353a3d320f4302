"""An example subscriber to Accord's events: open queries per agreement, kept in SQLite.

It uses no Accord code, only what an integrator has: the RabbitMQ exchange, the committed JSON
Schemas (``contracts/schemas/``) and these rules (``docs/integrators.md``):

* its own durable quorum queue, bound to ``accord.events`` with ``queries.*``, with a dead-letter
  queue for messages it can never handle;
* each message is applied in one SQLite transaction and acked only after the commit;
* idempotent by CloudEvent ``id`` (a redelivered event is acked and skipped);
* in order per stream: ``subject`` + ``sequence``; an event that arrives before its predecessor is
  parked and applied once the gap is filled;
* versions: a type this projection does not handle is skipped (it still counts in its stream's
  sequence); a newer version of a type it does handle is dead-lettered, never guessed at, and the
  stream waits until the projection is upgraded and the event put back.

Run it (needs ``aio-pika`` and ``jsonschema``)::

    python -m examples.subscriber --amqp-url amqp://guest:guest@127.0.0.1:5672/ --exchange accord.events
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import signal
import sqlite3
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from jsonschema import Draft202012Validator, FormatChecker

log = logging.getLogger("accord-subscriber")

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "contracts" / "schemas"
TYPE = re.compile(r"^accord\.(?P<service>[a-z]+)\.(?P<name>[A-Z][A-Za-z]+)\.v(?P<version>\d+)$")

#: Query status after each event this projection handles; None: the status does not change.
STATUS_AFTER = {
    "QueryRaised": "open",
    "QueryAnswered": "answered",
    "QueryInformationRequested": "waiting_for_information",
    "QueryInformationProvided": "open",
    "QueryReopened": "open",
    "QueryClosed": "closed",
    "QueryWithdrawn": "withdrawn",
    "QueryOverdue": None,
}
HANDLED = {("queries", name) for name in STATUS_AFTER}
FINISHED = ("closed", "withdrawn")


@dataclass(frozen=True)
class Config:
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    exchange: str = "accord.events"
    queue: str = "example.open-queries"
    bindings: Sequence[str] = ("queries.*",)
    database: Path = Path("open-queries.sqlite3")
    schemas: Path = SCHEMA_DIR
    prefetch: int = 32
    delivery_limit: int = 10
    max_messages: int | None = None  # stop after this many deliveries (tests, batch runs)
    idle_exit: float | None = None  # stop after this many seconds without a message


class Unreadable(Exception):
    """This message can never be handled by this build: dead-letter it."""


@dataclass
class Schemas:
    """The committed JSON Schemas: the envelope's, and the `data` of each event type known here."""

    directory: Path
    envelope: Draft202012Validator = field(init=False)
    data: dict[str, Draft202012Validator] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        checker = FormatChecker()
        self.envelope = Draft202012Validator(json.loads((self.directory / "cloudevent.json").read_text()),
                                             format_checker=checker)
        for path in sorted(self.directory.glob("accord.*.json")):
            self.data[path.stem] = Draft202012Validator(json.loads(path.read_text()), format_checker=checker)
        if not self.data:
            raise FileNotFoundError(f"no event schemas in {self.directory}")

    def read(self, body: bytes) -> tuple[dict[str, Any], bool]:
        """The envelope, and whether to apply it (False: a type this projection skips).

        Raises `Unreadable` for a broken envelope, invalid data, or a version of a handled type
        newer than the schemas know.
        """
        try:
            envelope = json.loads(body)
        except ValueError as error:
            raise Unreadable(f"not JSON: {error}") from error
        if problem := next(self.envelope.iter_errors(envelope), None):
            raise Unreadable(f"not an Accord CloudEvent: {problem.message}")
        service, name, _ = TYPE.fullmatch(envelope["type"]).groups()  # type: ignore[union-attr]
        if (service, name) not in HANDLED:
            return envelope, False
        validator = self.data.get(envelope["type"])
        if validator is None:
            raise Unreadable(f"{envelope['type']}: a version this subscriber does not know")
        if problem := next(validator.iter_errors(envelope["data"]), None):
            raise Unreadable(f"{envelope['type']} data: {problem.message}")
        return envelope, True


class Projection:
    """Open queries per agreement, with the bookkeeping that makes it idempotent and ordered."""

    def __init__(self, path: Path | str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)  # transactions are explicit
        self.db.executescript("""
            CREATE TABLE IF NOT EXISTS seen_events (event_id TEXT PRIMARY KEY, outcome TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS streams (subject TEXT PRIMARY KEY, last_sequence INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS parked (
                subject TEXT NOT NULL, sequence INTEGER NOT NULL, envelope TEXT NOT NULL, apply INTEGER NOT NULL,
                PRIMARY KEY (subject, sequence));
            CREATE TABLE IF NOT EXISTS queries (
                query_id TEXT PRIMARY KEY, agreement_id TEXT NOT NULL, status TEXT NOT NULL,
                priority TEXT, title TEXT, overdue INTEGER NOT NULL DEFAULT 0);
        """)

    def close(self) -> None:
        self.db.close()

    def handle(self, envelope: dict[str, Any], apply: bool) -> str:
        """Apply one event (and any parked successors) in one transaction; return what happened."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            outcome = self._handle(envelope, apply)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return outcome

    def _handle(self, envelope: dict[str, Any], apply: bool) -> str:
        event_id, subject, sequence = envelope["id"], envelope["subject"], envelope["sequence"]
        if self.db.execute("SELECT 1 FROM seen_events WHERE event_id = ?", (event_id,)).fetchone():
            return "duplicate"
        row = self.db.execute("SELECT last_sequence FROM streams WHERE subject = ?", (subject,)).fetchone()
        last = None if row is None else row[0]
        if last is not None and sequence <= last:
            outcome = "stale"  # its place in the stream is taken: a copy under another id
        elif last is not None and sequence > last + 1:
            # Its predecessor has not arrived yet: keep it until it does.
            self.db.execute("INSERT OR IGNORE INTO parked VALUES (?, ?, ?, ?)",
                            (subject, sequence, json.dumps(envelope), apply))
            outcome = "parked"
        else:
            # The next event of the stream, or the first this subscriber sees of it (a subscriber
            # only receives what is published after its queue is bound: it may join a stream late).
            outcome = self._apply(envelope, apply)
            self._apply_parked(subject, sequence)
        self.db.execute("INSERT INTO seen_events VALUES (?, ?)", (event_id, outcome))
        return outcome

    def _apply_parked(self, subject: str, sequence: int) -> None:
        while row := self.db.execute("SELECT envelope, apply FROM parked WHERE subject = ? AND sequence = ?",
                                     (subject, sequence + 1)).fetchone():
            envelope = json.loads(row[0])
            self._apply(envelope, bool(row[1]))
            self.db.execute("DELETE FROM parked WHERE subject = ? AND sequence = ?", (subject, sequence + 1))
            self.db.execute("UPDATE seen_events SET outcome = 'applied late' WHERE event_id = ?", (envelope["id"],))
            sequence += 1

    def _apply(self, envelope: dict[str, Any], apply: bool) -> str:
        self.db.execute("INSERT INTO streams VALUES (?, ?) ON CONFLICT (subject) DO UPDATE SET last_sequence ="
                        " excluded.last_sequence", (envelope["subject"], envelope["sequence"]))
        if not apply:
            return "skipped"
        name = TYPE.fullmatch(envelope["type"])["name"]  # type: ignore[index]
        data = envelope["data"]
        status = STATUS_AFTER[name]
        if name == "QueryRaised":
            self.db.execute(
                "INSERT INTO queries (query_id, agreement_id, status, priority, title) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (query_id) DO UPDATE SET status = excluded.status, priority = excluded.priority,"
                " title = excluded.title",
                (data["query_id"], data["agreement_id"], status, data["priority"], data["subject"]))
        elif status is not None:
            self.db.execute(
                "INSERT INTO queries (query_id, agreement_id, status) VALUES (?, ?, ?)"
                " ON CONFLICT (query_id) DO UPDATE SET status = excluded.status",
                (data["query_id"], data["agreement_id"], status))
        else:  # QueryOverdue
            self.db.execute(
                "INSERT INTO queries (query_id, agreement_id, status, overdue) VALUES (?, ?, 'open', 1)"
                " ON CONFLICT (query_id) DO UPDATE SET overdue = 1",
                (data["query_id"], data["agreement_id"]))
        return "applied"

    def open_queries(self) -> dict[str, int]:
        """Agreement id → how many of its queries are open (not closed or withdrawn)."""
        rows = self.db.execute(
            "SELECT agreement_id, count(*) FROM queries WHERE status NOT IN (?, ?)"
            " GROUP BY agreement_id ORDER BY agreement_id", FINISHED)
        return dict(rows.fetchall())


async def declare(channel: AbstractChannel, config: Config) -> AbstractQueue:
    """The subscriber's queue (durable, quorum, with a dead-letter queue) bound to Accord's exchange."""
    exchange = await channel.declare_exchange(config.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    dlq = f"{config.queue}.dlq"
    await channel.declare_queue(dlq, durable=True, arguments={"x-queue-type": "quorum"})
    queue = await channel.declare_queue(config.queue, durable=True, arguments={
        "x-queue-type": "quorum",
        "x-delivery-limit": config.delivery_limit,  # a message that keeps failing ends in the DLQ
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dlq,
    })
    for pattern in config.bindings:
        await queue.bind(exchange, routing_key=pattern)
    return queue


async def settle(message: AbstractIncomingMessage, schemas: Schemas, projection: Projection) -> str:
    """Handle one delivery: ack after the commit, dead-letter what can never be handled."""
    try:
        envelope, apply = schemas.read(message.body)
        outcome = projection.handle(envelope, apply)
    except Unreadable as error:
        log.warning("dead-lettering %s: %s", message.message_id, error)
        await message.reject(requeue=False)  # to <queue>.dlq through the queue's dead-letter settings
        return "dead-lettered"
    except sqlite3.OperationalError as error:  # e.g. the database is locked: try again later
        log.warning("requeueing %s: %s", message.message_id, error)
        await asyncio.sleep(1)
        await message.nack(requeue=True)
        return "requeued"
    await message.ack()
    log.info("%s %s %s#%s", outcome, envelope["type"], envelope["subject"], envelope["sequence"])
    return outcome


async def run(config: Config, stop: asyncio.Event | None = None) -> Counter[str]:
    """Consume until `stop` is set (or the configured message or idle limit); return the outcomes."""
    stop = stop or asyncio.Event()
    schemas = Schemas(config.schemas)
    projection = Projection(config.database)
    outcomes: Counter[str] = Counter()
    buffer: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    try:
        async with await aio_pika.connect_robust(config.amqp_url) as connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=config.prefetch)
            queue = await declare(channel, config)
            await queue.consume(buffer.put)  # deliveries wait here, and are handled one at a time, in order
            while not stop.is_set() and (config.max_messages is None or outcomes.total() < config.max_messages):
                try:
                    async with asyncio.timeout(config.idle_exit or 1.0):
                        message = await buffer.get()
                except TimeoutError:
                    if config.idle_exit is not None:
                        break
                    continue
                outcomes[await settle(message, schemas, projection)] += 1
    finally:
        projection.close()
    return outcomes


def parse_args(argv: Sequence[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(prog="python -m examples.subscriber", description=__doc__.split("\n")[0])
    default = Config()
    parser.add_argument("--amqp-url", default=default.amqp_url)
    parser.add_argument("--exchange", default=default.exchange)
    parser.add_argument("--queue", default=default.queue, help="this subscriber's own durable queue")
    parser.add_argument("--bind", action="append", dest="bindings",
                        help="routing-key pattern to bind (repeatable; default: queries.*)")
    parser.add_argument("--database", type=Path, default=default.database, help="SQLite file of the projection")
    parser.add_argument("--schemas", type=Path, default=default.schemas, help="directory of Accord's JSON Schemas")
    parser.add_argument("--prefetch", type=int, default=default.prefetch)
    parser.add_argument("--max-messages", type=int, help="stop after this many deliveries")
    parser.add_argument("--idle-exit", type=float, help="stop after this many seconds without a message")
    args = parser.parse_args(argv)
    return Config(amqp_url=args.amqp_url, exchange=args.exchange, queue=args.queue,
                  bindings=tuple(args.bindings or default.bindings), database=args.database,
                  schemas=args.schemas, prefetch=args.prefetch, max_messages=args.max_messages,
                  idle_exit=args.idle_exit)


async def _main(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(sig, stop.set)
    outcomes = await run(config, stop)
    log.info("outcomes: %s", dict(outcomes))
    projection = Projection(config.database)
    try:
        json.dump({"open_queries": projection.open_queries()}, sys.stdout, indent=2)
        print()
    finally:
        projection.close()


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(_main(parse_args(argv)))
