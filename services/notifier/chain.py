"""The escalation chain at work: started and resolved by events from the bus, advanced by durable timers.

Everything here runs in a transaction someone else owns (the consumer's, with its inbox row; the timer
scheduler's, with the timer's firing) and appends on that transaction's connection, so the events, the
next level's timer and the queued deliveries commit together or not at all. A restart mid-chain
therefore continues where it was: the next level's timer and the undelivered notifications are rows.
A first level without a delay is reached in the triggering event's transaction (its events appended
after the start, as its timer would have); every later step waits for its timer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from accord_runtime.eventstore import EventStore, Metadata, retry_on_conflict_in
from accord_runtime.timers import Timer, cancel, schedule
from contracts import REGISTRY, CloudEvent
from contracts.notifier import Responsible
from contracts.sla import BusinessCalendar
from services.notifier import outbox
from services.notifier.bootstrap import Notifier
from services.notifier.domain import Escalation, Step, first_step, next_step, stream_id
from services.notifier.rules import Level, Match, Target
from services.notifier.timing import due_after

log = structlog.get_logger(__name__)

LEVEL_TIMER = "notifier.level"
ACTOR = "system:notifier"


async def load(store: EventStore, matter: str) -> Escalation:
    envelopes = await store.read_stream(stream_id(matter))
    return Escalation.replay(matter, [REGISTRY.decode(e.type, e.data) for e in envelopes])


async def calendar_of(conn: asyncpg.Connection, agreement_id: UUID) -> BusinessCalendar | None:
    # as text: the strict models take dates and times from JSON, not from the decoded jsonb
    text = await conn.fetchval("SELECT calendar::text FROM notifier_calendars WHERE agreement_id = $1", agreement_id)
    return BusinessCalendar.model_validate_json(text) if text is not None else None


async def _schedule_step(conn: asyncpg.Connection, escalation: Escalation, step: Step, due_at: datetime) -> None:
    await schedule(conn, LEVEL_TIMER, escalation.matter, due_at, {
        "matter": escalation.matter, "occurrence": escalation.occurrence, "level": step.level, "round": step.round})


# --- started and resolved by events -------------------------------------------------------------

class EscalationTriggers:
    """Starts a chain for the matter an event is about (unless one is open, or this event started one
    before) and resolves the matters an event handles. A policy, not a read model (no `clear`):
    `rebuild` never replays it."""

    name = "escalation_triggers"

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        names = notifier.rules.event_names()
        self.handles = frozenset(m.event_type() for m in REGISTRY if f"{m.EVENT_SERVICE}.{m.EVENT_NAME}" in names)
        unknown = names - {f"{m.EVENT_SERVICE}.{m.EVENT_NAME}" for m in REGISTRY}
        if unknown:
            log.warning("rules name event types this build does not know; not subscribed", types=sorted(unknown))

    async def apply(self, conn: asyncpg.Connection, event: CloudEvent) -> None:
        rules = self.notifier.rules
        match = rules.match(event.type, event.data)
        if match is not None:
            await self._start(conn, match, event)
        for matter in rules.resolved_matters(event.type, event.data):
            await resolve(conn, self.notifier, matter, event)

    async def _start(self, conn: asyncpg.Connection, match: Match, event: CloudEvent) -> None:
        store = EventStore.on_connection(conn, self.notifier.source)
        chain = match.rule.chain

        async def attempt() -> None:
            escalation = await load(store, match.matter)
            now = datetime.now(UTC)
            if not escalation.start(rule=match.rule.name, agreement_id=UUID(match.agreement_id), levels=len(chain),
                                    trigger_event_id=event.id, trigger_type=event.type,
                                    trigger_data=dict(event.data), now=now, triggered_at=event.time):
                why = "a chain is open" if escalation.status == "open" else "this event started a chain before"
                log.info("nothing started: " + why, matter=match.matter, event_id=str(event.id),
                         occurrence=escalation.occurrence)
                return
            step, delay = first_step(chain)
            if delay.duration:
                calendar = await calendar_of(conn, UUID(match.agreement_id))
                await _schedule_step(conn, escalation, step, due_after(now, delay, calendar))
            # at the version read: a racing trigger appending first makes this attempt retry and see it
            await store.append(stream_id(match.matter), escalation.version, escalation.pending,
                               Metadata(ACTOR, event.correlationid, event.id), conn=conn)
            log.info("escalation started", matter=match.matter, rule=match.rule.name,
                     occurrence=escalation.occurrence)
            if not delay.duration:  # due at once: reached here rather than by a timer that would fire at once
                escalation.appended()
                await reach(conn, self.notifier, escalation, chain, step, now)
                await store.append(stream_id(match.matter), escalation.version, escalation.pending,
                                   Metadata.new(ACTOR), conn=conn)

        await retry_on_conflict_in(conn, attempt)


async def stop_chain(conn: asyncpg.Connection, escalation: Escalation) -> int:
    """Cancel the chain's next level and every notification not yet being sent; how many were cancelled."""
    await cancel(conn, LEVEL_TIMER, escalation.matter)
    return await outbox.cancel_pending(conn, escalation.id)


