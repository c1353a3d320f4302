"""API tokens and the callers they identify.

A token is shown once, when issued; only its SHA-256 is stored or published (``ApiTokenIssued``
carries the hash). 256 random bits make a salt or a slow hash unnecessary: the hash cannot be
reversed or guessed, and a lookup by hash stays one indexed query.
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

    async def clear(self, conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE organisations, users, api_tokens")


async def principal_for(pool: asyncpg.Pool, token: str) -> Principal | None:
    row = await pool.fetchrow(
        "SELECT user_id, organisation_id FROM api_tokens WHERE token_hash = $1 AND NOT revoked",
        hash_token(token),
    )
    return Principal(row["user_id"], row["organisation_id"]) if row else None


_bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer acc_…`")


async def authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """FastAPI dependency: the caller, or 401. Expects the app's pool at ``app.state.pool``."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token", headers=challenge)
    principal = await principal_for(request.app.state.pool, credentials.credentials)
    if principal is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or revoked token", headers=challenge)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(authenticated)]
