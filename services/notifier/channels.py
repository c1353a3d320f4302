"""Delivery channels: a signed JSON webhook, a Slack-compatible incoming webhook, and email over SMTP.

Each sender takes one claimed delivery and either returns (delivered) or raises `DeliveryError`.
Sending never happens inside a database transaction: the worker claims rows, commits, sends, and
records the outcome in a new transaction.

Webhooks go out over HTTP/1.1 on the event loop (h11 for the protocol, asyncio streams for the
sockets), on connections kept open per origin between deliveries: no thread and no new connection
(or TLS handshake) per webhook. A connection is reused only after a complete exchange the server did
not end, and not if it closed meanwhile; each request has one timeout, connection included. HTTP
ignores proxy variables and does not follow redirects (a 3xx is a failed attempt), so a delivery
goes exactly where the rules say. (httpx's AsyncClient cost more CPU per webhook than a thread
with urllib did, measured in bench (h).) SMTP uses the standard library in a worker
thread, with its timeout.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit
from uuid import UUID

import h11

from services.notifier.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_body


class DeliveryError(Exception):
    """This attempt failed; the worker retries with backoff or, after the last one, gives up."""


@dataclass(frozen=True)
class Delivery:
    """A claimed row of the delivery outbox."""

    notification_id: UUID
    escalation_id: UUID
    matter: str
    agreement_id: UUID
    level: int
    round: int
    channel: str
    target: str
    responsible: list[dict[str, Any]]
    message: dict[str, Any]
    attempts: int
    created_at: Any


class Sender(Protocol):
    async def send(self, delivery: Delivery) -> None: ...


@runtime_checkable
class KeepsConnections(Protocol):
    """A sender with connections open between deliveries, closed at shutdown."""

    async def close(self) -> None: ...


def summary(message: dict[str, Any]) -> str:
    """The plain-text body every channel shares."""
    people = ", ".join(f"{p['name']} ({p['side']} {p['role']})" for p in message.get("responsible", [])) or "nobody"
    lines = [message["subject"], "",
             f"Agreement: {message['agreement_id']}",
             f"Matter: {message['matter']} (rule {message['rule']}, level {message['level']}"
             + (f", reminder {message['round']}" if message["round"] else "") + ")",
             f"Responsible now: {people}"]
    if message.get("ack_url"):
        lines += ["", f"Acknowledge: {message['ack_url']}"]
    return "\n".join(lines)


MAX_RESPONSE_BODY = 64 * 1024  # read (and discard) no more of a response: a longer one ends the connection


class _Unanswered(ConnectionError):
    """The connection failed before the server answered (no status line came)."""


@dataclass(eq=False)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    protocol: h11.Connection
    idle_since: float = 0.0

    def usable(self, now: float, keep_alive: float) -> bool:
        """Idle for less than `keep_alive` seconds, and not closed by the server meanwhile."""
        return now - self.idle_since < keep_alive and not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


class HttpPoster:
    """POSTs over HTTP/1.1, keeping up to `max_idle` connections per origin open for the next request."""

    def __init__(self, timeout: float, *, max_idle: int = 20, keep_alive: float = 30.0) -> None:
        self._timeout, self._max_idle, self._keep_alive = timeout, max_idle, keep_alive
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """The response's status code; `DeliveryError` if there is none within the timeout."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DeliveryError(f"not an http(s) URL: {url!r}")
        origin = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        host = f"[{origin[1]}]" if ":" in origin[1] else origin[1]
        request = h11.Request(method="POST", target=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                              headers=[("Host", host if parts.port is None else f"{host}:{parts.port}"),
                                       ("Content-Length", str(len(body))), *headers.items()])
        try:
            async with asyncio.timeout(self._timeout):
                status, reusable, connection = await self._send(origin, request, body)
        except (OSError, h11.ProtocolError) as error:  # TimeoutError, refused and reset connections: OSError
            if isinstance(error, _Unanswered):
                raise DeliveryError(str(error)) from None
            reason = "timed out" if isinstance(error, TimeoutError) else error
            raise DeliveryError(f"{type(error).__name__}: {reason}") from None
        self._release(origin, connection, reusable)
        return status

    async def _send(self, origin: tuple[str, str, int], request: h11.Request,
                    body: bytes) -> tuple[int, bool, _Connection]:
        kept = self._idle_connection(origin)
        if kept is not None:
            try:
                return (*await self._exchange(kept, request, body), kept)
            except _Unanswered:
                pass  # the server closed the kept connection (its idle timeout, just then): once more, on a new one
        connection = await self._connect(origin)
        return (*await self._exchange(connection, request, body), connection)

    async def close(self) -> None:
        """Close the idle connections (those in use close when their request ends)."""
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    def _idle_connection(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin, [])
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.usable(now, self._keep_alive):
                return connection
            connection.close()
        return None

    async def _connect(self, origin: tuple[str, str, int]) -> _Connection:
        scheme, host, port = origin
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            tls = self._tls = self._tls or ssl.create_default_context()
        reader, writer = await asyncio.open_connection(host, port, ssl=tls, server_hostname=host if tls else None)
        return _Connection(reader, writer, h11.Connection(h11.CLIENT))

    @staticmethod
    async def _exchange(connection: _Connection, request: h11.Request, body: bytes) -> tuple[int, bool]:
        """Send the request; (status, whether the connection may carry another request). Closes the
        connection if the exchange fails; `_Unanswered` if it failed before any answer came."""
        protocol = connection.protocol
        status, length = 0, 0
        try:
            connection.writer.write(protocol.send(request) + protocol.send(h11.Data(data=body))
                                    + protocol.send(h11.EndOfMessage()))
            await connection.writer.drain()
            while True:
                event = protocol.next_event()
                if event is h11.NEED_DATA:
                    protocol.receive_data(await connection.reader.read(65536))  # b"": the server closed
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    length += len(event.data)
                    if length > MAX_RESPONSE_BODY:
                        connection.close()
                        return status, False
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise h11.RemoteProtocolError("the server closed the connection")
        except (OSError, h11.ProtocolError) as error:
            connection.close()
            if not status:
                raise _Unanswered(f"{type(error).__name__}: {error}") from error
            raise
        except BaseException:
            connection.close()
            raise
        if protocol.our_state is h11.DONE and protocol.their_state is h11.DONE:
            protocol.start_next_cycle()
            return status, True
        return status, False

    def _release(self, origin: tuple[str, str, int], connection: _Connection, reusable: bool) -> None:
        idle = self._idle.setdefault(origin, [])
        if reusable and len(idle) < self._max_idle:
            connection.idle_since = time.monotonic()
            idle.append(connection)
        else:
            connection.close()


