"""Delivery channels: a signed JSON webhook, a Slack-compatible incoming webhook, and email over SMTP.

Each sender takes one claimed delivery and either returns (delivered) or raises `DeliveryError`.
Sending never happens inside a database transaction: the worker claims rows, commits, sends, and
records the outcome in a new transaction.

Webhooks go through one aiohttp client session per sender, which keeps connections to each
receiver open between deliveries (HTTP keep-alive) and sends a batch's deliveries concurrently on
the event loop; it ignores proxy variables and does not follow redirects, so a delivery goes
exactly where the rules say. aiohttp rather than httpx (which the command line uses) or urllib in
threads: per request it took 56 µs of CPU here, urllib 370 and httpx's async client 1,530
(bench/README.md, seventh session). Email uses the standard library's SMTP client (with timeouts)
in threads of the sender's own, as many as deliveries may be in flight, so that every claimed
email starts at once: one waiting for a thread of a small shared pool could outlive its lease.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol
from uuid import UUID

import aiohttp

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

    async def close(self) -> None:
        """Let go of what the sender keeps between deliveries (open connections)."""


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


class WebhookSender:
    """POSTs the notification as JSON (or in Slack's incoming-webhook format), signed with HMAC-SHA256."""

    def __init__(self, urls: dict[str, str], secret: bytes, timeout: float) -> None:
        self._urls, self._secret, self._timeout = urls, secret, timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        """The session, made on first use in the running event loop (its connections belong to it)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout), trust_env=False,
                headers={"User-Agent": "accord-notifier"})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

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
        headers = {"Content-Type": "application/json",
                   SIGNATURE_HEADER: sign_body(self._secret, body, timestamp), TIMESTAMP_HEADER: str(timestamp),
                   "X-Accord-Notification-Id": str(delivery.notification_id)}
        try:
            async with self._client().post(url, data=body, headers=headers, allow_redirects=False) as response:
                await response.read()  # the whole reply, so that the connection serves the next delivery
        except (aiohttp.ClientError, TimeoutError) as error:  # refused, reset, timed out, not HTTP
            raise DeliveryError(f"webhook {delivery.target!r}: {type(error).__name__}: {error}") from None
        if not 200 <= response.status < 300:  # a redirect too: a delivery goes where the rules say or nowhere
            raise DeliveryError(f"webhook {delivery.target!r} answered HTTP {response.status}")


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
    def __init__(self, config: SmtpConfig, workers: int) -> None:
        self._config, self._workers = config, workers
        self._threads: ThreadPoolExecutor | None = None

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

    async def close(self) -> None:
        """Let the threads go (each delivery opens its own SMTP session; none is kept)."""
        if self._threads is not None:
            threads, self._threads = self._threads, None
            threads.shutdown(wait=False)

    async def send(self, delivery: Delivery) -> None:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="accord-smtp")
        try:
            await asyncio.get_running_loop().run_in_executor(self._threads, self._send, self.compose(delivery))
        except (smtplib.SMTPException, OSError) as error:
            raise DeliveryError(f"SMTP {self._config.host}:{self._config.port}: {type(error).__name__}: {error}") \
                from None
