"""The HTTP shell every service shares: health, readiness, metrics and domain-error mapping."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any
from uuid import UUID, uuid4

import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

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
    app.middleware("http")(_correlate)

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
    for router in routers:
        app.include_router(router)
    return app


CORRELATION_HEADER = "X-Correlation-ID"


async def _correlate(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Give every request a correlation id (the caller's, if a UUID) and log it with the outcome.

    Commands use it as their events' ``correlationid``, so a request, its events, and every
    reaction to them down the bus share one id in the logs.
    """
    try:
        correlation_id = UUID(request.headers.get(CORRELATION_HEADER, ""))
    except ValueError:
        correlation_id = uuid4()
    request.state.correlation_id = correlation_id
    started = time.perf_counter()
    with structlog.contextvars.bound_contextvars(correlation_id=str(correlation_id)):
        response = await call_next(request)
        log.info("http request", method=request.method, path=request.url.path,
                 status=response.status_code, duration_ms=round((time.perf_counter() - started) * 1000, 2))
    response.headers[CORRELATION_HEADER] = str(correlation_id)
    return response


async def _unavailable(_: Request, error: Exception) -> JSONResponse:
    log.warning("database unavailable during a request", error=f"{type(error).__name__}: {error}")
    return JSONResponse({"detail": "the database is unavailable right now; retry shortly"},
                        status_code=503, headers={"Retry-After": "1"})


def _handler(status_code: int) -> Callable[[Request, Exception], Any]:
    async def handle(_: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=status_code)

    return handle
