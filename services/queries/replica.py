"""What the queries service keeps of each agreement, from the agreements service's events on the bus:
its SLA policy versions — enough to raise a query under the policy in force without asking the
agreements service. (Its organisations and status are in `agreement_parties`, kept by `with_parties`.)

It sits in the same consumer (one queue, delivery order) as the parties and the reaction raising
clarification queries, so an agreement's organisations and policy are known before its first
clarification request arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from contracts import REGISTRY, CloudEvent
from contracts.agreements import AgreementDrafted, SLAPolicySet
from contracts.sla import SLAPolicy
from services.queries.policy import policy_in_force


class AgreementTerms:
    """Every SLA policy version of an agreement, in stream order; and, for the previous release only,
    which read them from here, each agreement's organisations (`agreement_terms`: this release reads
    them from `agreement_parties`; the table goes a release later)."""

    name = "agreement_terms"
    handles = frozenset({AgreementDrafted.event_type(), SLAPolicySet.event_type()})

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        await self.apply_batch(conn, [event])

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[CloudEvent]) -> None:
        """Insert the batch's agreements and policy versions, one statement each (rows only ever added)."""
        terms, policies = [], []
        for event in events:
            match REGISTRY.decode(event.type, event.data):
                case AgreementDrafted() as e:
                    terms.append((e.agreement_id, e.client_organisation_id, e.provider_organisation_id))
                case SLAPolicySet() as e:
                    policies.append((e.agreement_id, event.sequence, e.policy.model_dump(mode="json"),
                                     e.effective_from))
        if terms:
            await conn.executemany("INSERT INTO agreement_terms VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", terms)
        if policies:
            await conn.executemany("INSERT INTO sla_policy_versions VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                                   policies)

    async def clear(self, conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE agreement_terms, sla_policy_versions")


@dataclass(frozen=True)
class PolicyVersion:
    policy: SLAPolicy
    effective_from: datetime


async def policy_for(conn: asyncpg.Connection | asyncpg.Pool, agreement_id: UUID, at: datetime) -> SLAPolicy | None:
    """The agreement's SLA policy in force at `at` (None before its first one)."""
    # as text: the strict models take dates and times from JSON, not from the decoded jsonb
    rows = await conn.fetch("SELECT policy::text, effective_from FROM sla_policy_versions WHERE agreement_id = $1"
                            " ORDER BY sequence", agreement_id)
    versions = [PolicyVersion(SLAPolicy.model_validate_json(row["policy"]), row["effective_from"]) for row in rows]
    return policy_in_force(versions, at)
