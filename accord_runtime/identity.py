"""API tokens and the callers they identify.

A token is shown once, when issued; only its SHA-256 is stored or published (``ApiTokenIssued``
carries the hash). 256 random bits make a salt or a slow hash unnecessary: the hash cannot be
reversed or guessed, and a lookup by hash stays one indexed query.

A running service remembers the callers it looked up (`Principals`), so that a request costs no
look-up, and forgets them all whenever a revocation is projected: the projection announces it
(a ``NOTIFY`` sent when its transaction commits) to every process of the schema.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Annotated
from uuid import UUID

import asyncpg
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from accord_runtime.doorbell import Doorbell, announce
from contracts import REGISTRY, CloudEvent
from contracts.agreements import ApiTokenIssued, ApiTokenRevoked, OrganisationRegistered, UserRegistered

TOKEN_PREFIX = "acc_"  # noqa: S105 - a prefix, not a secret


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a user acting for an organisation."""

    user_id: UUID
    organisation_id: UUID

    @property
    def actor(self) -> str:
        return f"user:{self.user_id}"


class IdentityProjection:
    """Organisations, users and token hashes, as every service needs them to authenticate."""

    name = "identity"
    handles = frozenset(m.event_type() for m in (OrganisationRegistered, UserRegistered,
                                                  ApiTokenIssued, ApiTokenRevoked))

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        match REGISTRY.decode(event.type, event.data):
            case OrganisationRegistered() as e:
                await conn.execute(
                    "INSERT INTO organisations VALUES ($1, $2) ON CONFLICT (organisation_id) DO UPDATE"
                    " SET display_name = EXCLUDED.display_name", e.organisation_id, e.display_name)
            case UserRegistered() as e:
                await conn.execute(
                    "INSERT INTO users VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO UPDATE"
                    " SET display_name = EXCLUDED.display_name, email = EXCLUDED.email",
                    e.user_id, e.organisation_id, e.display_name, e.email)
            case ApiTokenIssued() as e:
                await conn.execute(
                    "INSERT INTO api_tokens (token_hash, token_id, user_id, organisation_id)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    e.token_hash, e.token_id, e.user_id, e.organisation_id)
            case ApiTokenRevoked() as e:
                await conn.execute("UPDATE api_tokens SET revoked = true WHERE token_id = $1", e.token_id)
                await announce(conn, REVOCATION)

    async def clear(self, conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE organisations, users, api_tokens")
        await announce(conn, REVOCATION)


#: What the identity projection announces when a token stops working (see `Principals`).
REVOCATION = "identity.revoked"


async def principal_for(pool: asyncpg.Pool, token: str) -> Principal | None:
    """The caller `token` identifies, from the read model; None if unknown or revoked."""
    return await _principal_of(pool, hash_token(token))


async def _principal_of(pool: asyncpg.Pool, token_hash: str) -> Principal | None:
    row = await pool.fetchrow(
        "SELECT user_id, organisation_id FROM api_tokens WHERE token_hash = $1 AND NOT revoked", token_hash)
    return Principal(row["user_id"], row["organisation_id"]) if row else None


class Principals:
    """`principal_for`, remembered for as long as no token can have been revoked meanwhile.

    A caller is remembered only while the doorbell listens on the schema's channel, and all are
    forgotten when the identity projection announces a revocation (or a rebuild): its ``NOTIFY``
    reaches the doorbell as the projection's transaction commits, so a revoked token is refused
    from then on, as without memory — give or take the notification's trip from Postgres to this
    process, well under a millisecond on one host. While the doorbell is not listening (it
    reconnects), every request looks its token up; a reconnection forgets every caller, since
    announcements sent meanwhile were lost (a connection that dies without a word is noticed by
    the doorbell's keepalive). Unknown tokens are never remembered: a token works as soon as it
    is issued.
    """

    def __init__(self, pool: asyncpg.Pool, doorbell: Doorbell, *, max_size: int = 10_000) -> None:
        self._pool, self._doorbell, self._max_size = pool, doorbell, max_size
        self._known: dict[str, tuple[Principal, tuple[int, int]]] = {}  # token hash → principal, era
        self._revocations = 0
        doorbell.watch(REVOCATION, self.forget)

    def forget(self) -> None:
        self._revocations += 1
        self._known.clear()

    def _era(self) -> tuple[int, int] | None:
        """What must not change while a caller is remembered; None when nothing may be."""
        listening = self._doorbell.listening
        return None if listening is None else (listening, self._revocations)

    async def of(self, token: str) -> Principal | None:
        """The caller `token` identifies; None if unknown or revoked."""
        token_hash = hash_token(token)
        era = self._era()
        known = self._known.get(token_hash)
        if known is not None and era is not None and known[1] == era:
            return known[0]
        principal = await _principal_of(self._pool, token_hash)
        if principal is not None and era is not None:
            # with the era the look-up started in: a revocation announced meanwhile outdates it
            if len(self._known) >= self._max_size:
                self._known.clear()
            self._known[token_hash] = (principal, era)
        return principal


_bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer acc_…`")


async def authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """FastAPI dependency: the caller, or 401.

    Uses the app's `Principals` at ``app.state.principals`` (a running service's), else looks the
    token up in the app's pool at ``app.state.pool``.
    """
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token", headers=challenge)
    principals: Principals | None = getattr(request.app.state, "principals", None)
    token = credentials.credentials
    principal = await (principals.of(token) if principals else principal_for(request.app.state.pool, token))
    if principal is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or revoked token", headers=challenge)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(authenticated)]
