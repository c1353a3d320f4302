"""The senders against real servers on loopback. Webhooks: a signed POST, one connection kept for
the next deliveries, a batch in flight at once, redirects and proxy variables not followed,
failures as `DeliveryError`. Email: as many sessions at once as deliveries may be in flight."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from services.notifier.channels import Delivery, DeliveryError, EmailSender, SmtpConfig, WebhookSender
from services.notifier.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_body
from tests.support import HttpReceiver

SECRET = b"webhook-test-secret"


def delivery(target: str = "ops") -> Delivery:
    return Delivery(notification_id=uuid.uuid4(), escalation_id=uuid.uuid4(), matter="query:q:first_response",
                    agreement_id=uuid.uuid4(), level=1, round=0, channel="webhook", target=target, responsible=[],
                    message={"subject": "Query overdue", "level": 1, "round": 0, "rule": "overdue",
                             "matter": "query:q:first_response", "agreement_id": str(uuid.uuid4())},
                    attempts=1, created_at=datetime.now(UTC))


@contextlib.asynccontextmanager
async def sender_for(urls: dict[str, str], timeout: float = 2.0) -> AsyncIterator[WebhookSender]:
    sender = WebhookSender(urls, SECRET, timeout=timeout)
    try:
        yield sender
    finally:
        await sender.close()


async def test_deliveries_are_signed_posts_on_one_kept_connection() -> None:
    receiver = HttpReceiver()
    async with receiver.serving() as base, sender_for({"ops": f"{base}/hooks/ops"}) as sender:
        sent = [delivery() for _ in range(3)]
        for one in sent:
            await sender.send(one)
    assert receiver.connections == 1 and len(receiver.received) == 3
    for one, request in zip(sent, receiver.received, strict=True):
        headers, body = request.headers, request.body
        assert request.line == "POST /hooks/ops HTTP/1.1"
        assert headers["x-accord-notification-id"] == str(one.notification_id)
        assert headers["user-agent"] == "accord-notifier" and headers["content-type"] == "application/json"
        assert verify_body(SECRET, body, int(headers[TIMESTAMP_HEADER.lower()]), headers[SIGNATURE_HEADER.lower()])
        document: dict[str, Any] = json.loads(body)
        assert document["notification_id"] == str(one.notification_id) and document["subject"] == "Query overdue"


async def test_a_batch_is_sent_concurrently_and_the_sender_reopens_after_close() -> None:
    receiver = HttpReceiver(hold_until=20)  # answers once all 20 are in flight at the same time
    async with receiver.serving() as base, sender_for({"ops": f"{base}/hooks/ops"}) as sender:
        await asyncio.gather(*(sender.send(delivery()) for _ in range(20)))
        assert len(receiver.received) == 20 and receiver.connections == 20
        await sender.close()
        await sender.send(delivery())  # a worker started again sends again
    assert len(receiver.received) == 21


async def test_a_redirect_is_a_failure_and_is_not_followed() -> None:
    elsewhere = HttpReceiver()
    async with elsewhere.serving() as other:
        receiver = HttpReceiver(status=302, location=f"{other}/stolen")
        async with receiver.serving() as base, sender_for({"ops": f"{base}/hooks/ops"}) as sender:
            with pytest.raises(DeliveryError, match="webhook 'ops' answered HTTP 302"):
                await sender.send(delivery())
    assert len(receiver.received) == 1 and elsewhere.received == []


async def test_proxy_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = HttpReceiver()
    async with proxy.serving() as proxy_url, HttpReceiver().serving() as base:
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with sender_for({"ops": f"{base}/hooks/ops"}) as sender:
            await sender.send(delivery())
    assert proxy.received == []


async def test_failures_are_delivery_errors_that_name_the_cause() -> None:
    with socket.socket() as closed:  # a port that nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    failing = HttpReceiver(status=503)
    async with failing.serving() as base, sender_for(
            {"down": f"http://127.0.0.1:{port}/hooks", "busy": f"{base}/hooks"}) as sender:
        with pytest.raises(DeliveryError, match="webhook 'down': ClientConnectorError"):
            await sender.send(delivery("down"))
        with pytest.raises(DeliveryError, match="webhook 'busy' answered HTTP 503"):
            await sender.send(delivery("busy"))
        with pytest.raises(DeliveryError, match="no webhook named 'unknown' in the rules"):
            await sender.send(delivery("unknown"))


async def test_a_receiver_that_does_not_answer_in_time_fails_the_delivery() -> None:
    silent = HttpReceiver(hold_until=2)  # never answers a lone request
    async with silent.serving() as base, sender_for({"slow": f"{base}/hooks"}, timeout=0.3) as sender:
        started = asyncio.get_running_loop().time()
        with pytest.raises(DeliveryError, match="webhook 'slow': TimeoutError"):
            await sender.send(delivery("slow"))
        assert asyncio.get_running_loop().time() - started < 2



class HeldMailbox:
    """An SMTP server's handler that answers no message before `expected` have arrived at once."""

    def __init__(self, expected: int) -> None:
        self.expected, self.received = expected, 0
        self._all: asyncio.Event | None = None

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:  # aiosmtpd's hook name
        self._all = self._all or asyncio.Event()  # made in the server's own event loop
        self.received += 1
        if self.received >= self.expected:
            self._all.set()
        async with asyncio.timeout(10):
            await self._all.wait()
        return "250 OK"


async def test_as_many_emails_go_at_once_as_deliveries_may_be_in_flight() -> None:
    mailbox = HeldMailbox(expected=12)  # more than a 2-core machine's default thread pool (6)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    sender = EmailSender(SmtpConfig("127.0.0.1", port, "accord@provider.test", timeout=5), workers=12)
    try:
        async with asyncio.timeout(8):
            await asyncio.gather(*(sender.send(delivery(f"p{n}@client.test")) for n in range(12)))
    finally:
        await sender.close()
        controller.stop()
    assert mailbox.received == 12
