"""One handler per command: load the aggregate, decide, append — retried on a concurrent change.

Commands on an agreement share `change_agreement`: the decision gets the aggregate and the
command's time; the append and any status-update timer it calls for commit in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar
from uuid import UUID, uuid4
from weakref import WeakKeyDictionary

from accord_runtime.eventstore import EventStore, Metadata, retry_on_conflict
from accord_runtime.identity import hash_token, new_token
from accord_runtime.postgres import transaction
from accord_runtime.service import Context as Context
from accord_runtime.service import NotFound as NotFound
from contracts import REGISTRY, EventData
from contracts.agreements import (
    AgreementActivated,
    AgreementAmended,
    AgreementRenewed,
    ApiTokenIssued,
    ApiTokenRevoked,
    OrganisationRegistered,
    UserRegistered,
)
from services.agreements.commands import (
    AcceptAgreement,
    AgreementState,
    DraftAgreement,
    IssueApiToken,
    ProposeAgreement,
    RegisterOrganisation,
    RegisterUser,
    RevokeApiToken,
)
from services.agreements.domain import Agreement, InvalidCommand, InvalidTransition, stream_id
from services.agreements.reactions import RECENT, keep_appended, keep_status_clock, load

T = TypeVar("T")
Decision = Callable[[Agreement, datetime], None]

#: Organisations known to be registered, per service (event store): they are never removed.
_KNOWN_ORGANISATIONS: WeakKeyDictionary[EventStore, set[UUID]] = WeakKeyDictionary()


async def load_agreement(store: EventStore, agreement_id: UUID) -> Agreement:
    return await load(store, agreement_id)


def _state(agreement: Agreement, version: int, created_id: UUID | None = None) -> AgreementState:
    return AgreementState(agreement_id=agreement.agreement_id, status=agreement.status, version=version,
                          agreement_version=agreement.agreement_version,
                          accepted_by=sorted(agreement.accepted_by), created_id=created_id)


# --- identity --------------------------------------------------------------------------------------

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

    await retry_on_conflict(attempt)
    return token


async def revoke_api_token(ctx: Context, cmd: RevokeApiToken, meta: Metadata) -> UUID:
    """Revoke a token at once in every service (they replicate ApiTokenRevoked); returns its id."""
    row = await ctx.pool.fetchrow("SELECT token_id, user_id, revoked FROM api_tokens WHERE token_hash = $1",
                                  hash_token(cmd.token))
    if row is None:
        raise NotFound("no such token")
    if row["revoked"]:
        raise InvalidTransition("the token is already revoked")

    async def attempt() -> None:
        stream = f"user-{row['user_id']}"
        version = len(await ctx.store.read_stream(stream))
        await ctx.store.append(stream, version, [ApiTokenRevoked(token_id=row["token_id"], user_id=row["user_id"])],
                               meta)

    await retry_on_conflict(attempt)
    return UUID(str(row["token_id"]))


# --- the agreement ---------------------------------------------------------------------------------

async def draft_agreement(
    ctx: Context, cmd: DraftAgreement, meta: Metadata, organisation_id: UUID
) -> AgreementState:
    parties = {cmd.client_organisation_id, cmd.provider_organisation_id}
    known = _KNOWN_ORGANISATIONS.setdefault(ctx.store, set())
    if not parties <= known:
        found = {row["organisation_id"] for row in await ctx.pool.fetch(
            "SELECT organisation_id FROM organisations WHERE organisation_id = ANY($1::uuid[])", list(parties))}
        if found != parties:
            raise InvalidCommand("the client and the provider must both be registered organisations")
        known |= found
    agreement = Agreement(uuid4())
    agreement.draft(title=cmd.title, summary=cmd.summary, client_organisation_id=cmd.client_organisation_id,
                    provider_organisation_id=cmd.provider_organisation_id, by_organisation_id=organisation_id)
    result = await ctx.store.append(stream_id(agreement.agreement_id), 0, agreement.pending, meta)
    return _state(agreement, result.version)


async def change_agreement(ctx: Context, agreement_id: UUID, meta: Metadata, decide: Decision,
                           *, created_id: UUID | None = None) -> AgreementState:
    """Load the agreement, let `decide` record events, append them (with the status clock's timer)."""
    async def attempt() -> AgreementState:
        agreement = (await RECENT.take(ctx.store, agreement_id)).state
        if agreement.status == "new":
            raise NotFound(f"agreement {agreement_id} does not exist")
        period_before, now = agreement.status_update_period, datetime.now(UTC)
        decide(agreement, now)
        async with transaction(ctx.pool) as conn:
            await keep_status_clock(conn, agreement, period_before, now)
            result = await ctx.store.append(stream_id(agreement_id), agreement.version, agreement.pending, meta,
                                            conn=conn)
        ctx.store.notify_appended()
        keep_appended(agreement, result)
        return _state(agreement, result.version, created_id)

    return await retry_on_conflict(attempt)


async def propose_agreement(
    ctx: Context, cmd: ProposeAgreement, meta: Metadata, organisation_id: UUID
) -> AgreementState:
    return await change_agreement(ctx, cmd.agreement_id, meta, lambda a, _: a.propose(organisation_id))


async def accept_agreement(
    ctx: Context, cmd: AcceptAgreement, meta: Metadata, organisation_id: UUID
) -> AgreementState:
    return await change_agreement(ctx, cmd.agreement_id, meta, lambda a, _: a.accept(organisation_id))


# --- versions and time travel ----------------------------------------------------------------------

VERSION_EVENTS = (AgreementActivated, AgreementAmended, AgreementRenewed)


async def agreement_at(store: EventStore, agreement_id: UUID, *, as_of: datetime | None = None,
                       version: int | None = None) -> Agreement:
    """The agreement as it was at `as_of`, or right after the event that made agreement `version`."""
    envelopes = await store.read_stream(stream_id(agreement_id), as_of=as_of)
    events = [REGISTRY.decode(e.type, e.data) for e in envelopes]
    if version is not None:
        events = _through_version(events, version)
    agreement = Agreement.replay(agreement_id, events)
    if agreement.status == "new":
        when = f" as of {as_of.isoformat()}" if as_of else ""
        raise NotFound(f"agreement {agreement_id} did not exist{when}")
    return agreement


def _through_version(events: list[EventData], version: int) -> list[EventData]:
    for index, event in enumerate(events):
        if isinstance(event, VERSION_EVENTS) and event.agreement_version == version:
            return events[:index + 1]
    raise NotFound(f"the agreement has no version {version}")