async def resolve(conn: asyncpg.Connection, notifier: Notifier, matter: str, event: CloudEvent) -> None:
    store = EventStore.on_connection(conn, notifier.source)

    async def attempt() -> None:
        escalation = await load(store, matter)
        if not escalation.resolves(event.id, event.time):
            return  # no chain, resolved already, or the event is about an earlier occurrence
        cancelled = await stop_chain(conn, escalation)
        escalation.resolve(by_type=event.type, by_event_id=event.id, cancelled=cancelled, now=datetime.now(UTC),
                           occurred_at=event.time)
        await store.append(stream_id(matter), escalation.version, escalation.pending,
                           Metadata(event.actor, event.correlationid, event.id), conn=conn)
        log.info("escalation resolved", matter=matter, occurrence=escalation.occurrence, by=event.type,
                 cancelled=cancelled)

    await retry_on_conflict_in(conn, attempt)


# --- advanced by timers -------------------------------------------------------------------------

class LevelTimer:
    """Timer handler: fire the chain's next step, queue its notifications and arm the step after it."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    async def __call__(self, conn: asyncpg.Connection, timer: Timer) -> None:
        matter = str(timer.payload["matter"])
        step = Step(int(timer.payload["level"]), int(timer.payload["round"]))
        occurrence = int(timer.payload.get("occurrence", 1))  # timers armed before occurrences: the first
        store = EventStore.on_connection(conn, self.notifier.source)

        async def attempt() -> None:
            escalation = await load(store, matter)
            if not escalation.expects(step, occurrence):
                return  # stale: acknowledged, resolved, this step already fired, or an earlier occurrence's
            try:
                chain = self.notifier.rules.rule(escalation.rule).chain
            except KeyError:
                log.warning("the rule of an open escalation is gone; the chain stops", matter=matter,
                            rule=escalation.rule)
                return
            if step.level > len(chain):
                return
            await reach(conn, self.notifier, escalation, chain, step, datetime.now(UTC))
            await store.append(stream_id(matter), escalation.version, escalation.pending,
                               Metadata.new(ACTOR), conn=conn)

        await retry_on_conflict_in(conn, attempt)


async def reach(conn: asyncpg.Connection, notifier: Notifier, escalation: Escalation, chain: list[Level],
                step: Step, now: datetime) -> None:
    """Reach `step` of the open chain: notify its targets as the agreement's contacts are now (queued
    deliveries) and arm the step after it. The caller appends the escalation's new events."""
    assert escalation.agreement_id is not None
    level = chain[step.level - 1]
    responsible = await responsible_for(conn, escalation.agreement_id, level.targets, escalation.trigger_data)
    queued = await outbox.enqueue(conn, notifier, escalation, step, level.channels, responsible, now)
    escalation.reach(step, responsible, queued, now, escalation.occurrence)
    following = next_step(chain, step)
    if following is not None:
        calendar = await calendar_of(conn, escalation.agreement_id)
        await _schedule_step(conn, escalation, following[0], due_after(now, following[1], calendar))
    log.info("escalation level reached", matter=escalation.matter, level=step.level, round=step.round,
             responsible=[r.email for r in responsible], notifications=queued)


async def responsible_for(conn: asyncpg.Connection, agreement_id: UUID, targets: list[Target],
                          trigger_data: dict[str, Any]) -> list[Responsible]:
    """The agreement's contacts the targets name, as they are now."""
    found: dict[UUID, Responsible] = {}
    for target in targets:
        side = target.side or (str(trigger_data.get(target.side_field)) if target.side_field else None)
        rows = await conn.fetch(
            "SELECT contact_id, side, role, name, email, escalation_level FROM notifier_contacts"
            " WHERE agreement_id = $1 AND ($2::text IS NULL OR side = $2)"
            " AND ($3::text IS NULL OR lower(role) = lower($3)) AND ($4::int IS NULL OR escalation_level = $4)"
            " ORDER BY side, role, name", agreement_id, side, target.role, target.matrix_level)
        for row in rows:
            found.setdefault(row["contact_id"], Responsible(**dict(row)))
    return list(found.values())
