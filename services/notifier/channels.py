"""Delivery channels: a signed JSON webhook, a Slack-compatible incoming webhook, and email over SMTP.

Each sender takes one claimed delivery and either returns (delivered) or raises `DeliveryError`.
Sending never happens inside a database transaction: the worker claims rows, commits, sends, and
records the outcome in a new transaction. HTTP and SMTP use the standard library in a worker thread
(with timeouts), which keeps the service free of client dependencies; HTTP ignores proxy variables
and does not follow redirects, so a delivery goes exactly where the rules say.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol
from uuid import UUID

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


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx is an error, not a new destination


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - http(s) only
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, OSError) as error:
        raise DeliveryError(f"{type(error).__name__}: {getattr(error, 'reason', error)}") from None


class WebhookSender:
    """POSTs the notification as JSON (or in Slack's incoming-webhook format), signed with HMAC-SHA256."""

    def __init__(self, urls: dict[str, str], secret: bytes, timeout: float) -> None:
        self._urls, self._secret, self._timeout = urls, secret, timeout

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
        status = await asyncio.to_thread(_post, url, body, headers, self._timeout)
        if not 200 <= status < 300:
            raise DeliveryError(f"webhook {delivery.target!r} answered HTTP {status}")


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
