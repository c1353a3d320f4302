"""The HTTP shell every service shares: health, readiness, metrics and domain-error mapping."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.datastructures import URL, Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from accord_runtime.postgres import TRANSIENT_ERRORS

log = structlog.get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]


def create_app(
    *,
    title: str,
    routers: Sequence[APIRouter],
    readiness: Mapping[str, ReadinessCheck],
    error_statuses: Mapping[type[Exception], int],
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """A FastAPI app with `/healthz`, `/readyz`, `/metrics`, and the service's routers.

    `error_statuses` maps domain exceptions to HTTP statuses; the response carries the
    exception's message as ``detail``, so a refused command always says why.
    """
    app = FastAPI(title=title, lifespan=lifespan)
    app.add_middleware(_RefuseNul)
    app.add_middleware(_Correlate)  # added last, so outermost: NUL refusals carry the id and are logged

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={503: {"description": "A dependency is unreachable."}})
    async def readyz() -> JSONResponse:
        """The service can do its work: database and broker reachable."""
        results = {}
        for name, check in readiness.items():
            try:
                results[name] = await check()
            except Exception as error:  # noqa: BLE001 - any failure of a probe means "not ready"
                log.warning("readiness check failed", check=name, error=f"{type(error).__name__}: {error}")
                results[name] = False
        ready = all(results.values())
        return JSONResponse({"ready": ready, "checks": results}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    for exception_type, status_code in error_statuses.items():
        app.add_exception_handler(exception_type, _handler(status_code))
    for transient in TRANSIENT_ERRORS:  # the database went away mid-request: nothing was committed
        app.add_exception_handler(transient, _unavailable)
    for unstorable in (asyncpg.UntranslatableCharacterError, asyncpg.CharacterNotInRepertoireError):
        app.add_exception_handler(unstorable, _handler(422, _NUL_REFUSAL))
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    for router in routers:
        app.include_router(router, responses=ERROR_RESPONSES)
    return app


CORRELATION_HEADER = "X-Correlation-ID"


# A JSON string escape of U+0000 (not preceded by an escaped backslash): PostgreSQL stores no NUL.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000", re.IGNORECASE)
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
_NUL_REFUSAL = "text must not contain NUL (\\u0000) characters"


class _RefuseNul:
    """Refuse a JSON body carrying a NUL character at the edge (422), before any state check.

    A pure ASGI middleware: it reads the body once and hands the route the same bytes.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _WITH_BODY:
            await self.app(scope, receive, send)
            return
        body = await Request(scope, receive).body()
        if _NUL_ESCAPE.search(body):
            await _refusal(422, _NUL_REFUSAL)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: the disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class _Correlate:
    """Give every request a correlation id (the caller's, if a UUID) and log it with the outcome.

    Commands use it as their events' ``correlationid``, so a request, its events, and every
    reaction to them down the bus share one id in the logs. A pure ASGI middleware: the id is in
    ``request.state.correlation_id`` and structlog's context variables while the route runs, and
    in the response's ``X-Correlation-ID`` header.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            correlation_id = UUID(Headers(scope=scope).get(CORRELATION_HEADER, ""))
        except ValueError:
            correlation_id = uuid4()
        scope.setdefault("state", {})["correlation_id"] = correlation_id
        echoed = str(correlation_id)
        started = time.perf_counter()

        async def send_correlated(message: Message) -> None:
            if message["type"] == "http.response.start":
                log.info("http request", method=scope["method"], path=URL(scope=scope).path,
                         status=message["status"], duration_ms=round((time.perf_counter() - started) * 1000, 2))
                MutableHeaders(scope=message)[CORRELATION_HEADER] = echoed
            await send(message)

        with structlog.contextvars.bound_contextvars(correlation_id=echoed):
            await self.app(scope, receive, send_correlated)


async def _unavailable(_: Request, error: Exception) -> JSONResponse:
    log.warning("database unavailable during a request", error=f"{type(error).__name__}: {error}")
    return JSONResponse({"detail": "the database is unavailable right now; retry shortly"},
                        status_code=503, headers={"Retry-After": "1"})


class ErrorDetail(BaseModel):
    detail: str = Field(description="Why the request was refused.")


#: What every route of a service may answer besides its own 2xx and FastAPI's 422.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorDetail, "description": "No valid bearer token."},
    403: {"model": ErrorDetail, "description": "Not a party to this agreement, or not the side that may do this."},
    404: {"model": ErrorDetail, "description": "No such agreement or part of it."},
    409: {"model": ErrorDetail, "description": "Not allowed in the current state; the detail says why."},
    503: {"model": ErrorDetail, "description": "The database is unavailable; retry shortly."},
}


def _refusal(status_code: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A refusal body: 422s take FastAPI's validation-error shape, so every 422 matches one schema."""
    if status_code == 422:
        body: dict[str, Any] = {"detail": [{"loc": ["body"], "msg": message, "type": "value_error"}]}
    else:
        body = {"detail": message}
    return JSONResponse(body, status_code=status_code, headers=dict(headers or {}))


def _handler(status_code: int, message: str | None = None) -> Callable[[Request, Exception], Any]:
    async def handle(_: Request, error: Exception) -> JSONResponse:
        return _refusal(status_code, message or str(error))

    return handle


async def _http_exception(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == 422 and isinstance(error.detail, str):
        return _refusal(422, error.detail, error.headers)
    return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=dict(error.headers or {}))
