"""The delivery outbox: notifications queued with the level that calls for them, sent by a worker.

A level's notifications are rows written in the level's transaction. The `DeliveryWorker` claims
due rows with ``FOR UPDATE SKIP LOCKED`` (quiet hours and the per-target rate limit defer a row
instead of claiming it; a claim is rated as if its rows were claimed one by one), commits the claim,
sends them concurrently outside any transaction, then records the outcomes — sent, or retried after
an exponential backoff with jitter, or after the last attempt failed: a dead-letter row and
``NotificationFailed`` — those of the sends that ended together in one transaction. Up to the
rules' ``delivery.in_flight`` sends (20) are in flight; the worker claims more as soon as one ends,
so a receiver that takes its time (up to the delivery timeout) holds up only its own
notifications, not the next ones due. A claim carries a lease: rows of a worker that died
mid-send are claimed again once it runs out, so delivery is at least once (receivers get a
notification id to dedupe by).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import asyncpg
import structlog

from accord_runtime.eventstore import EventStore, Metadata, retry_on_conflict
from accord_runtime.postgres import TRANSIENT_ERRORS, transaction
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

# Due rows, each with its target's claims in the rate-limit window ($2: since when), counted no further
# than the limit ($3): the index on (channel, target, claimed_at) finds them, and the count stops at
# the limit however busy the target is.
_CANDIDATES = """
SELECT d.*, (
    SELECT count(*) FROM (
        SELECT FROM deliveries AS r
        WHERE r.channel = d.channel AND r.target = d.target AND r.claimed_at > $2 AND r.status IN ('sending', 'sent')
        LIMIT $3) AS capped
) AS recent_claims
FROM deliveries AS d
WHERE (d.status = 'pending' AND d.next_attempt_at <= now()) OR (d.status = 'sending' AND d.lease_until < now())
ORDER BY d.next_attempt_at LIMIT $1 FOR UPDATE OF d SKIP LOCKED
"""

# The (n+1)-th latest claim in a target's window: when it leaves the window, the target has room again.
_NTH_LATEST_CLAIM = """
SELECT claimed_at FROM deliveries
WHERE channel = $1 AND target = $2 AND claimed_at > $3 AND status IN ('sending', 'sent')
ORDER BY claimed_at DESC OFFSET $4 LIMIT 1
"""


@dataclass(frozen=True)
class _Outcome:
    """How one attempt went: sent (no error), or the error; `at` is when the attempt ended."""

    delivery: Delivery
    at: datetime
    error: str | None = None

    @property
    def event(self) -> NotificationSent | NotificationFailed:
        d = self.delivery
        about: dict[str, Any] = {
            "escalation_id": d.escalation_id, "notification_id": d.notification_id, "agreement_id": d.agreement_id,
            "level": d.level, "channel": d.channel, "target": d.target, "attempts": d.attempts,
            "responsible": [Responsible(**p) for p in d.responsible]}
        if self.error is None:
            return NotificationSent(**about, sent_at=self.at)
        return NotificationFailed(**about, error=self.error[:2000], failed_at=self.at)


class DeliveryWorker(DueWorker):
    """Claims due notifications, sends up to the rules' ``delivery.in_flight`` at once and records
    outcomes as they come in; every step is one transaction for many rows, not one per row."""

    _what = "delivery worker"

    def __init__(self, pool: asyncpg.Pool, store: EventStore, notifier: Notifier, *,
                 finish_seconds: float = 5.0) -> None:
        super().__init__(max_sleep=notifier.poll_seconds)
        self._pool, self._store, self._notifier = pool, store, notifier
        self._in_flight = notifier.rules.delivery.in_flight  # the most sends at once, and rows claimed at once
        self._finish_seconds = finish_seconds  # how long a stopping worker lets its sends end
        self._sending: set[asyncio.Task[_Outcome]] = set()
        self._ended: list[_Outcome] = []  # outcomes not recorded yet
        self._gauge_at = 0.0

    async def run(self) -> None:
        """The loop; once stopped, let the sends in flight end (for a while) and record them."""
        try:
            await super().run()
        finally:
            await self._finish()

    async def drain(self) -> int:
        """Record the sends that ended, then claim as many due rows as sends may start, and start them:
        how many rows were recorded, claimed or deferred. With every send slot taken (0), the loop
        waits for a wake-up, which each send that ends gives."""
        recorded = await self._record_ended()
        if self._stopping.is_set():
            return recorded
        claimed, deferred = await self.claim(self._in_flight - len(self._sending))
        self._start(claimed)
        return recorded + len(claimed) + deferred

    async def next_due(self) -> datetime | None:
        if self._ended:
            return datetime.now(UTC)  # outcomes to record
        await self._refresh_gauge()  # every turn of the loop looks here; the gauge itself is refreshed every 5 s
        due: datetime | None = await self._pool.fetchval(
            "SELECT min(CASE WHEN status = 'pending' THEN next_attempt_at ELSE lease_until END) FROM deliveries"
            " WHERE status IN ('pending', 'sending')")
        return due

    async def deliver_due(self) -> int:
        """Claim a batch of due notifications and send them, recording the outcomes of the sends that
        ended together in one transaction, until every send ended; how many were claimed."""
        claimed, _ = await self.claim(self._in_flight)
        self._start(claimed)
        while self._sending:
            await asyncio.wait(self._sending, return_when=asyncio.FIRST_COMPLETED)
            await self._record_ended()
        await self._record_ended()
        return len(claimed)

    def _start(self, claimed: list[Delivery]) -> None:
        for delivery in claimed:
            task = asyncio.ensure_future(self._attempt(delivery))
            self._sending.add(task)
            task.add_done_callback(self._ended_one)

    def _ended_one(self, task: asyncio.Task[_Outcome]) -> None:
        self._sending.discard(task)
        if not task.cancelled():  # cancelled only when stopping: its lease brings the row back
            self._ended.append(task.result())  # `_attempt` returns every error as an outcome
            self.wake()

    async def _record_ended(self) -> int:
        """Record the outcomes of the sends that ended (kept for the next try if recording fails)."""
        if not self._ended:
            return 0
        ended = list(self._ended)
        await self._record(ended)
        del self._ended[:len(ended)]  # others may have ended meanwhile
        return len(ended)

    async def _finish(self) -> None:
        if self._sending:
            await asyncio.wait(self._sending, timeout=self._finish_seconds)
        for task in list(self._sending):  # still going: their leases bring them back
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        with contextlib.suppress(*TRANSIENT_ERRORS):  # not recorded: sent again once their leases run out
            await self._record_ended()

    async def claim(self, limit: int) -> tuple[list[Delivery], int]:
        """Claim up to `limit` due rows in one transaction; rows in quiet hours or over their
        target's rate limit are deferred instead. The claimed rows, and how many were deferred."""
        if limit <= 0:
            return [], 0
        rules = self._notifier.rules
        lease = timedelta(seconds=rules.delivery.timeout_seconds * 3 + 5)
        async with transaction(self._pool) as conn:
            now = datetime.now(UTC)
            rows = await conn.fetch(_CANDIDATES, limit,
                                    now - timedelta(seconds=rules.defaults.rate_limit.per_seconds),
                                    rules.defaults.rate_limit.max)
            if not rows:
                return [], 0
            later = await self._deferrals(conn, rows, now)
            claimed = [row for row in rows if row["notification_id"] not in later]
            if later:
                await conn.execute(
                    "UPDATE deliveries AS d SET status = 'pending', next_attempt_at = u.later"
                    " FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, later) WHERE d.notification_id = u.id",
                    list(later), list(later.values()))
            if claimed:
                await conn.execute(
                    "UPDATE deliveries SET status = 'sending', attempts = attempts + 1, claimed_at = $2,"
                    " lease_until = $3 WHERE notification_id = ANY($1::uuid[])",
                    [row["notification_id"] for row in claimed], now, now + lease)
        for row in rows:
            if row["notification_id"] in later:
                metrics.NOTIFICATIONS.labels(row["channel"], "deferred").inc()
        return [_delivery(row, row["attempts"] + 1) for row in claimed], len(later)

    async def _deferrals(self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record],
                         now: datetime) -> dict[UUID, datetime]:
        """When the rows that may not go now may go instead: after the quiet hours, or when their
        target's rate allows. The batch is rated as if its rows were claimed one by one, in order."""
        defaults = self._notifier.rules.defaults
        quiet, limit = defaults.quiet_hours, defaults.rate_limit
        later: dict[UUID, datetime] = {}
        for row in rows:
            if row["quiet_hours"] and quiet is not None and row["channel"] in quiet.channels:
                end = quiet_until(now, quiet, row["timezone"])
                if end is not None:
                    later[row["notification_id"]] = end
        window = timedelta(seconds=limit.per_seconds)
        since = now - window
        added: Counter[tuple[str, str]] = Counter()  # this batch's claims so far, per target
        for row in rows:
            if row["notification_id"] in later:
                continue
            target = (row["channel"], row["target"])
            if row["attempts"] > 0:  # a retry of a notification already counted against the target …
                if row["status"] == "pending" or row["claimed_at"] <= since:
                    added[target] += 1  # … which counts again once claimed, unless its last claim still does
                continue
            if row["recent_claims"] + added[target] < limit.max:
                added[target] += 1
                continue
            # the window opens when the limit-th latest claim leaves it (this batch's are the latest)
            nth = limit.max - added[target] - 1
            opens: datetime | None = await conn.fetchval(_NTH_LATEST_CLAIM, *target, since, nth) if nth >= 0 else None
            later[row["notification_id"]] = (opens or now) + window
        return later

    async def _attempt(self, delivery: Delivery) -> _Outcome:
        sender = self._notifier.senders[delivery.channel]
        try:
            await sender.send(delivery)
        except DeliveryError as error:
            return _Outcome(delivery, datetime.now(UTC), str(error))
        except Exception as error:  # a sender bug must not kill the worker: retried, then dead-lettered
            log.exception("sender raised unexpectedly", channel=delivery.channel)
            return _Outcome(delivery, datetime.now(UTC), f"{type(error).__name__}: {error}")
        return _Outcome(delivery, datetime.now(UTC))

    async def _record(self, outcomes: list[_Outcome]) -> None:
        """Record outcomes in one transaction: sent rows, with NotificationSent; failed attempts, retried
        after a backoff or, after the last one, dead-lettered with NotificationFailed. A concurrent
        change of an escalation's stream makes the whole transaction run again."""
        policy = self._notifier.rules.delivery
        sent = [o for o in outcomes if o.error is None]
        failed = [o for o in outcomes if o.error is not None and o.delivery.attempts >= policy.max_attempts]
        retried = [(o, backoff(o.delivery.attempts, policy)) for o in outcomes
                   if o.error is not None and o.delivery.attempts < policy.max_attempts]

        async def attempt() -> None:
            async with transaction(self._pool) as conn:
                if sent:
                    await conn.execute(
                        "UPDATE deliveries AS d SET status = 'sent', sent_at = u.at, last_error = NULL"
                        " FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at) WHERE d.notification_id = u.id",
                        [o.delivery.notification_id for o in sent], [o.at for o in sent])
                if retried:
                    await conn.execute(
                        "UPDATE deliveries AS d SET status = 'pending', next_attempt_at = u.next, last_error = u.error"
                        " FROM unnest($1::uuid[], $2::timestamptz[], $3::text[]) AS u(id, next, error)"
                        " WHERE d.notification_id = u.id",
                        [o.delivery.notification_id for o, _ in retried],
                        [o.at + timedelta(seconds=wait) for o, wait in retried], [o.error for o, _ in retried])
                for o in failed:
                    d = o.delivery
                    await conn.execute("UPDATE deliveries SET status = 'failed', last_error = $2"
                                       " WHERE notification_id = $1", d.notification_id, o.error)
                    await conn.execute(
                        "INSERT INTO dead_letters (notification_id, escalation_id, channel, target, attempts, error,"
                        " message) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                        d.notification_id, d.escalation_id, d.channel, d.target, d.attempts, o.error, d.message)
                await self._append_outcomes(conn, sent + failed)

        await retry_on_conflict(attempt)
        if sent or failed:
            self._store.notify_appended()
        for o in sent:
            d = o.delivery
            metrics.NOTIFICATIONS.labels(d.channel, "sent").inc()
            metrics.DELIVERY_LATENCY.labels(d.channel).observe((o.at - d.created_at).total_seconds())
            log.info("notification sent", channel=d.channel, target=d.target, matter=d.matter, level=d.level,
                     attempts=d.attempts)
        for o, wait in retried:
            metrics.NOTIFICATIONS.labels(o.delivery.channel, "retried").inc()
            log.warning("notification failed; retrying", channel=o.delivery.channel, target=o.delivery.target,
                        attempt=o.delivery.attempts, retry_in=round(wait, 3), error=o.error)
        for o in failed:
            metrics.NOTIFICATIONS.labels(o.delivery.channel, "failed").inc()
            log.error("notification failed for good", channel=o.delivery.channel, target=o.delivery.target,
                      attempts=o.delivery.attempts, error=o.error)

    async def _append_outcomes(self, conn: asyncpg.Connection, outcomes: Sequence[_Outcome]) -> None:
        """Append each outcome to its escalation's stream (the streams read in one query, taken in order
        of matter so that two workers appending to the same streams meet in the same order)."""
        by_matter: dict[str, list[_Outcome]] = {}
        for outcome in outcomes:
            by_matter.setdefault(outcome.delivery.matter, []).append(outcome)
        streams = await self._store.read_streams([stream_id(matter) for matter in sorted(by_matter)], conn=conn)
        for matter in sorted(by_matter):
            escalation = Escalation.replay(matter, [REGISTRY.decode(e.type, e.data)
                                                    for e in streams[stream_id(matter)]])
            for outcome in by_matter[matter]:
                escalation.record_delivery(outcome.event)
            for offset, event in enumerate(escalation.pending):  # an append each: each outcome its own metadata
                await self._store.append(stream_id(matter), escalation.version + offset, [event],
                                         Metadata.new("system:notifier"), conn=conn)

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
