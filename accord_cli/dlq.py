"""``accord dlq``: the dead-letter queues of the services' consumers — what is in them and why, and
sending messages back to where they came from.

Looking never loses a message: each one is taken with ``basic.get``, a copy is published back to
the same dead-letter queue (persistent, mandatory, confirmed) and only then is the original acked.
(A plain get-and-requeue would be simpler, but from RabbitMQ 4.0 a quorum queue counts each
requeue against a default delivery limit of 20, and a dead-letter queue has nowhere to send a
message past it.) A look therefore moves the messages it takes behind any that arrived meanwhile;
their order among themselves is kept. ``requeue`` publishes the chosen messages to their original
exchange and routing key (``x-accord-original-*``, or the broker's ``x-death``), confirmed, before
acking them; a message that cannot be routed stays in the dead-letter queue.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import aio_pika
import typer
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractIncomingMessage
from aio_pika.exceptions import AMQPError

from accord_cli import bus
from accord_cli.options import Json
from accord_cli.output import FAILED, USAGE, emit_json, err, fail, out, short_time, table

app = typer.Typer(help="Dead-letter queues: list them, requeue from them.", no_args_is_help=True)

CONFIRM_TIMEOUT = 10.0
#: Headers that describe a dead-lettering; a requeued message leaves them behind.
DEATH_HEADERS = ("x-accord-", "x-death", "x-first-death-", "x-last-death-")


@dataclass
class DeadLetter:
    dlq: str
    message_id: str | None
    event_type: str | None
    error: str | None
    error_type: str | None
    stage: str | None
    consumer: str | None
    handler: str | None
    failed_at: str | None
    original_exchange: str | None
    original_routing_key: str | None
    body: str = ""
    headers: dict[str, Any] = field(default_factory=dict)
    requeued: bool = False

    @classmethod
    def of(cls, dlq: str, message: AbstractIncomingMessage) -> DeadLetter:
        headers = {str(k): bus.text(v) for k, v in (message.headers or {}).items()}
        target = original_target(headers)
        deaths = headers.get("x-death")
        broker_reason = deaths[0].get("reason") if isinstance(deaths, list) and deaths else None
        return cls(
            dlq=dlq, message_id=message.message_id, event_type=_peek_type(message.body),
            error=headers.get("x-accord-error") or (f"dead-lettered by the broker: {broker_reason}"
                                                    if broker_reason else None),
            error_type=headers.get("x-accord-error-type"), stage=headers.get("x-accord-error-stage"),
            consumer=headers.get("x-accord-consumer"), handler=headers.get("x-accord-handler"),
            failed_at=headers.get("x-accord-failed-at"),
            original_exchange=target[0] if target else None, original_routing_key=target[1] if target else None,
            body=message.body[:4000].decode("utf-8", "replace"), headers=headers)


def original_target(headers: dict[str, Any]) -> tuple[str, str] | None:
    """Where the message was published before it died: (exchange, routing key), or None if unknown."""
    exchange, key = headers.get("x-accord-original-exchange"), headers.get("x-accord-original-routing-key")
    if isinstance(exchange, str) and isinstance(key, str) and key:
        return exchange, key
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        keys = deaths[0].get("routing-keys") or []
        if keys and isinstance(deaths[0].get("exchange"), str):
            return deaths[0]["exchange"], str(keys[0])
    return None


def _peek_type(body: bytes) -> str | None:
    try:
        envelope = json.loads(body)
    except ValueError:
        return None
    return str(envelope["type"]) if isinstance(envelope, dict) and "type" in envelope else None


def consumer_queues(prefix: str) -> list[str]:
    """Every consumer queue the services declare, from their definitions (``<prefix>.<service>.<consumer>``)."""
    from services.agreements.main import DEFINITION as AGREEMENTS
    from services.kpi.main import DEFINITION as KPI
    from services.notifier.main import definition as notifier_definition
    from services.notifier.rules import RulesError
    from services.notifier.settings import NotifierSettings
    from services.queries.main import DEFINITION as QUERIES

    definitions = [AGREEMENTS, QUERIES, KPI]
    try:
        definitions.append(notifier_definition(NotifierSettings()))
    except RulesError as error:
        err.print(f"skipping the notifier's queues: its rules do not load ({error})", style="yellow")
    return [f"{prefix}.{d.name}.{c.name}" for d in definitions for c in d.consumers]


def dead_letter_queues(names: list[str] | None, prefix: str) -> list[str]:
    """DLQ names from what the operator typed (a consumer queue, its DLQ, or ``service.consumer``)."""
    if not names:
        return [f"{queue}.dlq" for queue in consumer_queues(prefix)]
    resolved = []
    for name in names:
        if name.count(".") == 1:
            name = f"{prefix}.{name}"
        resolved.append(name if name.endswith(".dlq") else f"{name}.dlq")
    return resolved


Decide = Callable[[DeadLetter], bool]  # True: send it back to its original exchange


async def _exists(connection: AbstractConnection, kind: str, name: str) -> bool:
    """A passive declare on a channel of its own (a failing one closes its channel)."""
    channel = await connection.channel()
    try:
        if kind == "queue":
            await channel.get_queue(name, ensure=True)
        else:
            await channel.get_exchange(name, ensure=True)
    except AMQPError:
        return False
    await channel.close()
    return True


async def _copy(channel: AbstractChannel, exchange: AbstractExchange, message: AbstractIncomingMessage,
                routing_key: str, headers: dict[str, Any]) -> None:
    await exchange.publish(aio_pika.Message(
        message.body, headers=headers, content_type=message.content_type,
        content_encoding=message.content_encoding, message_id=message.message_id,
        correlation_id=message.correlation_id, timestamp=message.timestamp, type=message.type,
        app_id=message.app_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    ), routing_key=routing_key, mandatory=True, timeout=CONFIRM_TIMEOUT)


async def cycle(connection: AbstractConnection, dlq: str, limit: int, requeue: Decide) -> list[DeadLetter]:
    """Take up to `limit` of the messages in `dlq` now; requeue those `requeue` picks, put the rest back."""
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    letters: list[DeadLetter] = []
    try:
        queue = await channel.declare_queue(dlq, passive=True)
        waiting = queue.declaration_result.message_count or 0
        for _ in range(min(waiting, limit)):
            message = await queue.get(no_ack=False, fail=False, timeout=CONFIRM_TIMEOUT)
            if message is None:
                break
            letter = DeadLetter.of(dlq, message)
            if requeue(letter):
                letter.requeued = await _send_back(connection, channel, message, letter)
            if not letter.requeued:
                await _copy(channel, channel.default_exchange, message, dlq, dict(message.headers or {}))
            await message.ack()
            letters.append(letter)
    finally:
        await channel.close()
    return letters


async def _send_back(connection: AbstractConnection, channel: AbstractChannel,
                     message: AbstractIncomingMessage, letter: DeadLetter) -> bool:
    if letter.original_routing_key is None or letter.original_exchange is None:
        err.print(f"{letter.message_id}: no original exchange or routing key in its headers; kept", style="yellow")
        return False
    if letter.original_exchange and not await _exists(connection, "exchange", letter.original_exchange):
        err.print(f"{letter.message_id}: exchange {letter.original_exchange} does not exist; kept", style="yellow")
        return False
    exchange = (await channel.get_exchange(letter.original_exchange, ensure=False)
                if letter.original_exchange else channel.default_exchange)
    headers = {k: v for k, v in (message.headers or {}).items() if not str(k).startswith(DEATH_HEADERS)}
    headers["x-accord-requeued-from"] = letter.dlq
    try:
        await _copy(channel, exchange, message, letter.original_routing_key, headers)
    except aio_pika.exceptions.DeliveryError:
        err.print(f"{letter.message_id}: no queue is bound to {letter.original_routing_key}; kept", style="yellow")
        return False
    return True


async def _run(queues: list[str] | None, prefix: str, limit: int, requeue: Decide,
               strict: bool) -> tuple[dict[str, int | None], list[DeadLetter]]:
    names = dead_letter_queues(queues, prefix)
    connection = await bus.connect(bus.amqp_url())
    counts: dict[str, int | None] = {}
    letters: list[DeadLetter] = []
    async with connection:
        for dlq in names:
            if not await _exists(connection, "queue", dlq):
                if strict:
                    fail(f"no queue {dlq}", FAILED)
                counts[dlq] = None
                continue
            taken = await cycle(connection, dlq, limit, requeue)
            counts[dlq] = len(taken)
            letters += taken
    return counts, letters


Queues = Annotated[list[str] | None, typer.Option(
    "--queue", "-q", help="A consumer queue, its DLQ or 'service.consumer' (repeatable; default: every "
                          "consumer of the four services).")]
Prefix = Annotated[str | None, typer.Option(help="The deployment's queue prefix (default: $ACCORD_QUEUE_PREFIX "
                                                 "or 'accord').")]
Limit = Annotated[int, typer.Option(min=1, max=10_000, help="Look at most this many messages per queue.")]


@app.command("list")
def list_letters(queue: Queues = None, prefix: Prefix = None, limit: Limit = 100, as_json: Json = False) -> None:
    """The messages in the dead-letter queues, with why each failed (nothing is removed)."""
    counts, letters = bus.run(_run(queue, prefix or bus.queue_prefix(), limit, lambda _: False, bool(queue)))
    if as_json:
        emit_json({"queues": counts, "messages": [asdict(letter) for letter in letters]})
        return
    for dlq, n in counts.items():
        err.print(f"{dlq}: " + ("absent" if n is None else f"{n} message(s)"), style="dim")
    out.print(table(f"Dead letters ({len(letters)})", (
        "queue", "message id", "event type", "stage", "error", "failed at", "original routing key"), [
        (letter.dlq, letter.message_id, letter.event_type, letter.stage, _brief(letter.error),
         short_time(letter.failed_at), letter.original_routing_key) for letter in letters]))


def _brief(error: str | None, width: int = 200) -> str | None:
    """A multi-line cause on one line, cut to `width` (``--json`` has it whole)."""
    if error is None:
        return None
    line = " | ".join(part.strip() for part in error.splitlines() if part.strip() and "errors.pydantic.dev" not in part)
    return line if len(line) <= width else line[: width - 1] + "…"


@app.command()
def requeue(
    queue: Queues = None,
    prefix: Prefix = None,
    message_id: Annotated[list[str] | None, typer.Option("--id", help="Requeue this message (repeatable).")]
    = None,
    everything: Annotated[bool, typer.Option("--all", help="Requeue every message.")] = False,
    limit: Limit = 1000,
    as_json: Json = False,
) -> None:
    """Publish dead letters back to their original exchange and routing key, then remove them."""
    if everything == bool(message_id):
        fail("give --all or one or more --id", USAGE)
    wanted = set(message_id or [])
    _, letters = bus.run(_run(queue, prefix or bus.queue_prefix(), limit,
                              lambda letter: everything or letter.message_id in wanted, bool(queue)))
    done = [letter for letter in letters if letter.requeued]
    missing = sorted(wanted - {letter.message_id for letter in letters})
    if as_json:
        emit_json({"requeued": [asdict(letter) for letter in done], "not_found": missing})
    else:
        for letter in done:
            out.print(f"[green]requeued[/] {letter.message_id} → {letter.original_exchange or '(default)'} "
                      f"{letter.original_routing_key}")
        out.print(f"{len(done)} message(s) requeued")
    chosen = [letter for letter in letters if everything or letter.message_id in wanted]
    if missing or len(done) < len(chosen):
        fail(f"not requeued: {', '.join(missing) or 'see above'}", FAILED)
