"""Faults under a steady load, over the real servers, with the services as real processes.

The agreements service (``accord-agreements serve``) takes 80 commands/s over HTTP (draft, propose,
accept, accept: each agreement becomes active); the queries service (``accord-queries serve``) keeps
a replica of the agreements from the bus; a plain aio-pika subscriber bound with '#' records every
event id published. Mid-load one fault strikes: the agreements process is killed with SIGKILL and
restarted, RabbitMQ is restarted, or Postgres terminates both services' connections. The load goes
on, then stops; once the system settled (bounded waits) the test asserts:

(a) every committed event was published at least once (the subscriber saw every id in the store);
(b) nothing else was published (no uncommitted or rolled-back event);
(c) every command answered 2xx has its events in the store, at the version it reported;
(d) read models equal a fold of the event store: the agreements service's own read models equal what
    ``accord-agreements rebuild`` makes of its store, and its agreement summaries and the queries
    service's replica (parties, terms, identity) equal a fold of the events computed here;
(e) each consumer's inbox holds exactly the events it subscribes to, once each, and nothing was
    dead-lettered; the services' logs hold no error.

"No notification sent twice" is not covered here: the notifier's own tests cover it
(tests/e2e/test_notifier.py: duplicates and repeats notify nobody again; a restart mid-chain sends
each level once).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from services.agreements.main import DEFINITION as AGREEMENTS
from services.queries.main import DEFINITION as QUERIES
from tests.conftest import RUN_ID
from tests.faults.harness import (
    BIN,
    Deployment,
    LoadGenerator,
    ServiceProcess,
    Subscriber,
    bootstrap_party,
    delete_broker_objects,
    queue_depths,
    restart_broker,
    run_command,
    terminate_backends,
    wait_for_quiescence,
    within,
)
from tests.support import rows_of

pytestmark = [pytest.mark.servers, pytest.mark.faults]

SET_UP_BUDGET = 40.0  # seconds to start the subscriber and both services, and register the two parties
TEST_BUDGET = 55.0  # seconds for one test's load, fault and checks (set-up and clean-up aside)
WARM_UP = 200  # commands acknowledged before the fault strikes
TERMINATIONS = 10  # rounds of pg_terminate_backend, 0.3 s apart
AFTER = 240  # commands acknowledged after recovery before the load stops


@dataclass
class Scene:
    deployment: Deployment
    db: asyncpg.Connection  # the test's own connection (its application_name is not a service's)
    subscriber: Subscriber
    agreements: ServiceProcess
    queries: ServiceProcess
    load: LoadGenerator
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def a(self) -> str:
        return self.deployment.schemas["agreements"]

    @property
    def q(self) -> str:
        return self.deployment.schemas["queries"]


def queues_of(prefix: str) -> dict[str, list[str]]:
    """Each service's consumer queues and their dead-letter queues, by the runtime's naming rule."""
    return {service: [f"{prefix}.{service}.{c.name}{suffix}" for c in definition.consumers for suffix in ("", ".dlq")]
            for service, definition in (("agreements", AGREEMENTS), ("queries", QUERIES))}


async def _json_codec(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


@pytest.fixture
async def scene(database_url: str, amqp_url: str, tmp_path: Path) -> AsyncIterator[Scene]:
    tag = uuid.uuid4().hex[:8]
    deployment = Deployment(
        database_url=database_url, amqp_url=amqp_url, exchange=f"accord.faults.{RUN_ID}.{tag}",
        queue_prefix=f"faults.{RUN_ID}.{tag}", schemas={"agreements": f"fa_{tag}", "queries": f"fq_{tag}"})
    db = await asyncpg.connect(database_url, server_settings={"application_name": "accord-faults-verifier"})
    await _json_codec(db)
    subscriber = Subscriber(amqp_url, deployment.exchange, f"{deployment.queue_prefix}.subscriber")
    agreements = ServiceProcess(deployment, "agreements", tmp_path)
    queries = ServiceProcess(deployment, "queries", tmp_path)
    started = time.monotonic()
    try:
        async with asyncio.timeout(SET_UP_BUDGET):
            await subscriber.start()  # its queue exists before anything is published
            # The queries service declares its queues before the agreements service publishes anything.
            client, _ = await asyncio.gather(bootstrap_party(agreements.env, "Client"), queries.start())
            provider = await bootstrap_party(agreements.env, "Provider")
            await agreements.start()
        load = LoadGenerator(agreements.base_url, client, provider)
        yield Scene(deployment, db, subscriber, agreements, queries, load, {"set-up": time.monotonic() - started})
    finally:
        for process in (agreements, queries):
            await process.stop()
        await subscriber.close()
        queues = [q for qs in queues_of(deployment.queue_prefix).values() for q in qs] + [subscriber.queue_name]
        await delete_broker_objects(amqp_url, deployment.exchange, queues)
        await db.close()


# --- the scenario every fault shares -------------------------------------------------------------

async def under_load(scene: Scene, fault: Callable[[], Awaitable[None]], *,
                     tolerated_errors: frozenset[str] = frozenset()) -> None:
    """Warm up, strike, recover, go on, stop the load, settle, then check (a)-(e) (error log lines
    whose event is in `tolerated_errors` aside)."""
    async with asyncio.timeout(TEST_BUDGET):
        load = scene.load
        await load.start()
        try:
            began = time.monotonic()
            await load.wait_acknowledged_since(began, WARM_UP)
            struck = time.monotonic()
            await fault()
            recovered = time.monotonic()
            scene.timings["fault and recovery"] = recovered - struck
            await load.wait_acknowledged_since(recovered, AFTER, timeout=20)
        finally:
            await load.stop()
        scene.timings["load"] = time.monotonic() - began
        scene.timings["settling"] = await wait_for_quiescence(scene.db, scene.a, scene.subscriber)
        await check(scene, tolerated_errors)
    print(f"\n{len(load.acknowledged)} commands acknowledged, failures {dict(load.failures)},"
          f" {sum(scene.subscriber.received.values())} deliveries of {len(scene.subscriber.received)} events,"
          f" timings (s) { {k: round(v, 2) for k, v in scene.timings.items()} }")


async def check(scene: Scene, tolerated_errors: frozenset[str]) -> None:
    started = time.monotonic()
    events = await scene.db.fetch(
        f"SELECT event_id, stream_id, stream_version, event_type, data, correlation_id, recorded_at"
        f" FROM {scene.a}.events ORDER BY global_position")
    stored = {str(e["event_id"]) for e in events}
    received = set(scene.subscriber.received)
    # (a) every committed event published at least once; (b) nothing published that was not committed
    assert not stored - received, f"committed but never published: {sorted(stored - received)[:10]}"
    assert not received - stored, f"published but not in the store: {sorted(received - stored)[:10]}"
    # (c) every acknowledged command's events are in the store
    assert not (lost := acknowledged_but_missing(scene, events)), f"acknowledged commands without their events: {lost}"
    # (d) read models equal a fold of the event store
    await rebuilt_read_models_are_unchanged(scene)
    expected_summaries, expected_parties, expected_terms = fold(events)
    assert await summaries(scene) == expected_summaries
    await queries_replica_equals_fold(scene, expected_parties, expected_terms)
    # (e) each event applied once by each consumer; nothing dead-lettered; no error logged
    await inboxes_hold_each_subscribed_event_once(scene, events)
    queues = queues_of(scene.deployment.queue_prefix)
    depths = await queue_depths(scene.deployment.amqp_url, queues["agreements"] + queues["queries"])
    assert set(depths.values()) == {0}, f"messages left or dead-lettered: {depths}"
    for process in (scene.agreements, scene.queries):
        errors = [line for line in process.log_lines()
                  if line.get("level") in ("error", "critical") and line.get("event") not in tolerated_errors]
        assert not errors, f"{process.service} logged errors: {errors[:3]}"
    scene.timings["checks"] = time.monotonic() - started


def acknowledged_but_missing(scene: Scene, events: list[asyncpg.Record]) -> list[str]:
    """(c): a 2xx command's events carry its correlation id, in its agreement's stream, up to the
    version its response reported."""
    by_correlation: dict[uuid.UUID, list[asyncpg.Record]] = {}
    for event in events:
        by_correlation.setdefault(event["correlation_id"], []).append(event)
    expected_types = {"draft": ["AgreementDrafted"], "propose": ["AgreementProposed"],
                      "accept_client": ["AgreementAccepted"],
                      "accept_provider": ["AgreementAccepted", "AgreementActivated"]}
    missing = []
    for command in scene.load.acknowledged:
        found = by_correlation.get(command.correlation_id, [])
        written = ([e["stream_id"] for e in found], [name_of(e["event_type"]) for e in found],
                   max((e["stream_version"] for e in found), default=None))
        wanted = ([f"agreement-{command.agreement_id}"] * len(expected_types[command.command]),
                  expected_types[command.command], command.version)
        if written != wanted:
            missing.append(f"{command.command} {command.agreement_id} v{command.version}: found {written}")
    return missing[:10]


def name_of(event_type: str) -> str:
    """``accord.agreements.AgreementDrafted.v1`` → ``AgreementDrafted``."""
    return event_type.split(".")[2]


# --- (d) read models and the fold ------------------------------------------------------------------

AGREEMENTS_READ_MODELS = ("agreement_summaries", "agreement_history", "agreement_documents", "agreement_contacts",
                          "organisations", "users", "api_tokens")
IDENTITY = ("organisations", "users", "api_tokens")


async def rebuilt_read_models_are_unchanged(scene: Scene) -> None:
    """The incrementally built read models equal those ``accord-agreements rebuild`` replays from the store."""
    before = {name: await rows_of(scene.db, f"{scene.a}.{name}") for name in AGREEMENTS_READ_MODELS}
    started = time.monotonic()
    await run_command(str(BIN / "accord-agreements"), "rebuild", env=scene.agreements.env)
    scene.timings["rebuild"] = time.monotonic() - started
    for name in AGREEMENTS_READ_MODELS:
        after = await rows_of(scene.db, f"{scene.a}.{name}")
        assert after == before[name], (f"{name}: {len(before[name])} rows incrementally, {len(after)} rebuilt;"
                                       f" only incremental: {sorted(set(before[name]) - set(after))[:3]},"
                                       f" only rebuilt: {sorted(set(after) - set(before[name]))[:3]}")


Summary = tuple[str, bool, bool, int]  # status, client accepted, provider accepted, stream version
Parties = tuple[uuid.UUID, uuid.UUID, str, str, datetime]  # client, provider, title, status, updated_at
Terms = tuple[uuid.UUID, uuid.UUID]

#: The lifecycle status each event leaves an agreement in, as every service's parties replica keeps it.
STATUS_AFTER = {"AgreementDrafted": "draft", "AgreementProposed": "proposed", "AgreementActivated": "active"}


def fold(events: list[asyncpg.Record]) -> tuple[dict[uuid.UUID, Summary], dict[uuid.UUID, Parties],
                                                dict[uuid.UUID, Terms]]:
    """What the read models must hold, folded here from the agreements' events (stream order)."""
    summaries: dict[uuid.UUID, Summary] = {}
    parties: dict[uuid.UUID, Parties] = {}
    terms: dict[uuid.UUID, Terms] = {}
    for event in sorted(events, key=lambda e: (e["stream_id"], e["stream_version"])):
        if not event["stream_id"].startswith("agreement-"):
            continue  # organisations and users: the identity tables, compared between the services
        name, data, version = name_of(event["event_type"]), event["data"], event["stream_version"]
        agreement = uuid.UUID(data["agreement_id"])
        if name == "AgreementDrafted":
            client, provider = uuid.UUID(data["client_organisation_id"]), uuid.UUID(data["provider_organisation_id"])
            summaries[agreement] = ("draft", False, False, version)
            parties[agreement] = (client, provider, data["title"], "draft", event["recorded_at"])
            terms[agreement] = (client, provider)
            continue
        status, client_accepted, provider_accepted, _ = summaries[agreement]
        if name == "AgreementProposed":
            client_accepted = provider_accepted = False
        elif name == "AgreementAccepted":
            client_accepted = client_accepted or data["side"] == "client"
            provider_accepted = provider_accepted or data["side"] == "provider"
        elif name != "AgreementActivated":
            raise AssertionError(f"the load does not make {name}: extend the fold")
        status = STATUS_AFTER.get(name, status)
        summaries[agreement] = (status, client_accepted, provider_accepted, version)
        if name in STATUS_AFTER:
            parties[agreement] = (*parties[agreement][:3], status, event["recorded_at"])
    return summaries, parties, terms


