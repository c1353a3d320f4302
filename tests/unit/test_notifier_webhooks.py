"""Webhooks over kept-open connections, against a scripted HTTP/1.1 server on 127.0.0.1: connections are
reused while the server keeps them, a new one is opened when it closed or ended one, a failed or timed-out
exchange never leaves a connection in use, redirects are not followed, proxy variables are ignored, and
each request is signed."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from services.notifier.channels import Delivery, DeliveryError, HttpPoster, WebhookSender
from services.notifier.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_body
from tests.support import ScriptedHttpServer as Server
from tests.support import reply_ok

SECRET = b"test-webhook-secret"


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with Server().listening("/hooks/ops?v=1") as scripted:
        yield scripted


def delivery(n: int = 1) -> Delivery:
    return Delivery(notification_id=uuid.uuid4(), escalation_id=uuid.uuid4(), matter=f"query:{n}:first_response",
                    agreement_id=uuid.uuid4(), level=1, round=0, channel="webhook", target="ops", responsible=[],
                    message={"subject": f"level 1: {n}", "level": 1}, attempts=1, created_at=datetime.now(UTC))


async def test_webhooks_share_a_connection_while_the_server_keeps_it_and_each_is_signed(server: Server) -> None:
    sender = WebhookSender({"ops": server.url}, SECRET, timeout=2)
    sent = [delivery(n) for n in range(3)]
    for one in sent:
        await sender.send(one)
    await asyncio.gather(*(sender.send(delivery(n)) for n in range(3, 6)))  # concurrent: more connections
    await sender.close()

    assert [r.connection for r in server.requests[:3]] == [1, 1, 1]
    assert len(server.requests) == 6 and server.connections <= 3
    for request, one in zip(server.requests, sent, strict=False):
        assert request.headers["host"] == server.url.split("/")[2]
        assert request.headers["x-accord-notification-id"] == str(one.notification_id)
        assert verify_body(SECRET, request.body, int(request.headers[TIMESTAMP_HEADER.lower()]),
                           request.headers[SIGNATURE_HEADER.lower()])
        assert json.loads(request.body)["notification_id"] == str(one.notification_id)


async def test_a_connection_the_server_ends_or_closes_is_not_reused(server: Server) -> None:
    poster = HttpPoster(timeout=2)
    server.close_after = True  # answers without "Connection: close", then closes
    assert [await poster.post(server.url, b"{}", {}) for _ in range(3)] == [200, 200, 200]
    assert server.connections == 3
    server.close_after = False
    server.reply = lambda n: b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    assert [await poster.post(server.url, b"{}", {}) for _ in range(2)] == [200, 200]
    assert server.connections == 5
    await poster.close()


async def test_an_error_answer_is_a_failed_attempt_and_the_retry_goes_out_on_the_same_connection(
    server: Server,
) -> None:
    server.reply = lambda n: (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops" if n == 1
                              else reply_ok(n))
    sender = WebhookSender({"ops": server.url}, SECRET, timeout=2)
    one = delivery()
    with pytest.raises(DeliveryError, match="HTTP 500"):
        await sender.send(one)
    await sender.send(one)  # the worker's retry
    await sender.close()
    assert [r.connection for r in server.requests] == [1, 1]
    assert server.requests[0].body == server.requests[1].body


async def test_a_timed_out_or_cut_exchange_fails_and_the_next_request_gets_a_new_connection(server: Server) -> None:
    poster = HttpPoster(timeout=0.3)
    server.reply = lambda n: None if n == 1 else (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort" if n == 2
                                                  else reply_ok(n))
    with pytest.raises(DeliveryError, match="timed out"):
        await poster.post(server.url, b"{}", {})
    server.close_after = True
    with pytest.raises(DeliveryError):
        await poster.post(server.url, b"{}", {})  # the server closed after half the body
    server.close_after = False
    assert await poster.post(server.url, b"{}", {}) == 200
    assert [r.connection for r in server.requests] == [1, 2, 3]
    await poster.close()


async def test_redirects_are_not_followed_and_proxy_variables_are_ignored(
    server: Server, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")  # nothing listens there
    server.reply = lambda n: b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/\r\nContent-Length: 0\r\n\r\n"
    sender = WebhookSender({"ops": server.url}, SECRET, timeout=2)
    with pytest.raises(DeliveryError, match="HTTP 302"):
        await sender.send(delivery())
    await sender.close()
    assert len(server.requests) == 1


async def test_a_chunked_answer_is_read_and_a_long_one_ends_the_connection(server: Server) -> None:
    poster = HttpPoster(timeout=2)
    server.reply = lambda n: (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" if n == 1
                              else b"HTTP/1.1 202 Accepted\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100_000)
    assert await poster.post(server.url, b"{}", {}) == 200
    assert await poster.post(server.url, b"{}", {}) == 202  # the status counts; the rest is not read
    server.reply = reply_ok
    assert await poster.post(server.url, b"{}", {}) == 200
    assert [r.connection for r in server.requests] == [1, 1, 2]
    await poster.close()


async def test_an_unreachable_webhook_is_a_failed_attempt() -> None:
    with pytest.raises(DeliveryError, match=r"ConnectionRefused|OSError"):
        await HttpPoster(timeout=2).post("http://127.0.0.1:9/hooks", b"{}", {})
