"""One handler per command: load the aggregate, decide, append — retried on a concurrent change."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar
from uuid import UUID, uuid4

import asyncpg

from accord_runtime.eventstore import ConcurrencyError, EventStore, Metadata
from accord_runtime.identity import hash_token, new_token
from contracts import REGISTRY
from contracts.agreements import ApiTokenIssued, OrganisationRegistered, UserRegistered
from services.agreements.commands import (
    AcceptAgreement,
    AgreementState,
    DraftAgreement,
    IssueApiToken,
    ProposeAgreement,
    RegisterOrganisation,
    RegisterUser,
)
from services.agreements.domain import Agreement, InvalidCommand, stream_id

T = TypeVar("T")
MAX_ATTEMPTS = 5


class NotFound(LookupError):
    """The command names something that does not exist (HTTP 404)."""


@dataclass(frozen=True)
class Context:
    """What handlers need: the event store and the pool for read-model look-ups."""

    store: EventStore
    pool: asyncpg.Pool


async def _retrying(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run a load-decide-append attempt again if another writer moved the stream meanwhile."""
    for _ in range(MAX_ATTEMPTS - 1):
        try:
            return await attempt()
        except ConcurrencyError:
            continue
    return await attempt()


async def load_agreement(store: EventStore, agreement_id: UUID) -> Agreement:
    envelopes = await store.read_stream(stream_id(agreement_id))
    return Agreement.replay(agreement_id, [REGISTRY.decode(e.type, e.data) for e in envelopes])


def _state(agreement: Agreement, version: int) -> AgreementState:
    return AgreementState(agreement_id=agreement.agreement_id, status=agreement.status, version=version,
                          agreement_version=agreement.agreement_version,
                          accepted_by=sorted(agreement.accepted_by))


async def register_organisation(ctx: Context, cmd: RegisterOrganisation, meta: Metadata) -> UUID:
    organisation_id = uuid4()
    await ctx.store.append(f"organisation-{organisation_id}", 0, [
        OrganisationRegistered(organisation_id=organisation_id, display_name=cmd.display_name)], meta)
    return organisation_id


async def register_user(ctx: Context, cmd: RegisterUser, meta: Metadata) -> UUID:
    if not await ctx.store.read_stream(f"organisation-{cmd.organisation_id}"):
        raise NotFound(f"organisation {cmd.organisation_id} does not exist")
    user_id = uuid4()
    await ctx.store.append(f"user-{user_id}", 0, [UserRegistered(
        user_id=user_id, organisation_id=cmd.organisation_id, display_name=cmd.display_name,
        email=cmd.email)], meta)
    return user_id


async def issue_api_token(ctx: Context, cmd: IssueApiToken, meta: Metadata) -> str:
    """Issue a token and return it in clear: the only time it is ever seen."""
    token = new_token()

    async def attempt() -> None:
        history = await ctx.store.read_stream(f"user-{cmd.user_id}")
        if not history:
            raise NotFound(f"user {cmd.user_id} does not exist")
        user = REGISTRY.decode(history[0].type, history[0].data)
        assert isinstance(user, UserRegistered)
        await ctx.store.append(f"user-{cmd.user_id}", len(history), [ApiTokenIssued(
            token_id=uuid4(), user_id=cmd.user_id, organisation_id=user.organisation_id,
            token_hash=hash_token(token), label=cmd.label)], meta)

    await _retrying(attempt)
    return token


async def draft_agreement(
    ctx: Context, cmd: DraftAgreement, meta: Metadata, organisation_id: UUID
) -> AgreementState:
    known = await ctx.pool.fetchval(
        "SELECT count(*) FROM organisations WHERE organisation_id = ANY($1::uuid[])",
        [cmd.client_organisation_id, cmd.provider_organisation_id])
    if known != len({cmd.client_organisation_id, cmd.provider_organisation_id}):
        raise InvalidCommand("the client and the provider must both be registered organisations")
    agreement = Agreement(uuid4())
    agreement.draft(title=cmd.title, summary=cmd.summary, client_organisation_id=cmd.client_organisation_id,
                    provider_organisation_id=cmd.provider_organisation_id, by_organisation_id=organisation_id)
    result = await ctx.store.append(stream_id(agreement.agreement_id), 0, agreement.pending, meta)
    return _state(agreement, result.version)


async def _change_agreement(ctx: Context, agreement_id: UUID, meta: Metadata,
                            decide: Callable[[Agreement], None]) -> AgreementState:
    async def attempt() -> AgreementState:
        agreement = await load_agreement(ctx.store, agreement_id)
        if agreement.status == "new":
            raise NotFound(f"agreement {agreement_id} does not exist")
        decide(agreement)
        result = await ctx.store.append(stream_id(agreement_id), agreement.version, agreement.pending, meta)
        return _state(agreement, result.version)

    return await _retrying(attempt)


async def propose_agreement(
    ctx: Context, cmd: ProposeAgreement, meta: Metadata, organisation_id: UUID
) -> AgreementState:
    return await _change_agreement(ctx, cmd.agreement_id, meta, lambda a: a.propose(organisation_id))


async def accept_agreement(
    ctx: Context, cmd: AcceptAgreement, meta: Metadata, organisation_id: UUID
) -> AgreementState:
    return await _change_agreement(ctx, cmd.agreement_id, meta, lambda a: a.accept(organisation_id))