async def summaries(scene: Scene) -> dict[uuid.UUID, Summary]:
    rows = await scene.db.fetch(f"SELECT agreement_id, status, client_accepted, provider_accepted, stream_version"
                                f" FROM {scene.a}.agreement_summaries")
    return {r["agreement_id"]: (r["status"], r["client_accepted"], r["provider_accepted"], r["stream_version"])
            for r in rows}


async def queries_replica_equals_fold(scene: Scene, parties: dict[uuid.UUID, Parties],
                                      terms: dict[uuid.UUID, Terms]) -> None:
    """The queries service's replica converges (bounded) to the fold, and its identity tables to the
    agreements service's own."""
    async def replica() -> dict[str, Any]:
        db, q = scene.db, scene.q
        rows = await db.fetch(f"SELECT * FROM {q}.agreement_parties")
        found: dict[str, Any] = {
            "parties": {r["agreement_id"]: (r["client_organisation_id"], r["provider_organisation_id"], r["title"],
                                            r["status"], r["updated_at"]) for r in rows},
            "terms": {r["agreement_id"]: (r["client_organisation_id"], r["provider_organisation_id"])
                      for r in await db.fetch(f"SELECT * FROM {q}.agreement_terms")},
            "policies": await db.fetchval(f"SELECT count(*) FROM {q}.sla_policy_versions"),
        }
        for name in IDENTITY:
            found[name] = await rows_of(db, f"{q}.{name}")
        return found

    expected: dict[str, Any] = {"parties": parties, "terms": terms, "policies": 0}
    for name in IDENTITY:
        expected[name] = await rows_of(scene.db, f"{scene.a}.{name}")
    last: dict[str, Any] = {}

    async def converged() -> bool:
        nonlocal last
        last = await replica()
        return last == expected

    try:
        await within(converged, timeout=15, interval=0.2, what="the queries replica equals the fold")
    except AssertionError:
        differences = {key: diff(expected[key], last[key]) for key in expected if expected[key] != last[key]}
        raise AssertionError(f"the queries replica differs from the fold: {differences}") from None


