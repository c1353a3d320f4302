"""RabbitMQ, as the CLI reaches it: the URL and exchange from the environment (as the services read
them), connection failures as exit code 3, and header values as plain text."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aio_pika
import typer
from aio_pika.abc import AbstractConnection
from aio_pika.exceptions import AMQPError

from accord_cli.output import UNREACHABLE, fail

T = TypeVar("T")

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def amqp_url() -> str:
    return os.environ.get("ACCORD_AMQP_URL", DEFAULT_AMQP_URL)


def exchange_name() -> str:
    return os.environ.get("ACCORD_EXCHANGE", "accord.events")


def queue_prefix() -> str:
    return os.environ.get("ACCORD_QUEUE_PREFIX", "accord")


def where(url: str) -> str:
    """``host:port/vhost`` of an AMQP URL: what an error may show (never the password)."""
    parts = urlsplit(url)
    return f"{parts.hostname or '?'}:{parts.port or 5672}{parts.path or '/'}"


async def connect(url: str, timeout: float = 10.0) -> AbstractConnection:
    """A plain connection (a CLI command is short: it fails rather than reconnects)."""
    try:
        return await aio_pika.connect(url, timeout=timeout)
    except (OSError, AMQPError, TimeoutError) as error:
        fail(f"cannot reach RabbitMQ at {where(url)}: {error or type(error).__name__}", UNREACHABLE)


def text(value: Any) -> Any:
    """A header value as JSON-ready data (AMQP long strings may arrive as bytes)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return [text(v) for v in value]
    if isinstance(value, dict):
        return {str(k): text(v) for k, v in value.items()}
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


def run(work: Coroutine[Any, Any, T], interrupted: int = 130) -> T:
    """`asyncio.run`; Ctrl-C ends the command quietly with exit code `interrupted`."""
    try:
        return asyncio.run(work)
    except KeyboardInterrupt:
        raise typer.Exit(interrupted) from None
