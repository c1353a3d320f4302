"""Read models of the notifier.

`AgreementContacts` replicates each agreement's contacts (the escalation matrix) and SLA calendar
from the agreements service's events on the bus; levels resolve their targets from it when they
fire, so a personnel change re-routes the next level at once. `EscalationViews` folds the notifier's
own events into the open escalations and their history for the API.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
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
    escalation's history.

    A batch of events is folded in with a statement per kind of change (new escalations, levels
    reached, closes, history rows), not two per event; one event is a batch of one."""

    name = "escalations"
    handles = frozenset(m.event_type() for m in (
        EscalationStarted, EscalationLevelReached, EscalationAcknowledged, EscalationResolved,
        NotificationSent, NotificationFailed))

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        await self.apply_batch(conn, [event])

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[CloudEvent]) -> None:
        decoded = [(event, REGISTRY.decode(event.type, event.data)) for event in events]
        started: list[EscalationStarted] = []
        levels: dict[UUID, tuple[int, datetime]] = {}  # the last level an escalation reached in the batch
        closes: dict[UUID, tuple[str, str, datetime]] = {}  # the last close (a resolution may follow an ack)
        for event, data in decoded:
            match data:
                case EscalationStarted() as e:
                    started.append(e)
                case EscalationLevelReached() as e:
                    levels[e.escalation_id] = (e.level, event.time)
                case EscalationAcknowledged() as e:
                    closes[e.escalation_id] = ("acknowledged", e.acknowledged_by, event.time)
                case EscalationResolved() as e:
                    closes[e.escalation_id] = ("resolved", e.resolved_by_type, event.time)
        if started:
            await conn.execute(
                "INSERT INTO escalations (escalation_id, matter, occurrence, rule, agreement_id, status, levels,"
                " trigger_type, started_at, updated_at)"
                " SELECT id, matter, occurrence, rule, agreement_id, 'open', levels, trigger_type, at, at"
                " FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::uuid[], $6::int[], $7::text[],"
                " $8::timestamptz[]) AS s(id, matter, occurrence, rule, agreement_id, levels, trigger_type, at)"
                " ON CONFLICT DO NOTHING",
                [e.escalation_id for e in started], [e.matter for e in started], [e.occurrence for e in started],
                [e.rule for e in started], [e.agreement_id for e in started], [e.levels for e in started],
                [e.trigger_type for e in started], [e.started_at for e in started])
        if levels:  # after the inserts: an escalation may start and reach its first level in one batch
            await conn.execute(
                "UPDATE escalations AS x SET level = u.level, updated_at = u.at"
                " FROM unnest($1::uuid[], $2::int[], $3::timestamptz[]) AS u(id, level, at)"
                " WHERE x.escalation_id = u.id",
                list(levels), [level for level, _ in levels.values()], [at for _, at in levels.values()])
        if closes:  # after the levels: a chain closes after the levels it reached
            await conn.execute(
                "UPDATE escalations AS x SET status = u.status, closed_by = u.by, updated_at = u.at"
                " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[]) AS u(id, status, by, at)"
                " WHERE x.escalation_id = u.id",
                list(closes), *(list(column) for column in zip(*closes.values(), strict=True)))
        await conn.execute(
            "INSERT INTO escalation_history SELECT id, sequence, event_type, actor, at, data::jsonb"
            " FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::timestamptz[], $6::text[])"
            " AS h(id, sequence, event_type, actor, at, data) ON CONFLICT DO NOTHING",
            [data.escalation_id for _, data in decoded], [event.sequence for event, _ in decoded],  # type: ignore[attr-defined]
            [event.type for event, _ in decoded], [event.actor for event, _ in decoded],
            [event.time for event, _ in decoded], [data.model_dump_json() for _, data in decoded])

    async def clear(self, conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE escalations, escalation_history")