def diff(expected: Any, found: Any) -> str:
    if isinstance(expected, dict) and isinstance(found, dict):
        wrong = {k: (expected.get(k), found.get(k)) for k in expected.keys() | found.keys()
                 if expected.get(k) != found.get(k)}
        return f"{len(wrong)} of {len(expected)} differ (expected, found), e.g. {list(wrong.items())[:3]}"
    return f"expected {expected!r:.300}, found {found!r:.300}"


# --- (e) the consumers applied each event once ---------------------------------------------------

async def inboxes_hold_each_subscribed_event_once(scene: Scene, events: list[asyncpg.Record]) -> None:
    """Each queries consumer's inbox (primary key: consumer, event id) holds exactly the stored events of
    the types it handles — none missing, none extra; its handlers ran in the same transaction."""
    for consumer in QUERIES.consumers:
        handles = {t for handler in consumer.handlers for t in handler.handles}
        expected = {e["event_id"] for e in events if e["event_type"] in handles}

        async def inbox(name: str = consumer.name) -> set[uuid.UUID]:
            rows = await scene.db.fetch(f"SELECT event_id FROM {scene.q}.inbox WHERE consumer = $1", name)
            return {r["event_id"] for r in rows}

        async def complete(found: Callable[[], Awaitable[set[uuid.UUID]]] = inbox,
                           wanted: set[uuid.UUID] = expected) -> bool:
            return await found() == wanted

        await within(complete, timeout=10, what=f"the {consumer.name} inbox holds every subscribed event")
    counts = await scene.db.fetch(f"SELECT consumer, count(*) AS n, count(DISTINCT event_id) AS d"
                                  f" FROM {scene.q}.inbox GROUP BY consumer")
    assert all(r["n"] == r["d"] for r in counts), counts


