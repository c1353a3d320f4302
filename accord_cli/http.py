"""The services' HTTP APIs, as the CLI calls them: base URLs from the environment, a bearer token, and
every failure turned into a message and an exit code (never a traceback, never the token)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx

from accord_cli.output import FAILED, UNREACHABLE, USAGE, detail_text, fail

#: Each service and its compose port; ``ACCORD_<SERVICE>_URL`` overrides the base URL.
SERVICES: dict[str, int] = {"agreements": 8001, "queries": 8002, "kpi": 8003, "notifier": 8004}


def base_url(service: str) -> str:
    return os.environ.get(f"ACCORD_{service.upper()}_URL", f"http://127.0.0.1:{SERVICES[service]}").rstrip("/")


@dataclass
class Api:
    """A client of the four services for one caller (its token), with one connection pool."""

    token: str | None
    timeout: float = 15.0

    def __post_init__(self) -> None:
        self._client = httpx.Client(timeout=self.timeout)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def with_token(self, token: str) -> Api:
        return Api(token, self.timeout)

    def response(self, service: str, method: str, path: str, *, body: Any = None,
                 params: dict[str, Any] | None = None, authenticated: bool = True) -> httpx.Response:
        """The raw response (any status); exit 3 if the service cannot be reached."""
        headers = {}
        if authenticated:
            if not self.token:
                fail("no API token: set ACCORD_TOKEN or pass --token", USAGE)
            headers["Authorization"] = f"Bearer {self.token}"
        url = f"{base_url(service)}{path}"
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            return self._client.request(method, url, json=body, params=query, headers=headers)
        except httpx.TransportError as error:
            fail(f"cannot reach the {service} service at {base_url(service)}: {error or type(error).__name__}",
                 UNREACHABLE)

    def call(self, service: str, method: str, path: str, *, body: Any = None,
             params: dict[str, Any] | None = None) -> Any:
        """The decoded JSON (or text) of a successful call; exit 1 with the service's detail otherwise."""
        response = self.response(service, method, path, body=body, params=params)
        if response.is_error:
            fail(refusal(service, response), FAILED)
        if "json" in response.headers.get("content-type", ""):
            return response.json()
        return response.text

    def reachable(self, service: str, path: str) -> dict[str, Any]:
        """An unauthenticated probe (``/readyz``): ``{"ready": bool, "detail": str}``, never exiting."""
        try:
            response = self._client.get(f"{base_url(service)}{path}")
        except httpx.TransportError as error:
            return {"ready": False, "detail": f"unreachable: {error or type(error).__name__}"}
        try:
            body = response.json()
        except ValueError:
            body = response.text
        checks = body.get("checks") if isinstance(body, dict) else None
        if isinstance(checks, dict):
            detail = ", ".join(f"{name} {'ok' if ok else 'FAILING'}" for name, ok in checks.items())
        else:
            detail = str(body)
        return {"ready": response.status_code == 200, "detail": detail}

    def get(self, service: str, path: str, **params: Any) -> Any:
        return self.call(service, "GET", path, params=params)

    def post(self, service: str, path: str, body: Any = None) -> Any:
        return self.call(service, "POST", path, body=body)

    def put(self, service: str, path: str, body: Any = None) -> Any:
        return self.call(service, "PUT", path, body=body)


def refusal(service: str, response: httpx.Response) -> str:
    """``<service>: 409 Conflict: <detail>`` from an error response."""
    try:
        detail: Any = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text.strip() or "(no detail)"
    return f"{service}: {response.status_code} {response.reason_phrase}: {detail_text(detail)}"
