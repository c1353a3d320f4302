"""The notifier's delivery worker over the real database: the per-target rate limit defers the excess
(to the moment the window opens) instead of dropping it, quiet hours defer email in the agreement's
time zone unless the rule allows it, and every outcome is counted by channel in the metrics."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from prometheus_client import REGISTRY

from accord_runtime.eventstore import EventStore, Metadata
from accord_runtime.postgres import transaction
from contracts import REGISTRY as EVENTS
from contracts.notifier import NotificationFailed, NotificationSent, Responsible
from services.notifier import outbox
from services.notifier.bootstrap import Notifier
from services.notifier.channels import Delivery, DeliveryError
from services.notifier.domain import Escalation, Step, stream_id
from services.notifier.outbox import DeliveryWorker
from services.notifier.rules import RuleSet, parse_rules
from tests.support import eventually

pytestmark = pytest.mark.servers

AGREEMENT = uuid.uuid4()


def person(name: str) -> Responsible:
    return Responsible(contact_id=uuid.uuid4(), side="provider", role="lead", name=name,
                       email=f"{name}@provider.test", escalation_level=1)


ANN, BO, DOWN = person("ann"), person("bo"), person("down")


@dataclass
class Recorder:
    """A sender that records what it was given, fails for the targets in `failing`, and holds the sends
    to the targets in `held` until `release` is set."""

    failing: set[str] = field(default_factory=set)
    held: set[str] = field(default_factory=set)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    sent: list[tuple[str, datetime]] = field(default_factory=list)
    notifications: list[uuid.UUID] = field(default_factory=list)

    async def send(self, delivery: Delivery) -> None:
        if delivery.target in self.held:
            await self.release.wait()
        if delivery.target in self.failing:
            raise DeliveryError("550 mailbox unavailable")
        await asyncio.sleep(0.005)  # concurrent sends overlap
        self.sent.append((delivery.target, datetime.now(UTC)))
        self.notifications.append(delivery.notification_id)

    async def close(self) -> None:
        """Nothing kept between sends."""


def rules(*, rate: tuple[int, float] = (20, 3600), quiet: dict[str, Any] | None = None,
          in_flight: int = 20) -> RuleSet:
    level = {"targets": [{"side": "provider", "matrix_level": 1}], "channels": ["email", "webhook:ops"]}
    return parse_rules({
        "defaults": {"rate_limit": {"max": rate[0], "per_seconds": rate[1]},
                     **({"quiet_hours": quiet} if quiet else {})},
        "delivery": {"max_attempts": 2, "backoff_base_seconds": 0.05, "backoff_cap_seconds": 0.1, "jitter": 0,
                     "timeout_seconds": 1, "in_flight": in_flight},
        "webhooks": {"ops": {"url": "http://127.0.0.1:9/hooks/ops"}},  # never called: the senders are fakes
        "rules": [
            {"name": "routine", "event": "kpi.KPIBreached", "matter": "kpi:{kpi_id}:breach", "levels": [level]},
            {"name": "urgent", "event": "queries.QueryOverdue", "matter": "query:{query_id}:{clock}",
             "notify_in_quiet_hours": True, "levels": [level]},
        ]})


@dataclass
class Worker:
    pool: asyncpg.Pool
    store: EventStore
    email: Recorder
    webhook: Recorder
    notifier: Notifier = field(init=False)
    worker: DeliveryWorker = field(init=False)

    def use(self, ruleset: RuleSet) -> None:
        self.notifier = Notifier(rules=ruleset, ack_signer=None, ack_base_url="http://notifier",
                                 senders={"email": self.email, "webhook": self.webhook, "slack": self.webhook},
                                 poll_seconds=30)  # long: a deferred row wakes the worker itself
        self.worker = DeliveryWorker(self.pool, self.store, self.notifier)

    async def escalate(self, rule: str, people: list[Responsible], channels: list[str]) -> Escalation:
        """A chain of `rule` whose level 1 queues notifications to `people` on `channels`."""
        now = datetime.now(UTC)
        escalation = Escalation(f"matter:{uuid.uuid4()}")
        escalation.start(rule=rule, agreement_id=AGREEMENT, levels=1, trigger_event_id=uuid.uuid4(),
                         trigger_type="accord.kpi.KPIBreached.v1", trigger_data={}, now=now)
        async with transaction(self.pool) as conn:
            queued = await outbox.enqueue(conn, self.notifier, escalation, Step(1, 0), channels, people, now)
            escalation.reach(Step(1, 0), people, queued, now)
            await self.store.append(stream_id(escalation.matter), 0, escalation.pending, Metadata.new("test"),
                                    conn=conn)
        escalation.pending.clear()
        return escalation

    async def emails(self, people: list[Responsible]) -> None:
        """A routine chain per person, in order, each emailing that person."""
        for one in people:
            await self.escalate("routine", [one], ["email"])

    async def rows(self, target: str) -> list[asyncpg.Record]:
        return await self.pool.fetch("SELECT * FROM deliveries WHERE target = $1 ORDER BY created_at, claimed_at",
                                     target)


@pytest.fixture
def delivery(notifier_pool: asyncpg.Pool) -> Worker:
    return Worker(notifier_pool, EventStore(notifier_pool, source="/accord/notifier"), Recorder(), Recorder())


def count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def notifications(channel: str, outcome: str) -> float:
    return count("accord_notifier_notifications_total", channel=channel, outcome=outcome)


async def test_the_rate_limit_defers_a_target_s_excess_to_the_window_opening_and_then_sends_it(
    delivery: Worker,
) -> None:
    delivery.use(rules(rate=(2, 2.0)))
    await delivery.emails([ANN] * 3 + [BO])
    deferred_before = notifications("email", "deferred")

    assert await delivery.worker.deliver_due() == 3  # ann twice, bo once; ann's third waits
    assert sorted(target for target, _ in delivery.email.sent) == [ANN.email, ANN.email, BO.email]
    first, second, third = await delivery.rows(ANN.email)
    assert first["status"] == second["status"] == "sent"
    assert third["status"] == "pending" and third["attempts"] == 0 and third["claimed_at"] is None
    opens_at = first["claimed_at"] + timedelta(seconds=2)
    assert third["next_attempt_at"] == opens_at  # when the first of the window's two leaves it
    assert notifications("email", "deferred") == deferred_before + 1
    assert [row["status"] for row in await delivery.rows(BO.email)] == ["sent"]  # another target: unaffected

    assert await delivery.worker.deliver_due() == 0  # not before the window opens, and not counted again
    assert notifications("email", "deferred") == deferred_before + 1

    task = asyncio.create_task(delivery.worker.run())
    try:
        await eventually(lambda: _sent(delivery.pool, third["notification_id"]), timeout=6)
    finally:
        delivery.worker.stop()
        await asyncio.wait_for(task, 5)
    _, sent_at = delivery.email.sent[-1]
    assert opens_at <= sent_at < opens_at + timedelta(seconds=1.5)  # on time, though the worker polls every 30 s
    assert len(delivery.email.sent) == 4 and notifications("email", "deferred") == deferred_before + 1
    outcomes = await _outcomes(delivery.pool)
    assert sum(isinstance(o, NotificationSent) and o.target == ANN.email for o in outcomes) == 3


async def test_quiet_hours_defer_email_in_the_agreement_s_zone_unless_the_rule_allows_it(delivery: Worker) -> None:
    zone = ZoneInfo("Asia/Tokyo")  # not UTC, and no daylight saving to trip over
    local = datetime.now(zone).replace(second=0, microsecond=0)
    end = local + timedelta(hours=2)
    delivery.use(rules(quiet={"start": (local - timedelta(hours=1)).strftime("%H:%M"), "end": end.strftime("%H:%M"),
                              "channels": ["email"]}))
    await delivery.pool.execute("INSERT INTO notifier_calendars VALUES ($1, $2, now())", AGREEMENT,
                                {"timezone": "Asia/Tokyo", "working_periods": []})
    deferred_before = notifications("email", "deferred")
    webhook_deferred_before = notifications("webhook", "deferred")

    await delivery.escalate("routine", [ANN], ["email", "webhook:ops"])
    await delivery.escalate("urgent", [BO], ["email"])  # notify_in_quiet_hours: true
    assert await delivery.worker.deliver_due() == 2

    (quiet,) = await delivery.rows(ANN.email)
    assert quiet["status"] == "pending" and quiet["timezone"] == "Asia/Tokyo" and quiet["quiet_hours"]
    assert quiet["next_attempt_at"] == end  # the quiet hours' end, in Tokyo
    assert [target for target, _ in delivery.email.sent] == [BO.email]
    assert [target for target, _ in delivery.webhook.sent] == ["ops"]  # quiet hours name email only
    assert notifications("email", "deferred") == deferred_before + 1
    assert notifications("webhook", "deferred") == webhook_deferred_before


async def test_outcomes_are_counted_by_channel_and_successful_deliveries_timed(delivery: Worker) -> None:
    delivery.use(rules())
    delivery.email.failing.add(DOWN.email)
    before = {outcome: notifications("email", outcome) for outcome in ("sent", "retried", "failed", "cancelled")}
    webhook_sent = notifications("webhook", "sent")
    timed = count("accord_notifier_delivery_seconds_count", channel="email")

    await delivery.escalate("routine", [ANN, DOWN], ["email", "webhook:ops"])
    cancelled = await delivery.escalate("routine", [BO], ["email"])
    async with transaction(delivery.pool) as conn:
        assert await outbox.cancel_pending(conn, cancelled.id) == 1  # e.g. acknowledged before it went
    assert await delivery.worker.deliver_due() == 3  # ann, down (fails, retried), the webhook
    await asyncio.sleep(0.15)  # past the backoff
    assert await delivery.worker.deliver_due() == 1  # down's last attempt

    after = {outcome: notifications("email", outcome) for outcome in before}
    assert {k: after[k] - before[k] for k in before} == {"sent": 1, "retried": 1, "failed": 1, "cancelled": 1}
    assert notifications("webhook", "sent") == webhook_sent + 1
    assert count("accord_notifier_delivery_seconds_count", channel="email") == timed + 1  # the sent one only
    (dead,) = await delivery.pool.fetch("SELECT * FROM dead_letters")
    assert dead["target"] == DOWN.email and dead["attempts"] == 2
    failed = [o for o in await _outcomes(delivery.pool) if isinstance(o, NotificationFailed)]
    assert [(f.target, f.attempts) for f in failed] == [(DOWN.email, 2)]


async def test_a_batch_sent_concurrently_keeps_to_the_rate_limit_and_a_retry_claimed_with_it_counts(
    delivery: Worker,
) -> None:
    delivery.use(rules(rate=(3, 3600)))
    delivery.email.failing.add(ANN.email)
    await delivery.escalate("routine", [ANN], ["email"])
    assert await delivery.worker.deliver_due() == 1  # fails: retried after the backoff, counted once claimed again
    delivery.email.failing.clear()
    await asyncio.sleep(0.1)  # past the retry's backoff: it is due before the new ones
    for _ in range(4):
        await delivery.escalate("routine", [ANN], ["email"])
    deferred_before = notifications("email", "deferred")

    assert await delivery.worker.deliver_due() == 3  # the retry and two new ones: three claims in the window
    rows = await delivery.rows(ANN.email)
    assert sorted(row["status"] for row in rows) == ["pending", "pending", "sent", "sent", "sent"]
    claims = sorted(row["claimed_at"] for row in rows if row["status"] == "sent")
    for row in rows:
        if row["status"] == "pending":  # the window opens when the earliest of the three claims leaves it
            assert row["attempts"] == 0 and row["next_attempt_at"] == claims[0] + timedelta(seconds=3600)
    assert notifications("email", "deferred") == deferred_before + 2
    assert len(delivery.email.sent) == 3
    assert await delivery.worker.deliver_due() == 0


async def test_deferring_a_batch_counts_as_work_so_the_worker_moves_on_to_the_rows_behind_it(
    delivery: Worker,
) -> None:
    delivery.use(rules(rate=(1, 3600)))
    delivery.email.held.add(ANN.email)  # ann's send stays in flight through both looks
    await delivery.emails([ANN] * 25 + [BO])
    assert await delivery.worker.drain() == 20  # one claimed, nineteen deferred: the loop looks again at once
    assert await delivery.worker.drain() == 6  # the other five deferred, and bo's claimed
    delivery.email.release.set()
    assert await delivery.worker.deliver_due() == 0  # nothing more is due; the sends in flight end, recorded
    assert sorted(target for target, _ in delivery.email.sent) == [ANN.email, BO.email]
    assert {row["status"] for row in await delivery.rows(BO.email)} == {"sent"}


async def test_a_receiver_that_takes_its_time_holds_up_only_its_own_notifications(delivery: Worker) -> None:
    delivery.use(rules())
    delivery.email.held.add(DOWN.email)  # down's send hangs until released
    await delivery.emails([DOWN])
    task = asyncio.create_task(delivery.worker.run())
    try:
        await eventually(lambda: delivery.pool.fetchval(
            "SELECT status = 'sending' FROM deliveries WHERE target = $1", DOWN.email), timeout=5)
        await delivery.emails([ANN, BO])  # due while down's send is in flight
        delivery.worker.wake()
        await eventually(lambda: delivery.pool.fetchval(
            "SELECT count(*) = 2 FROM deliveries WHERE status = 'sent'"), timeout=5)
        assert [row["status"] for row in await delivery.rows(DOWN.email)] == ["sending"]
    finally:
        delivery.email.release.set()
    await eventually(lambda: delivery.pool.fetchval(
        "SELECT status = 'sent' FROM deliveries WHERE target = $1", DOWN.email), timeout=5)
    delivery.worker.stop()
    await asyncio.wait_for(task, 5)
    sent = [o for o in await _outcomes(delivery.pool) if isinstance(o, NotificationSent)]
    assert sorted(o.target for o in sent) == sorted([DOWN.email, ANN.email, BO.email])


async def test_a_stopping_worker_lets_its_sends_end_and_records_them(delivery: Worker) -> None:
    delivery.use(rules())
    delivery.email.held.add(DOWN.email)
    await delivery.emails([DOWN])
    task = asyncio.create_task(delivery.worker.run())
    await eventually(lambda: delivery.pool.fetchval(
        "SELECT status = 'sending' FROM deliveries WHERE target = $1", DOWN.email), timeout=5)
    delivery.worker.stop()
    await asyncio.sleep(0.05)
    assert not task.done()  # waiting for the send in flight
    delivery.email.release.set()
    await asyncio.wait_for(task, 5)
    assert [row["status"] for row in await delivery.rows(DOWN.email)] == ["sent"]


async def test_two_workers_sending_batches_concurrently_send_each_notification_once(
    delivery: Worker, database_url: str, schema: str,
) -> None:
    delivery.use(rules(rate=(1000, 3600), in_flight=7))
    people = [person(f"p{n}") for n in range(60)]
    for n in range(0, 60, 2):
        await delivery.escalate("routine", people[n:n + 2], ["email", "webhook:ops"])  # 90 notifications
    other = await asyncpg.create_pool(database_url, server_settings={"search_path": schema}, min_size=1, max_size=4,
                                      init=lambda conn: conn.set_type_codec(
                                          "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"))
    assert other is not None
    replica = DeliveryWorker(other, EventStore(other, source="/accord/notifier"), delivery.notifier)
    workers = [DeliveryWorker(delivery.pool, delivery.store, delivery.notifier), replica]
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        await eventually(lambda: delivery.pool.fetchval(
            "SELECT count(*) = 90 FROM deliveries WHERE status = 'sent'"), timeout=20)
    finally:
        for worker in workers:
            worker.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        await other.close()
    sent = delivery.email.notifications + delivery.webhook.notifications
    assert len(sent) == len(set(sent)) == 90
    outcomes = [o for o in await _outcomes(delivery.pool) if isinstance(o, NotificationSent)]
    assert sorted(o.notification_id for o in outcomes) == sorted(sent)  # recorded once each
    assert {row["attempts"] for row in await delivery.pool.fetch("SELECT attempts FROM deliveries")} == {1}


async def test_outcomes_are_recorded_as_sends_end_not_when_the_slowest_of_the_batch_ends(delivery: Worker) -> None:
    delivery.use(rules())
    delivery.email.held.add(DOWN.email)
    await delivery.escalate("routine", [ANN, BO, DOWN], ["email"])
    batch = asyncio.create_task(delivery.worker.deliver_due())
    try:
        await eventually(lambda: delivery.pool.fetchval(
            "SELECT count(*) = 2 FROM deliveries WHERE status = 'sent'"), timeout=5)
        (held,) = await delivery.rows(DOWN.email)
        assert held["status"] == "sending" and not batch.done()
    finally:
        delivery.email.release.set()
    assert await batch == 3
    assert [row["status"] for row in await delivery.rows(DOWN.email)] == ["sent"]
    sent = [o for o in await _outcomes(delivery.pool) if isinstance(o, NotificationSent)]
    assert sorted(o.target for o in sent) == sorted([ANN.email, BO.email, DOWN.email])


async def _sent(pool: asyncpg.Pool, notification_id: uuid.UUID) -> bool:
    return bool(await pool.fetchval("SELECT status = 'sent' FROM deliveries WHERE notification_id = $1",
                                    notification_id))


async def _outcomes(pool: asyncpg.Pool) -> list[Any]:
    """The outcomes recorded on the escalations' streams (read directly: `read_all` waits for every
    older transaction in the cluster)."""
    rows = await pool.fetch("SELECT event_type, data FROM events WHERE event_type = ANY($1::text[])"
                            " ORDER BY global_position",
                            [NotificationSent.event_type(), NotificationFailed.event_type()])
    return [EVENTS.decode(row["event_type"], row["data"]) for row in rows]


async def test_the_rules_bound_the_sends_in_flight(delivery: Worker) -> None:
    delivery.use(rules(rate=(1000, 3600), in_flight=3))
    delivery.email.held.update(p.email for p in (ANN, BO, DOWN))
    await delivery.emails([ANN, BO, DOWN, person("eve")])
    assert await delivery.worker.drain() == 3  # three sends start and hang
    assert await delivery.worker.drain() == 0  # no room: eve waits, unclaimed
    assert [row["status"] for row in await delivery.rows("eve@provider.test")] == ["pending"]
    delivery.email.release.set()
    assert await delivery.worker.deliver_due() == 1  # eve once there is room; every send recorded
    assert await delivery.pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'") == 4