# --- the faults ------------------------------------------------------------------------------------

async def test_the_agreements_process_killed_and_restarted_mid_load(scene: Scene) -> None:
    """SIGKILL mid-load (transactions and publishes in flight), a restart with the same environment."""
    async def kill_and_restart() -> None:
        await scene.agreements.kill()
        await asyncio.sleep(0.5)  # the load meets a refused connection meanwhile
        await scene.agreements.start()

    await under_load(scene, kill_and_restart)
    assert scene.load.failures, "the load never noticed the kill"


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl of the local broker")
async def test_a_broker_restart_mid_load(scene: Scene) -> None:
    """RabbitMQ stops for about two seconds (plus the time stop_app and start_app take) mid-load."""
    if urlsplit(scene.deployment.amqp_url).hostname not in ("127.0.0.1", "localhost"):
        pytest.skip("needs a local RabbitMQ that rabbitmqctl controls")

    async def restart() -> None:
        scene.timings["broker down"] = await restart_broker(down_for=2.0)
        for process in (scene.agreements, scene.queries):
            await process.wait_ready()

    await under_load(scene, restart)


class WorkerDied(Exception):
    """A service's background worker died and stays dead: the service never gets ready again."""


async def test_postgres_terminating_the_services_connections_mid_load(scene: Scene) -> None:
    """Both services' connections are terminated ten times, 0.3 s apart. A service whose background
    worker died is restarted (as an orchestrator would, it never gets ready) so that (a)-(e) are still
    checked; the test then fails with `WorkerDied` (it once did: the relay died on asyncpg's
    InternalClientError, which its error list lacked)."""
    names = [scene.deployment.application_name(s) for s in ("agreements", "queries")]
    terminated: list[int] = []
    died: dict[str, list[str]] = {}

    async def terminate() -> None:
        for _ in range(TERMINATIONS):
            terminated.append(await terminate_backends(scene.deployment.database_url, names))
            await asyncio.sleep(0.3)
        for process in (scene.agreements, scene.queries):
            async def ready_or_dead(process: ServiceProcess = process) -> bool:
                return bool(process.dead_workers()) or await process.ready()

            await within(ready_or_dead, timeout=15, what=f"{process.service} ready again")
            if process.dead_workers():
                died[process.service] = process.dead_workers()
                await process.stop()
                await process.start()

    await under_load(scene, terminate, tolerated_errors=frozenset({"background worker failed"}))
    assert terminated[0] > 0, terminated
    if died:
        raise WorkerDied(f"background workers died and stayed dead: {died}")
