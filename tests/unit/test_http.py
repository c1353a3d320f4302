"""The HTTP shell every service shares, without servers: correlation ids and the NUL refusal at the edge."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import structlog
from fastapi import APIRouter, FastAPI, HTTPException, Request
from starlette.types import Message
from structlog.typing import EventDict

from accord_runtime import http
from accord_runtime.http import CORRELATION_HEADER, create_app

router = APIRouter()


@router.post("/echo")
async def echo(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    return {"body": body, "correlation_id": str(request.state.correlation_id),
            "logged_with": structlog.contextvars.get_contextvars().get("correlation_id")}


@router.get("/missing")
async def missing() -> None:
    raise HTTPException(404, "no such thing")


class Refused(Exception):
    pass


@router.put("/refused")
async def refused() -> None:
    raise Refused("not now")


def _app() -> FastAPI:
    return create_app(title="test", routers=[router], readiness={}, error_statuses={Refused: 409})


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[EventDict]]:
    """What the HTTP shell logs at INFO and above, whatever structlog's configuration (restored after)."""
    capture, previous = structlog.testing.LogCapture(), structlog.get_config()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture],
                        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
                        cache_logger_on_first_use=False)
    monkeypatch.setattr(http, "log", structlog.get_logger(http.__name__))  # not one cached before
    yield capture.entries
    structlog.configure(**previous)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_the_callers_correlation_id_is_used_echoed_and_logged(client: httpx.AsyncClient,
                                                                    logs: list[EventDict]) -> None:
    mine = uuid.uuid4()
    response = await client.post("/echo", json={"a": 1}, headers={CORRELATION_HEADER: mine.hex.upper()})
    assert response.status_code == 200
    assert response.headers[CORRELATION_HEADER] == str(mine)  # canonical form
    assert response.json() == {"body": {"a": 1}, "correlation_id": str(mine), "logged_with": str(mine)}
    [line] = [entry for entry in logs if entry["event"] == "http request"]
    assert line["correlation_id"] == str(mine)
    assert (line["method"], line["path"], line["status"], line["log_level"]) == ("POST", "/echo", 200, "info")
    assert line["duration_ms"] >= 0
    assert "correlation_id" not in structlog.contextvars.get_contextvars()  # unbound after the request


@pytest.mark.parametrize("header", [None, "", "not-a-uuid"])
async def test_without_a_valid_correlation_id_each_request_gets_a_new_one(
        client: httpx.AsyncClient, header: str | None) -> None:
    headers = {} if header is None else {CORRELATION_HEADER: header}
    first = await client.post("/echo", json={}, headers=headers)
    second = await client.post("/echo", json={}, headers=headers)
    ids = [uuid.UUID(r.headers[CORRELATION_HEADER]) for r in (first, second)]
    assert ids[0] != ids[1]
    assert [r.json()["correlation_id"] for r in (first, second)] == [str(i) for i in ids]


async def test_refusals_and_errors_carry_the_correlation_id_too(client: httpx.AsyncClient) -> None:
    mine = str(uuid.uuid4())
    for response in (await client.get("/missing", headers={CORRELATION_HEADER: mine}),
                     await client.put("/refused", headers={CORRELATION_HEADER: mine}),
                     await client.post("/echo", content=b"{", headers={CORRELATION_HEADER: mine}),
                     await client.get("/healthz", headers={CORRELATION_HEADER: mine})):
        assert response.headers[CORRELATION_HEADER] == mine, response.text
        assert response.headers.get_list(CORRELATION_HEADER) == [mine]
    assert (await client.put("/refused")).json() == {"detail": "not now"}


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
async def test_a_nul_character_in_a_body_is_refused_with_422(client: httpx.AsyncClient, logs: list[EventDict],
                                                             method: str) -> None:
    mine = str(uuid.uuid4())
    response = await client.request(method, "/echo", content=b'{"a": "x\\u0000y"}',
                                    headers={"Content-Type": "application/json", CORRELATION_HEADER: mine})
    assert response.status_code == 422
    assert response.json() == {"detail": [{"loc": ["body"], "type": "value_error",
                                           "msg": "text must not contain NUL (\\u0000) characters"}]}
    assert response.headers[CORRELATION_HEADER] == mine
    assert [entry["status"] for entry in logs if entry["event"] == "http request"] == [422]


@pytest.mark.parametrize("escape", ["\\U0000", "\\\\\\u0000"])  # upper case; an escaped backslash, then one
async def test_every_spelling_of_a_nul_escape_is_refused(client: httpx.AsyncClient, escape: str) -> None:
    response = await client.post("/echo", content=('{"a": "' + escape + '"}').encode(),
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 422


async def test_an_escaped_backslash_before_u0000_is_text_not_nul(client: httpx.AsyncClient) -> None:
    body = {"a": "C:\\u0000"}  # a backslash, then the letters u0000
    response = await client.post("/echo", json=body)
    assert response.status_code == 200 and response.json()["body"] == body


async def test_a_body_sent_in_chunks_reaches_the_route_whole() -> None:
    """The NUL check reads the body first; the route still gets all of it (or a NUL split across chunks)."""
    app = _app()

    async def call(chunks: list[bytes]) -> tuple[int, bytes]:
        messages: list[Message] = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                                   for i, c in enumerate(chunks)]
        sent: list[Message] = []

        async def receive() -> Message:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/echo", "raw_path": b"/echo", "root_path": "", "query_string": b"",
                 "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
                 "client": ("127.0.0.1", 1), "server": ("test", 80)}
        await app(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    status, body = await call([b'{"text": "', b"a" * 70_000, b'"}'])
    assert status == 200 and json.loads(body)["body"] == {"text": "a" * 70_000}
    status, _ = await call([b'{"text": "a\\u00', b'00"}'])
    assert status == 422


async def test_reads_are_not_checked(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", params={"q": "\\u0000"})
    assert response.status_code == 200
