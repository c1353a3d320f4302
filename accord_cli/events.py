"""``accord events tail``: live events from the bus, through a private queue, filtered and formatted.

The queue is exclusive and auto-deleted: it exists only while the command runs, and the services'
own queues never see it.
"""

from __future__ import annotations

import asyncio
import json
from fnmatch import fnmatchcase
from typing import Annotated, Any

import aio_pika
import typer
from aio_pika.abc import AbstractIncomingMessage
from rich.text import Text

from accord_cli import bus
from accord_cli.options import Json
from accord_cli.output import FAILED, err, fail, json_line, out

app = typer.Typer(help="Watch the events on the bus.", no_args_is_help=True)

#: Data fields worth a glance on one line, in this order.
GLANCE = ("title", "subject", "name", "priority", "clock", "status", "value", "band", "score", "to_band",
          "outcome", "role")


def matches_type(envelope: dict[str, Any], patterns: list[str]) -> bool:
    """The event's type matches a pattern: its full type (``accord.queries.QueryOverdue.v1``), its
    routing key (``queries.QueryOverdue``) or its name (``QueryOverdue``); ``*`` wildcards allowed."""
    if not patterns:
        return True
    full = str(envelope.get("type", ""))
    parts = full.split(".")
    forms = [full]
    if len(parts) >= 4:
        forms += [f"{parts[1]}.{parts[2]}", parts[2]]
    return any(fnmatchcase(form, pattern) for pattern in patterns for form in forms)


def matches_agreement(envelope: dict[str, Any], agreement_id: str | None) -> bool:
    if agreement_id is None:
        return True
    data = envelope.get("data")
    if isinstance(data, dict) and str(data.get("agreement_id", "")) == agreement_id:
        return True
    return agreement_id in str(envelope.get("subject") or "")


def one_line(envelope: dict[str, Any]) -> Text:
    """``12:03:04  queries.QueryOverdue  agreement 1a2b3c4d  priority=urgent …  by system:queries``"""
    parts = str(envelope.get("type", "?")).split(".")
    kind = f"{parts[1]}.{parts[2]}" if len(parts) >= 4 else str(envelope.get("type", "?"))
    when = str(envelope.get("time", ""))[11:19]
    data = envelope.get("data") if isinstance(envelope.get("data"), dict) else {}
    assert isinstance(data, dict)
    line = Text()
    line.append(f"{when:8}  ", style="dim")
    line.append(f"{kind:36}", style="bold cyan" if "Overdue" not in kind and "Breach" not in kind else "bold red")
    if data.get("agreement_id"):
        line.append(f"  agreement {str(data['agreement_id'])[:8]}", style="magenta")
    glance = [f"{key}={data[key]}" for key in GLANCE if data.get(key) not in (None, "", [])]
    if glance:
        line.append("  " + "  ".join(glance[:4]))
    if envelope.get("actor"):
        line.append(f"  by {envelope['actor']}", style="dim")
    return line


def decode(message: AbstractIncomingMessage) -> dict[str, Any]:
    try:
        body = json.loads(message.body)
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    return {"type": "(not a CloudEvent)", "routing_key": message.routing_key,
            "body": message.body[:500].decode("utf-8", "replace")}


@app.command()
def tail(
    key: Annotated[list[str] | None, typer.Option("--key", "-k", help="Routing-key pattern to bind, e.g. "
                                                  "'queries.*' (repeatable; default '#': everything).")] = None,
    event_type: Annotated[list[str] | None, typer.Option("--type", "-t", help="Only these types: full type, "
                                                         "'service.Name' or 'Name'; * wildcards (repeatable).")]
    = None,
    agreement: Annotated[str | None, typer.Option("--agreement", "-a", help="Only events of this agreement.")]
    = None,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many events (exit 1 if the "
                                              "timeout comes first).")] = None,
    timeout: Annotated[float | None, typer.Option(min=0.1, help="Stop after this many seconds.")] = None,
    as_json: Json = False,
) -> None:
    """Stream live events (CloudEvents) from the exchange until --count, --timeout or Ctrl-C."""
    received = bus.run(_tail(key or ["#"], event_type or [], agreement, count, timeout, as_json), interrupted=0)
    if count is not None and received < count:
        fail(f"only {received} of {count} events within {timeout:g} s", FAILED)


async def _tail(keys: list[str], types: list[str], agreement: str | None, count: int | None,
                timeout: float | None, as_json: bool) -> int:
    url, exchange_name = bus.amqp_url(), bus.exchange_name()
    connection = await bus.connect(url)
    seen = 0
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        for pattern in keys:
            await queue.bind(exchange, routing_key=pattern)
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        await queue.consume(inbox.put, no_ack=True)
        err.print(f"listening on {exchange_name} ({', '.join(keys)}) at {bus.where(url)}", style="dim")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while count is None or seen < count:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                break
            try:
                message = await asyncio.wait_for(inbox.get(), remaining)
            except TimeoutError:
                break
            envelope = decode(message)
            if not (matches_type(envelope, types) and matches_agreement(envelope, agreement)):
                continue
            seen += 1
            if as_json:
                json_line(envelope)
            else:
                out.print(one_line(envelope))
    return seen
