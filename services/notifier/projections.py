"""Read models of the notifier.

`AgreementContacts` replicates each agreement's contacts (the escalation matrix) and SLA calendar
from the agreements service's events on the bus; levels resolve their targets from it when they
fire, so a personnel change re-routes the next level at once. `EscalationViews` folds the notifier's
own events into the open escalations and their history for the API.
"""

from __future__ import annotations

import json
from uuid import UUID

import asyncpg

from contracts import REGISTRY, CloudEvent
from contracts.agreements import ContactAssigned, ContactRemoved, PersonnelChanged, SLAPolicySet
from contracts.notifier import (
    EscalationAcknowledged,
    EscalationLevelReached,
    EscalationResolved,
    EscalationStarted,
    NotificationFailed,
    NotificationSent,
)


class AgreementContacts:
    """agreement → its current contacts (side, role, escalation level) and its business calendar."""

    name = "notifier_contacts"
    handles = frozenset(m.event_type() for m in (ContactAssigned, PersonnelChanged, ContactRemoved, SLAPolicySet))

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        match REGISTRY.decode(event.type, event.data):
            case ContactAssigned() as e:
                await conn.execute(
                    "INSERT INTO notifier_contacts VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    " ON CONFLICT (agreement_id, contact_id) DO UPDATE SET side = EXCLUDED.side,"
                    " role = EXCLUDED.role, name = EXCLUDED.name, email = EXCLUDED.email,"
                    " escalation_level = EXCLUDED.escalation_level",
                    e.agreement_id, e.contact_id, e.side, e.role, e.name, e.email, e.escalation_level)
            case PersonnelChanged() as e:
                # the successor takes over the role and the escalation level; the predecessor leaves
                await conn.execute(
                    "INSERT INTO notifier_contacts"
                    " SELECT agreement_id, $3, side, role, $4, $5, escalation_level FROM notifier_contacts"
                    " WHERE agreement_id = $1 AND contact_id = $2 ON CONFLICT DO NOTHING",
                    e.agreement_id, e.contact_id, e.replaced_by_contact_id, e.name, e.email)
                await self._remove(conn, e.agreement_id, e.contact_id)
            case ContactRemoved() as e:
                await self._remove(conn, e.agreement_id, e.contact_id)
            case SLAPolicySet() as e:
                await conn.execute(
                    "INSERT INTO notifier_calendars VALUES ($1, $2, $3) ON CONFLICT (agreement_id) DO UPDATE"
                    " SET calendar = EXCLUDED.calendar, effective_from = EXCLUDED.effective_from"
                    " WHERE notifier_calendars.effective_from <= EXCLUDED.effective_from",
                    e.agreement_id, e.policy.calendar.model_dump(mode="json"), e.effective_from)

    @staticmethod
    async def _remove(conn: asyncpg.Connection, agreement_id: UUID, contact_id: UUID) -> None:
        await conn.execute("DELETE FROM notifier_contacts WHERE agreement_id = $1 AND contact_id = $2",
                           agreement_id, contact_id)

    async def clear(self, conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE notifier_contacts, notifier_calendars")


class EscalationViews:
    """One row per escalation — each occurrence of a matter is one — (status, level reached) and each
    escalation's history."""

    name = "escalations"
    handles = frozenset(m.event_type() for m in (
        EscalationStarted, EscalationLevelReached, EscalationAcknowledged, EscalationResolved,
        NotificationSent, NotificationFailed))

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        data = REGISTRY.decode(event.type, event.data)
        match data:
            case EscalationStarted() as e:
                await conn.execute(
                    "INSERT INTO escalations (escalation_id, matter, occurrence, rule, agreement_id, status, levels,"
                    " trigger_type, started_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'open', $6, $7, $8, $8)"
                    " ON CONFLICT DO NOTHING",
                    e.escalation_id, e.matter, e.occurrence, e.rule, e.agreement_id, e.levels, e.trigger_type,
                    e.started_at)
            case EscalationLevelReached() as e:
                await conn.execute("UPDATE escalations SET level = $2, updated_at = $3 WHERE escalation_id = $1",
                                   e.escalation_id, e.level, event.time)
            case EscalationAcknowledged() as e:
                await self._close(conn, e.escalation_id, "acknowledged", e.acknowledged_by, event)
            case EscalationResolved() as e:
                await self._close(conn, e.escalation_id, "resolved", e.resolved_by_type, event)
        await conn.execute(
            "INSERT INTO escalation_history VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            event.data["escalation_id"], event.sequence, event.type, event.actor, event.time,
            json.loads(data.model_dump_json()))

    @staticmethod
    async def _close(conn: asyncpg.Connection, escalation_id: UUID, status: str, by: str, event: CloudEvent) -> None:
        await conn.execute("UPDATE escalations SET status = $2, closed_by = $3, updated_at = $4"
                           " WHERE escalation_id = $1", escalation_id, status, by, event.time)

    async def clear(self, conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE escalations, escalation_history")