class WebhookSender:
    """POSTs the notification as JSON (or in Slack's incoming-webhook format), signed with HMAC-SHA256."""

    def __init__(self, urls: dict[str, str], secret: bytes, timeout: float) -> None:
        self._urls, self._secret = urls, secret
        self._http = HttpPoster(timeout)

    def body(self, delivery: Delivery) -> bytes:
        message = delivery.message
        if delivery.channel == "slack":
            text = summary(message)
            blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
            if message.get("ack_url"):
                blocks.append({"type": "actions", "elements": [{
                    "type": "button", "text": {"type": "plain_text", "text": "Acknowledge"},
                    "url": message["ack_url"], "style": "primary"}]})
            document: dict[str, Any] = {"text": text, "blocks": blocks}
        else:
            document = {"notification_id": str(delivery.notification_id), **message}
        return json.dumps(document, sort_keys=True).encode()

    async def send(self, delivery: Delivery) -> None:
        url = self._urls.get(delivery.target)
        if url is None:
            raise DeliveryError(f"no webhook named {delivery.target!r} in the rules")
        body = self.body(delivery)
        timestamp = int(time.time())
        headers = {"Content-Type": "application/json", "User-Agent": "accord-notifier",
                   SIGNATURE_HEADER: sign_body(self._secret, body, timestamp), TIMESTAMP_HEADER: str(timestamp),
                   "X-Accord-Notification-Id": str(delivery.notification_id)}
        status = await self._http.post(url, body, headers)
        if not 200 <= status < 300:
            raise DeliveryError(f"webhook {delivery.target!r} answered HTTP {status}")

    async def close(self) -> None:
        await self._http.close()


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    sender: str
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    timeout: float = 10.0


class EmailSender:
    def __init__(self, config: SmtpConfig) -> None:
        self._config = config

    def compose(self, delivery: Delivery) -> EmailMessage:
        email = EmailMessage()
        email["From"] = self._config.sender
        email["To"] = delivery.target
        email["Subject"] = delivery.message["subject"]
        email["X-Accord-Notification-Id"] = str(delivery.notification_id)
        email.set_content(summary(delivery.message))
        return email

    def _send(self, email: EmailMessage) -> None:
        config = self._config
        with smtplib.SMTP(config.host, config.port, timeout=config.timeout) as smtp:
            if config.starttls:
                smtp.starttls()
            if config.username and config.password:
                smtp.login(config.username, config.password)
            smtp.send_message(email)

    async def send(self, delivery: Delivery) -> None:
        try:
            await asyncio.to_thread(self._send, self.compose(delivery))
        except (smtplib.SMTPException, OSError) as error:
            raise DeliveryError(f"SMTP {self._config.host}:{self._config.port}: {type(error).__name__}: {error}") \
                from None
