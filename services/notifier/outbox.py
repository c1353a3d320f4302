"""The delivery outbox: notifications queued with the level that calls for them, sent by a worker.

A level's notifications are rows written in the level's transaction. The `DeliveryWorker` claims due
rows with ``FOR UPDATE SKIP LOCKED`` (quiet hours and the per-target rate limit defer a row instead of
claiming it), commits the claim, sends outside any transaction, then records the outcome — sent, or
retried after an exponential backoff with jitter, or after the last attempt failed: a dead-letter row
and ``NotificationFailed``. A claim carries a lease: rows of a worker that died mid-send are claimed
again once it runs out, so delivery is at least once (receivers get a notification id to dedupe by).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import asyncpg
import structlog

from accord_runtime.eventstore import ConcurrencyError, EventStore, Metadata
from accord_runtime.postgres import transaction
from accord_runtime.timers import DueWorker
from contracts import REGISTRY
from contracts.notifier import NotificationFailed, NotificationSent, Responsible
from services.notifier import metrics
from services.notifier.channels import Delivery, DeliveryError
from services.notifier.domain import Escalation, Step, stream_id
from services.notifier.timing import backoff, quiet_until

if TYPE_CHECKING:
    from services.notifier.bootstrap import Notifier

log = structlog.get_logger(__name__)


# --- written in the chain's transactions --------------------------------------------------------

async def enqueue(conn: asyncpg.Connection, notifier: Notifier, escalation: Escalation, step: Step,
                  channels: Sequence[str], responsible: list[Responsible], now: datetime) -> int:
    """Queue the level's notifications: an email per responsible person, one call per webhook."""
    assert escalation.agreement_id is not None
    rules = notifier.rules
    rule = rules.rule(escalation.rule)
    zone = await conn.fetchval("SELECT calendar->>'timezone' FROM notifier_calendars WHERE agreement_id = $1",
                               escalation.agreement_id) or rules.defaults.timezone
    people = [r.model_dump(mode="json") for r in responsible]
    base = {"escalation_id": str(escalation.id), "matter": escalation.matter, "occurrence": escalation.occurrence,
            "rule": escalation.rule,
            "agreement_id": str(escalation.agreement_id), "level": step.level, "round": step.round,
            "levels": escalation.levels, "responsible": people, "trigger": escalation.trigger_data,
            "subject": _subject(escalation, step)}
    rows: list[tuple[str, str, dict[str, Any]]] = []
    for channel in channels:
        if channel == "email":
            emails: dict[str, Responsible] = {}
            for person in responsible:
                emails.setdefault(person.email.lower(), person)
            rows += [("email", person.email,
                      {**base, "ack_url": notifier.ack_url(escalation.id, str(person.contact_id))})
                     for person in emails.values()]
        else:
            name = channel.partition(":")[2]
            kind = rules.webhooks[name].format
            rows.append(("slack" if kind == "slack" else "webhook", name,
                         {**base, "ack_url": notifier.ack_url(escalation.id, name)}))
    for channel, target, message in rows:
        await conn.execute(
            "INSERT INTO deliveries (notification_id, escalation_id, matter, agreement_id, level, round, channel,"
            " target, responsible, message, timezone, quiet_hours, next_attempt_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            uuid4(), escalation.id, escalation.matter, escalation.agreement_id, step.level, step.round, channel,
            target, people, message, zone, not rule.notify_in_quiet_hours, now)
    return len(rows)


def _subject(escalation: Escalation, step: Step) -> str:
    what = escalation.trigger_data.get("subject") or escalation.matter
    reminder = f", reminder {step.round}" if step.round else ""
    return f"[Accord] Escalation level {step.level}/{escalation.levels}{reminder}: {what}"


async def cancel_pending(conn: asyncpg.Connection, escalation_id: UUID) -> int:
    """Cancel the chain's notifications not yet claimed for sending; how many."""
    rows = await conn.fetch("UPDATE deliveries SET status = 'cancelled' WHERE escalation_id = $1"
                            " AND status = 'pending' RETURNING channel", escalation_id)
    for row in rows:
        metrics.NOTIFICATIONS.labels(row["channel"], "cancelled").inc()
    return len(rows)


# --- the worker ---------------------------------------------------------------------------------

