"""Who a token identifies, remembered by a running service (`Principals`), against real PostgreSQL:
revocations projected in any process are refused at once, and nothing is remembered unless the
service hears them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from accord_runtime.doorbell import Doorbell
from accord_runtime.eventstore import EventStore, Metadata
from accord_runtime.identity import (
    REVOCATION,
    IdentityProjection,
    Principal,
    Principals,
    hash_token,
    new_token,
)
from accord_runtime.postgres import create_pool
from accord_runtime.projections import ProjectionRunner
from contracts.agreements import ApiTokenIssued, ApiTokenRevoked
from tests.support import eventually

pytestmark = pytest.mark.servers

OPERATOR = Metadata.new("operator")


class Identity:
    """Tokens issued and revoked the way the agreements service does: events, then its projection."""

    def __init__(self, store: EventStore, pool: asyncpg.Pool) -> None:
        self.store = store
        self.runner = ProjectionRunner(store, pool, [IdentityProjection()], service="test")

    async def issue(self) -> tuple[str, Principal]:
        token, principal = new_token(), Principal(uuid.uuid4(), uuid.uuid4())
        await self.store.append(f"token-{hash_token(token)}", 0, [ApiTokenIssued(
            token_id=uuid.uuid5(uuid.NAMESPACE_OID, token), user_id=principal.user_id,
            organisation_id=principal.organisation_id, token_hash=hash_token(token))], OPERATOR)
        await self.runner.catch_up()
        return token, principal

    async def revoke(self, token: str, principal: Principal) -> None:
        await self.store.append(f"token-{hash_token(token)}", 1, [ApiTokenRevoked(
            token_id=uuid.uuid5(uuid.NAMESPACE_OID, token), user_id=principal.user_id)], OPERATOR)
        await self.runner.catch_up()


@pytest.fixture
async def doorbell(database_url: str, schema: str, pool: asyncpg.Pool) -> AsyncIterator[Doorbell]:
    bell = Doorbell(database_url, schema)
    await bell.start()
    yield bell
    await bell.stop()


@pytest.fixture
async def operator(database_url: str, schema: str, pool: asyncpg.Pool) -> AsyncIterator[Identity]:
    """Another process (an operator command): a pool and a projection runner of its own."""
    other = await create_pool(database_url, schema, min_size=1, max_size=2)
    yield Identity(EventStore(other, source="/accord/test"), other)
    await other.close()


async def test_a_caller_is_looked_up_once_while_the_doorbell_listens(
        pool: asyncpg.Pool, doorbell: Doorbell, operator: Identity) -> None:
    principals = Principals(pool, doorbell)
    token, principal = await operator.issue()
    assert await principals.of(token) == principal
    await pool.execute("DELETE FROM api_tokens")  # behind the projection's back: nothing announced
    assert await principals.of(token) == principal  # remembered
    principals.forget()
    assert await principals.of(token) is None


async def test_a_revocation_projected_in_another_process_is_refused_at_once(
        pool: asyncpg.Pool, doorbell: Doorbell, operator: Identity) -> None:
    principals = Principals(pool, doorbell)
    token, principal = await operator.issue()
    other_token, other = await operator.issue()
    assert await principals.of(token) == principal and await principals.of(other_token) == other
    await operator.revoke(token, principal)
    # the projection's NOTIFY reaches the doorbell as its transaction commits
    await eventually(lambda: _refused(principals, token), timeout=2)
    assert await principals.of(other_token) == other
    assert await pool.fetchval("SELECT revoked FROM api_tokens WHERE token_hash = $1", hash_token(token))


async def test_a_rebuild_is_announced(doorbell: Doorbell, operator: Identity) -> None:
    """A rebuild clears the tokens (and replays them): callers remembered before are forgotten."""
    announced = asyncio.Event()
    doorbell.watch(REVOCATION, announced.set)
    await operator.issue()
    await operator.runner.rebuild()
    await asyncio.wait_for(announced.wait(), 2)


async def test_nothing_is_remembered_while_the_doorbell_does_not_listen(
        pool: asyncpg.Pool, doorbell: Doorbell, operator: Identity) -> None:
    principals = Principals(pool, doorbell)
    token, principal = await operator.issue()
    await doorbell.stop()  # as while it reconnects: revocations would not be heard
    assert doorbell.listening is None
    assert await principals.of(token) == principal
    await pool.execute("DELETE FROM api_tokens")
    assert await principals.of(token) is None


async def test_a_reconnection_forgets_every_caller(
        pool: asyncpg.Pool, doorbell: Doorbell, operator: Identity) -> None:
    principals = Principals(pool, doorbell)
    token, principal = await operator.issue()
    assert await principals.of(token) == principal
    before = doorbell.listening
    await doorbell.stop()
    await doorbell.start()  # revocations announced meanwhile were not heard
    assert doorbell.listening not in (None, before)
    await pool.execute("DELETE FROM api_tokens")
    assert await principals.of(token) is None


async def test_unknown_tokens_are_not_remembered(pool: asyncpg.Pool, doorbell: Doorbell, operator: Identity) -> None:
    principals = Principals(pool, doorbell)
    token = new_token()
    assert await principals.of(token) is None
    issued, principal = await operator.issue()
    assert await principals.of(issued) == principal  # a token works as soon as it is issued


async def test_a_revocation_announced_during_a_look_up_is_not_outrun(pool: asyncpg.Pool, doorbell: Doorbell,
                                                                     operator: Identity) -> None:
    """A look-up that read the token before the revocation committed must not be remembered."""
    token, principal = await operator.issue()

    class RevokedMeanwhile:
        """The pool, but the revocation's announcement arrives while the look-up is under way."""

        async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
            row = await pool.fetchrow(query, *args)
            principals.forget()
            return row

    principals = Principals(RevokedMeanwhile(), doorbell)  # type: ignore[arg-type]
    assert await principals.of(token) == principal  # what the read model said then
    await pool.execute("DELETE FROM api_tokens")
    assert await principals.of(token) is None  # but it was not remembered


async def _refused(principals: Principals, token: str) -> bool:
    return await principals.of(token) is None
