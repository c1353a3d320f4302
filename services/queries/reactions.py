"""What the queries service does when the agreements service asks: a provider's request to clarify a
requirement (`RequirementClarificationRequested`) becomes a clarification query to the client, with
the id the agreements service chose. Answering it sends `QueryAnswered` back, which clarifies the
requirement there (`services.agreements.reactions.RequirementClarifications`).
"""

from __future__ import annotations

from uuid import UUID

import asyncpg
import structlog

from accord_runtime.eventstore import ConcurrencyError, Metadata
from accord_runtime.parties import organisations_of
from contracts import REGISTRY, CloudEvent
from contracts.agreements import RequirementClarificationRequested
from services.queries import metrics
from services.queries.deadlines import keep_deadline, store_on
from services.queries.domain import Query, stream_id
from services.queries.replica import policy_for

log = structlog.get_logger(__name__)

CLARIFICATION_SUBJECT = "Clarification of a requirement"


class UnknownAgreement(LookupError):
    """A clarification request for an agreement this service has not heard of (dead-lettered)."""


class ClarificationQueries:
    """Raises the clarification query of each requirement clarification request.

    A policy, not a read model: it owns no tables and has no `clear`, so a rebuild never replays it.
    A request delivered again finds its query's stream started and raises nothing.
    """

    name = "clarification_queries"
    handles = frozenset({RequirementClarificationRequested.event_type()})

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        requested = REGISTRY.decode(event.type, event.data)
        assert isinstance(requested, RequirementClarificationRequested)
        organisations = await organisations_of(conn, requested.agreement_id)
        if organisations is None:
            raise UnknownAgreement(f"no agreement {requested.agreement_id} for clarification query "
                                   f"{requested.query_id}")
        client, provider = organisations
        query = Query(requested.query_id)
        query.raise_query(
            agreement_id=requested.agreement_id, client_organisation_id=client, provider_organisation_id=provider,
            by_organisation_id=provider, by_user_id=_user_of(event.actor), priority="normal",
            subject=CLARIFICATION_SUBJECT, body=requested.question, about_kind="requirement",
            about_id=requested.requirement_id, purpose="clarification",
            policy=await policy_for(conn, requested.agreement_id, event.time), at=event.time)
        store = store_on(conn)
        try:
            async with conn.transaction():
                await keep_deadline(conn, query)
                await store.append(stream_id(query.query_id), 0, query.pending,
                                   Metadata(event.actor, event.correlationid, event.id), conn=conn)
        except ConcurrencyError:
            log.info("clarification query already raised", query_id=str(query.query_id))
            return
        metrics.record(query, query.pending)


def _user_of(actor: str) -> UUID | None:
    """The user id of an actor ``user:<uuid>``; None for operators and systems."""
    kind, _, ident = actor.partition(":")
    try:
        return UUID(ident) if kind == "user" else None
    except ValueError:
        return None