_CANDIDATES = """
SELECT * FROM deliveries
WHERE (status = 'pending' AND next_attempt_at <= now()) OR (status = 'sending' AND lease_until < now())
ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED
"""


class DeliveryWorker(DueWorker):
    _what = "delivery worker"

    def __init__(self, pool: asyncpg.Pool, store: EventStore, notifier: Notifier, *, batch_size: int = 20) -> None:
        super().__init__(max_sleep=notifier.poll_seconds)
        self._pool, self._store, self._notifier = pool, store, notifier
        self._batch_size = batch_size
        self._gauge_at = 0.0

    async def drain(self) -> int:
        return await self.deliver_due()  # one batch: the loop looks again after it

    async def next_due(self) -> datetime | None:
        await self._refresh_gauge()  # every turn of the loop looks here; the gauge itself is refreshed every 5 s
        due: datetime | None = await self._pool.fetchval(
            "SELECT min(CASE WHEN status = 'pending' THEN next_attempt_at ELSE lease_until END) FROM deliveries"
            " WHERE status IN ('pending', 'sending')")
        return due

    async def deliver_due(self) -> int:
        """Claim a batch of due notifications and send them concurrently; how many were claimed."""
        claimed = await self.claim()
        await asyncio.gather(*(self._deliver(delivery) for delivery in claimed))
        return len(claimed)

    async def claim(self) -> list[Delivery]:
        rules = self._notifier.rules
        lease = timedelta(seconds=rules.delivery.timeout_seconds * 3 + 5)
        limit = rules.defaults.rate_limit
        claimed: list[Delivery] = []
        async with transaction(self._pool) as conn:
            now = datetime.now(UTC)
            for row in await conn.fetch(_CANDIDATES, self._batch_size):
                later = await self._deferral(conn, row, now, limit.max, limit.per_seconds)
                if later is not None:
                    await conn.execute("UPDATE deliveries SET status = 'pending', next_attempt_at = $2"
                                       " WHERE notification_id = $1", row["notification_id"], later)
                    metrics.NOTIFICATIONS.labels(row["channel"], "deferred").inc()
                    continue
                await conn.execute(
                    "UPDATE deliveries SET status = 'sending', attempts = attempts + 1, claimed_at = $2,"
                    " lease_until = $3 WHERE notification_id = $1", row["notification_id"], now, now + lease)
                claimed.append(_delivery(row, row["attempts"] + 1))
        return claimed

    async def _deferral(self, conn: asyncpg.Connection, row: asyncpg.Record, now: datetime,
                        max_per_window: int, window_seconds: float) -> datetime | None:
        """When the row may go instead of now: after the quiet hours, or when the target's rate allows."""
        quiet = self._notifier.rules.defaults.quiet_hours
        if row["quiet_hours"] and quiet is not None and row["channel"] in quiet.channels:
            end = quiet_until(now, quiet, row["timezone"])
            if end is not None:
                return end
        if row["attempts"] > 0:
            return None  # a retry of a notification already counted against the target
        window = timedelta(seconds=window_seconds)
        recent = await conn.fetch(
            "SELECT claimed_at FROM deliveries WHERE channel = $1 AND target = $2 AND claimed_at > $3"
            " AND status IN ('sending', 'sent') ORDER BY claimed_at", row["channel"], row["target"], now - window)
        if len(recent) < max_per_window:
            return None
        opens_at: datetime = recent[len(recent) - max_per_window]["claimed_at"] + window
        return opens_at

    async def _deliver(self, delivery: Delivery) -> None:
        sender = self._notifier.senders[delivery.channel]
        try:
            await sender.send(delivery)
        except DeliveryError as error:
            await self._failed(delivery, str(error))
            return
        except Exception as error:  # a sender bug must not kill the worker: retried, then dead-lettered
            log.exception("sender raised unexpectedly", channel=delivery.channel)
            await self._failed(delivery, f"{type(error).__name__}: {error}")
            return
        await self._sent(delivery)

    async def _sent(self, delivery: Delivery) -> None:
        now = datetime.now(UTC)
        async with transaction(self._pool) as conn:
            await conn.execute("UPDATE deliveries SET status = 'sent', sent_at = $2, last_error = NULL"
                               " WHERE notification_id = $1", delivery.notification_id, now)
            await self._record(conn, delivery, NotificationSent(
                escalation_id=delivery.escalation_id, notification_id=delivery.notification_id,
                agreement_id=delivery.agreement_id, level=delivery.level, channel=delivery.channel,  # type: ignore[arg-type]
                target=delivery.target, responsible=[Responsible(**p) for p in delivery.responsible],
                attempts=delivery.attempts, sent_at=now))
        self._store.notify_appended()
        metrics.NOTIFICATIONS.labels(delivery.channel, "sent").inc()
        metrics.DELIVERY_LATENCY.labels(delivery.channel).observe((now - delivery.created_at).total_seconds())
        log.info("notification sent", channel=delivery.channel, target=delivery.target,
                 matter=delivery.matter, level=delivery.level, attempts=delivery.attempts)

    async def _failed(self, delivery: Delivery, error: str) -> None:
        policy = self._notifier.rules.delivery
        now = datetime.now(UTC)
        if delivery.attempts < policy.max_attempts:
            wait = backoff(delivery.attempts, policy)
            await self._pool.execute(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = $2, last_error = $3"
                " WHERE notification_id = $1", delivery.notification_id, now + timedelta(seconds=wait), error)
            metrics.NOTIFICATIONS.labels(delivery.channel, "retried").inc()
            log.warning("notification failed; retrying", channel=delivery.channel, target=delivery.target,
                        attempt=delivery.attempts, retry_in=round(wait, 3), error=error)
            return
        async with transaction(self._pool) as conn:
            await conn.execute("UPDATE deliveries SET status = 'failed', last_error = $2 WHERE notification_id = $1",
                               delivery.notification_id, error)
            await conn.execute(
                "INSERT INTO dead_letters (notification_id, escalation_id, channel, target, attempts, error, message)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                delivery.notification_id, delivery.escalation_id, delivery.channel, delivery.target,
                delivery.attempts, error, delivery.message)
            await self._record(conn, delivery, NotificationFailed(
                escalation_id=delivery.escalation_id, notification_id=delivery.notification_id,
                agreement_id=delivery.agreement_id, level=delivery.level, channel=delivery.channel,  # type: ignore[arg-type]
                target=delivery.target, responsible=[Responsible(**p) for p in delivery.responsible],
                attempts=delivery.attempts, error=error[:2000], failed_at=now))
        self._store.notify_appended()
        metrics.NOTIFICATIONS.labels(delivery.channel, "failed").inc()
        log.error("notification failed for good", channel=delivery.channel, target=delivery.target,
                  attempts=delivery.attempts, error=error)

    async def _record(self, conn: asyncpg.Connection, delivery: Delivery,
                      outcome: NotificationSent | NotificationFailed) -> None:
        """Append the outcome to the escalation's stream (again on a concurrent change of the stream)."""
        for remaining in range(4, -1, -1):
            try:
                async with conn.transaction():
                    envelopes = await self._store.read_stream(stream_id(delivery.matter), conn=conn)
                    escalation = Escalation.replay(delivery.matter,
                                                   [REGISTRY.decode(e.type, e.data) for e in envelopes])
                    escalation.record_delivery(outcome)
                    await self._store.append(stream_id(delivery.matter), escalation.version, escalation.pending,
                                             Metadata.new("system:notifier"), conn=conn)
                return
            except ConcurrencyError:
                if not remaining:
                    raise

    async def _refresh_gauge(self) -> None:
        """Open escalations by level, at most every few seconds (a gauge over the read model)."""
        if time.monotonic() - self._gauge_at < 5:
            return
        self._gauge_at = time.monotonic()
        rows = await self._pool.fetch("SELECT level, count(*) AS n FROM escalations WHERE status = 'open'"
                                      " GROUP BY level")
        metrics.OPEN_ESCALATIONS.clear()
        for row in rows:
            metrics.OPEN_ESCALATIONS.labels(str(row["level"])).set(row["n"])


def _delivery(row: asyncpg.Record, attempts: int) -> Delivery:
    message = row["message"]
    return Delivery(
        notification_id=row["notification_id"], escalation_id=row["escalation_id"], matter=row["matter"],
        agreement_id=row["agreement_id"], level=row["level"], round=row["round"], channel=row["channel"],
        target=row["target"], responsible=list(row["responsible"]),
        message=message if isinstance(message, dict) else json.loads(message),
        attempts=attempts, created_at=row["created_at"])
