"""The queries service against the real servers, next to the agreements service, over RabbitMQ:
a query's whole life over HTTP (with the clocks pausing and resuming), per-side 401/403/404/409/422,
overdue deadlines published on the bus, timers surviving a restart, and the requirement
clarification round trip through both services."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
from aio_pika.exceptions import ChannelNotFoundEntity
from prometheus_client import generate_latest

from accord_runtime.consumer import BusConsumer
from accord_runtime.eventstore import Metadata
from accord_runtime.identity import Principal
from accord_runtime.service import ServiceRuntime
from accord_runtime.settings import ServiceSettings
from contracts import CloudEvent
from contracts.agreements import AgreementDrafted
from contracts.queries import QueryAtRisk, QueryOverdue
from services.queries import handlers as query_handlers
from services.queries.commands import RaiseQuery
from services.queries.main import DEFINITION
from services.queries.metrics import refresh_gauges
from tests.e2e.conftest import Party, delete_broker_objects, register_party
from tests.support import eventually

pytestmark = pytest.mark.servers

ALL_DAY = {"timezone": "UTC", "working_periods": [
    {"weekday": d, "start": "00:00:00", "end": "23:59:59.999999"} for d in range(7)]}
SLA_POLICY = {"calendar": ALL_DAY, "targets": [
    {"priority": "normal", "first_response_minutes": 60, "resolution_minutes": 240},
    {"priority": "urgent", "first_response_minutes": 1, "resolution_minutes": 2, "warn_at": [0.5]}]}


@contextlib.asynccontextmanager
async def running(settings: ServiceSettings) -> AsyncIterator[tuple[ServiceRuntime, httpx.AsyncClient]]:
    """A queries runtime (HTTP app with its lifespan) and a client of its API."""
    runtime = ServiceRuntime(DEFINITION, settings)
    app = runtime.app()
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport,
                                                                   base_url="http://queries") as client:
        yield runtime, client


@pytest.fixture
def queries_settings(settings: ServiceSettings) -> ServiceSettings:
    return settings.model_copy(update={"service_name": "queries", "database_schema": f"q_{uuid.uuid4().hex[:12]}"})


@pytest.fixture
async def queries(queries_settings: ServiceSettings) -> AsyncIterator[tuple[ServiceRuntime, httpx.AsyncClient]]:
    async with running(queries_settings) as started:
        yield started
    await delete_broker_objects(queries_settings.amqp_url, started[0])


@dataclass
class World:
    """Both services, the two parties and a stranger, and one agreement between the parties."""

    queries: ServiceRuntime
    qapi: httpx.AsyncClient
    agreements: ServiceRuntime
    aapi: httpx.AsyncClient
    client: Party
    provider: Party
    stranger: Party
    agreement_id: str = ""

    async def call(self, api: httpx.AsyncClient, method: str, url: str, by: Party | None,
                   body: dict[str, Any] | None = None, expect: int = 200, **params: Any) -> Any:
        response = await api.request(method, url, headers=by.headers if by else {}, json=body, params=params)
        assert response.status_code == expect, (method, url, response.status_code, response.text)
        return response.json()

    async def q(self, method: str, url: str, by: Party | None, body: dict[str, Any] | None = None,
                expect: int = 200, **params: Any) -> Any:
        return await self.call(self.qapi, method, url, by, body, expect, **params)

    async def a(self, method: str, url: str, by: Party, body: dict[str, Any] | None = None,
                expect: int = 200) -> Any:
        return await self.call(self.aapi, method, f"/agreements/{self.agreement_id}{url}", by, body, expect)

    async def draft(self) -> None:
        drafted = await self.call(self.aapi, "POST", "/agreements", self.client, {
            "title": "Outsourced IT", "client_organisation_id": str(self.client.organisation_id),
            "provider_organisation_id": str(self.provider.organisation_id)}, expect=201)
        self.agreement_id = drafted["agreement_id"]

    async def activate(self) -> None:
        await self.a("POST", "/sla-policies", self.provider, {"policy": SLA_POLICY}, expect=201)
        await self.a("POST", "/proposal", self.client)
        await self.a("POST", "/acceptance", self.client)
        await self.a("POST", "/acceptance", self.provider)
        pool = self.queries.pool
        await eventually(lambda: pool.fetchval(
            "SELECT status = 'active' FROM agreement_parties WHERE agreement_id = $1", uuid.UUID(self.agreement_id)))
        await eventually(lambda: pool.fetchval(
            "SELECT count(*) FROM sla_policy_versions WHERE agreement_id = $1", uuid.UUID(self.agreement_id)))
        # Back-date the replica's policy (the agreements service never would) so that queries raised
        # in the past (`raise_backdated`) fall under it and have deadlines already due.
        await pool.execute("UPDATE sla_policy_versions SET effective_from = effective_from - interval '1 hour'")

    async def detail(self, query_id: str, check: Any = None) -> Any:
        """The query's read model once `check(detail)` holds (default: it exists)."""
        async def found() -> Any:
            response = await self.qapi.get(f"/queries/{query_id}", headers=self.client.headers)
            if response.status_code != 200:
                return None
            body = response.json()
            return body if check is None or check(body) else None

        return await eventually(found)


@pytest.fixture
async def world(queries: tuple[ServiceRuntime, httpx.AsyncClient], agreements: ServiceRuntime,
                api: httpx.AsyncClient) -> World:
    """The queries runtime starts first (its queues exist before any event is published)."""
    parties = [await register_party(agreements, name) for name in ("client", "provider", "stranger")]
    runtime, qapi = queries
    await eventually(lambda: runtime.pool.fetchval("SELECT count(*) = 3 FROM api_tokens"))
    return World(runtime, qapi, agreements, api, *parties)


@contextlib.asynccontextmanager
async def subscriber(amqp_connection: aio_pika.abc.AbstractRobustConnection, exchange_name: str,
                     *routing_keys: str) -> AsyncIterator[asyncio.Queue[CloudEvent]]:
    """A plain AMQP subscriber, as any other system would be: an exclusive queue on the exchange."""
    channel = await amqp_connection.channel()
    exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(exclusive=True)
    for key in routing_keys:
        await queue.bind(exchange, key)
    received: asyncio.Queue[CloudEvent] = asyncio.Queue()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            await received.put(CloudEvent.model_validate_json(message.body))

    await queue.consume(on_message)
    try:
        yield received
    finally:
        await channel.close()


async def raise_backdated(world: World, by: Party, seconds_ago: float, subject: str = "Server down?") -> uuid.UUID:
    """An urgent query raised `seconds_ago` (through the handler: HTTP always raises now)."""
    ctx = query_handlers.Context(world.queries.store, world.queries.pool)
    raised = await query_handlers.raise_query(
        ctx, uuid.UUID(world.agreement_id), RaiseQuery(priority="urgent", subject=subject, body="Is it?"),
        Metadata.new(f"user:{by.user_id}"), Principal(by.user_id, by.organisation_id),
        at=datetime.now(UTC) - timedelta(seconds=seconds_ago))
    return raised.query_id


async def test_a_query_over_http_with_its_clocks_pausing_and_resuming(world: World) -> None:
    w, client, provider, stranger = world, world.client, world.provider, world.stranger
    await w.draft()
    url = f"/agreements/{w.agreement_id}/queries"
    ask = {"priority": "normal", "subject": "Backup schedule", "body": "When do backups run?",
           "addressee_role": "service manager"}
    await eventually(lambda: w.queries.pool.fetchval("SELECT count(*) FROM agreement_parties"))
    refused = await w.q("POST", url, client, ask, expect=409)
    assert "active agreement" in refused["detail"]
    await w.activate()

    # who may raise: only the parties, authenticated, of a known agreement, with valid content
    await w.q("POST", url, None, ask, expect=401)
    assert (await w.q("POST", url, stranger, ask, expect=403))["detail"] == \
        "your organisation is not a party to this agreement"
    await w.q("POST", f"/agreements/{uuid.uuid4()}/queries", client, ask, expect=404)
    await w.q("POST", url, client, {**ask, "about_kind": "requirement"}, expect=422)
    await w.q("POST", url, client, {**ask, "subject": " "}, expect=422)

    raised = await w.q("POST", url, client, ask, expect=201)
    query_id, q = raised["query_id"], f"/queries/{raised['query_id']}"
    assert raised["status"] == "open" and raised["next_deadline_at"] is not None
    timer = "SELECT due_at FROM timers WHERE kind = 'queries.deadline' AND key = $1 AND fired_at IS NULL"
    first_due = await w.queries.pool.fetchval(timer, query_id)
    assert first_due is not None  # the first warning point, 30 of 60 minutes in

    # a thread: either side comments; only the answering side asks for information, pausing the clocks
    await w.q("POST", f"{q}/comments", provider, {"body": "Looking into it"}, expect=201)
    await w.q("POST", f"{q}/comments", stranger, {"body": "Hi"}, expect=403)
    wrong = await w.q("POST", f"{q}/information-requests", client, {"reason": "r"}, expect=403)
    assert wrong["detail"] == "only the answering side (provider) can request information"
    await w.q("POST", f"{q}/information-requests", provider, {"reason": "Which servers?"}, expect=201)
    assert await w.queries.pool.fetchval(timer, query_id) is None  # paused clocks have no deadlines
    paused = await w.detail(query_id, lambda d: d["status"] == "awaiting_information")
    assert paused["first_response_state"] == "paused" and paused["first_response_due_at"] is None
    await w.q("POST", f"{q}/answer", provider, {"answer": "too early"}, expect=200)  # answering ends the wait
    await w.q("POST", f"{q}/reopening", client, {"reason": "Not answered: which backups?"})
    await w.q("POST", f"{q}/information-requests", provider, {"reason": "Which servers?"}, expect=201)
    await asyncio.sleep(0.2)
    resumed = await w.q("POST", f"{q}/information", client, {"body": "The database servers"})
    assert resumed["status"] == "open"
    # the resolution clock runs again, due later by the time it was paused
    assert await w.queries.pool.fetchval(timer, query_id) is not None

    await w.q("POST", f"{q}/answer", client, {"answer": "a"}, expect=403)
    await w.q("POST", f"{q}/answer", provider, {"answer": "Nightly at 02:00 UTC"})
    await w.q("POST", f"{q}/closure", provider, expect=403)
    await w.q("POST", f"{q}/closure", client)
    assert "it is closed" in (await w.q("POST", f"{q}/closure", client, expect=409))["detail"]
    await w.q("POST", f"{q}/withdrawal", client, expect=409)
    await w.q("POST", f"/queries/{uuid.uuid4()}/answer", provider, {"answer": "a"}, expect=404)
    assert await w.queries.pool.fetchval(timer, query_id) is None

    detail = await w.detail(query_id, lambda d: d["status"] == "closed")
    assert [t["kind"] for t in detail["thread"]] == [
        "question", "comment", "information_request", "answer", "reopen", "information_request", "information",
        "answer"]
    assert [p["kind"] for p in detail["pauses"]] == [
        "information_requested", "answered", "information_requested", "answered"]
    assert all(p["ended_at"] is not None and p["business_seconds"] is not None for p in detail["pauses"])
    assert detail["pauses"][2]["clocks"] == ["resolution"]  # first response had stopped at the first answer
    history = detail["clock_history"]
    assert history[0]["event_type"] == "QueryRaised" and history[0]["first_response_state"] == "running"
    assert history[2]["first_response_state"] == "paused"  # information requested
    assert history[-1]["resolution_state"] == "stopped"
    assert detail["first_response_business_seconds"] is not None and detail["addressee_role"] == "service manager"
    await w.qapi.get(f"/queries/{query_id}", headers=stranger.headers)
    assert (await w.qapi.get(f"/queries/{query_id}", headers=stranger.headers)).status_code == 403

    # lists, filters, pagination and statistics
    second = await w.q("POST", url, provider, {**ask, "priority": "high", "subject": "Invoice"}, expect=201)
    await w.detail(second["query_id"])
    everything = await w.q("GET", url, client)
    assert everything["total"] == 2 and everything["items"][0]["query_id"] == second["query_id"]
    page = await w.q("GET", url, client, limit=1, offset=1)
    assert [i["query_id"] for i in page["items"]] == [query_id] and page["total"] == 2
    assert [i["query_id"] for i in (await w.q("GET", url, client, side="client"))["items"]] == [second["query_id"]]
    assert (await w.q("GET", url, client, status="closed"))["items"][0]["query_id"] == query_id
    assert (await w.q("GET", url, client, status="unfinished", priority="high"))["total"] == 1
    await w.q("GET", url, client, status="bogus", expect=422)
    await w.q("GET", url, stranger, expect=403)
    stats = await w.q("GET", f"/agreements/{w.agreement_id}/query-stats", provider)
    by_side = {s["side"]: s for s in stats["sides"]}
    assert by_side["provider"]["answered"] == 1 and by_side["provider"]["within_sla_share"] == 1.0
    assert by_side["client"]["unfinished"] == 1 and by_side["client"]["p50_business_seconds"] is None

    # what-if: a one-minute first response would not have changed a query answered within seconds
    proposed = {"calendar": ALL_DAY, "targets": [
        {"priority": p, "first_response_minutes": 1, "resolution_minutes": 1} for p in ("normal", "high")]}
    report = await w.q("POST", f"/agreements/{w.agreement_id}/sla-what-if", client, {"policy": proposed})
    assert {p["priority"]: p["count"] for p in report["priorities"]} == {"normal": 1, "high": 1}


async def test_overdue_queries_are_published_on_the_bus_and_listed(
    world: World, amqp_connection: aio_pika.abc.AbstractRobustConnection, exchange_name: str,
) -> None:
    w = world
    await w.draft()
    await w.activate()
    keys = (QueryOverdue.routing_key(), QueryAtRisk.routing_key())
    async with subscriber(amqp_connection, exchange_name, *keys) as received:
        query_id = await raise_backdated(w, w.client, seconds_ago=61)  # 1-minute first response, 2-minute resolution
        got = [await asyncio.wait_for(received.get(), 10) for _ in range(2)]
    by_type = {e.type: e for e in got}
    overdue = by_type[QueryOverdue.event_type()]
    assert overdue.data["query_id"] == str(query_id) and overdue.data["clock"] == "first_response"
    assert overdue.actor == "system:queries"
    assert by_type[QueryAtRisk.event_type()].data["clock"] == "resolution"

    base = f"/agreements/{w.agreement_id}/queries"
    listed = await eventually(lambda: _total(w, f"{base}/overdue"))
    assert listed["items"][0]["query_id"] == str(query_id) and listed["items"][0]["overdue"] is True
    assert (await w.q("GET", f"{base}/at-risk", w.provider))["total"] == 0  # overdue is not "at risk"
    await refresh_gauges(w.queries.pool)
    scraped = generate_latest().decode()
    assert 'accord_queries_overdue{priority="urgent",side="provider"} 1.0' in scraped
    assert 'accord_queries_went_overdue_total{clock="first_response",priority="urgent",side="provider"}' in scraped
    metrics = await w.qapi.get("/metrics")
    assert "accord_query_first_response_business_seconds_bucket" in metrics.text

    # answering late records the breach
    await w.q("POST", f"/queries/{query_id}/answer", w.provider, {"answer": "Back up"})
    events = await w.queries.store.read_stream(f"query-{query_id}")
    assert [e.type.split(".")[2] for e in events] == ["QueryRaised", "QueryOverdue", "QueryAtRisk",
                                                      "QueryAnswered", "QueryBreached"]


async def _total(w: World, url: str) -> Any:
    body = await w.q("GET", url, w.client)
    return body if body["total"] else None


async def test_a_due_timer_fires_once_after_a_restart(
    world: World, queries_settings: ServiceSettings, amqp_connection: aio_pika.abc.AbstractRobustConnection,
    exchange_name: str,
) -> None:
    w = world
    await w.draft()
    await w.activate()
    async with subscriber(amqp_connection, exchange_name, QueryOverdue.routing_key()) as received:
        query_id = await raise_backdated(w, w.client, seconds_ago=58.5)  # due in 1.5 s
        await w.queries.stop()  # the first replica goes away before the deadline
        await asyncio.sleep(2)
        assert received.empty()
        async with running(queries_settings) as (restarted, _):
            overdue = await asyncio.wait_for(received.get(), 10)
            assert overdue.data["query_id"] == str(query_id)
            await asyncio.sleep(0.5)
            assert received.empty()
            events = await restarted.store.read_stream(f"query-{query_id}")
            assert [e.type for e in events].count(QueryOverdue.event_type()) == 1
            late = overdue.time - datetime.fromisoformat(overdue.data["due_at"])
            assert late > timedelta(seconds=0.4)  # fired by the new replica, catching up


async def test_a_requirement_clarification_round_trip_through_both_services(world: World) -> None:
    w = world
    await w.draft()
    requirement = (await w.a("POST", "/requirements", w.client, {
        "title": "VAT returns", "description": "Quarterly", "acceptance_criteria": ["filed on time"]},
        expect=201))["created_id"]
    query_id = (await w.a("POST", f"/requirements/{requirement}/clarification-requests", w.provider,
                          {"question": "Which countries?"}, expect=201))["created_id"]
    raised = await w.detail(query_id)
    assert (raised["purpose"], raised["about_kind"], raised["about_id"]) == ("clarification", "requirement",
                                                                             requirement)
    assert raised["raised_by_side"] == "provider" and raised["addressed_to_side"] == "client"
    assert raised["thread"][0]["body"] == "Which countries?" and raised["thread"][0]["user_id"] == \
        str(w.provider.user_id)
    await w.q("POST", f"/queries/{query_id}/answer", w.provider, {"answer": "x"}, expect=403)
    await w.q("POST", f"/queries/{query_id}/answer", w.client, {"answer": "Germany and Austria"})

    async def clarified() -> Any:
        body = await w.call(w.aapi, "GET", f"/agreements/{w.agreement_id}", w.client,
                            as_of=datetime.now(UTC).isoformat())
        found = body["agreement"]["requirements"][requirement]
        return found if found["status"] == "clarified" else None

    found = await eventually(clarified)
    assert found["clarifications"][0]["answer"] == "Germany and Austria"
    assert json.dumps(found)  # a plain JSON document


async def test_queries_take_the_organisations_from_the_parties_not_the_previous_releases_table(
        world: World) -> None:
    """`agreement_terms` is written for the previous release only: emptied, both ways of raising a
    query still find the agreement's organisations (in `agreement_parties`)."""
    w = world
    await w.draft()
    await w.activate()  # known to the queries service once this returns
    await w.queries.pool.execute("TRUNCATE agreement_terms")
    raised = await w.q("POST", f"/agreements/{w.agreement_id}/queries", w.provider, {
        "priority": "normal", "subject": "Access", "body": "Who grants VPN access?",
        "addressee_role": "it lead"}, expect=201)
    assert (await w.detail(raised["query_id"]))["addressed_to_side"] == "client"
    requirement = (await w.a("POST", "/requirements", w.client, {
        "title": "VPN", "description": "Remote access", "acceptance_criteria": ["works"]},
        expect=201))["created_id"]
    query_id = (await w.a("POST", f"/requirements/{requirement}/clarification-requests", w.provider,
                          {"question": "Which sites?"}, expect=201))["created_id"]
    assert (await w.detail(query_id))["addressed_to_side"] == "client"


async def test_a_started_service_puts_its_long_lived_objects_out_of_the_collectors_reach(
        queries: tuple[ServiceRuntime, httpx.AsyncClient]) -> None:
    """Full collections no longer walk the modules, models and pools alive at start-up, and young
    collections are rarer than Python's default (the collector took 5 to 9 % of a busy service's CPU)."""
    assert gc.get_freeze_count() > 10_000
    assert gc.get_threshold()[0] == 7_000


async def test_an_upgraded_queries_service_drains_and_deletes_the_queue_of_its_former_parties_consumer(
        queries_settings: ServiceSettings, pool: asyncpg.Pool) -> None:
    """Before 2026-11 the parties replica had a queue of its own. What waited there when the
    service was upgraded is applied, and the queue (with its empty dead-letter queue) is deleted."""
    (former,) = next(c for c in DEFINITION.consumers if c.formerly).formerly
    old = BusConsumer(pool=pool, amqp_url=queries_settings.amqp_url, exchange_name=queries_settings.exchange,
                      service_name="queries", consumer_name=former.name, handlers=former.handlers,
                      queue_prefix=queries_settings.queue_prefix)
    await old.start()  # declared and bound by the previous version, which stopped
    await old.stop()
    agreements = {uuid.uuid4(): (uuid.uuid4(), uuid.uuid4()) for _ in range(3)}
    async with await aio_pika.connect(queries_settings.amqp_url) as connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(queries_settings.exchange)
        for agreement, (client, provider) in agreements.items():
            data = AgreementDrafted(agreement_id=agreement, title="Before the upgrade", drafted_by_side="client",
                                    client_organisation_id=client, provider_organisation_id=provider)
            event = CloudEvent(id=uuid.uuid4(), source="/accord/agreements", type=data.event_type(),
                               subject=f"agreement-{agreement}", time=datetime.now(UTC),
                               data=data.model_dump(mode="json"), sequence=1, correlationid=uuid.uuid4(),
                               actor="user:test")
            await exchange.publish(aio_pika.Message(event.model_dump_json().encode(),
                                                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                   routing_key=event.routing_key)

    async with running(queries_settings) as (runtime, _):
        async def applied() -> bool:
            rows = await runtime.pool.fetch(
                "SELECT agreement_id, client_organisation_id, provider_organisation_id FROM agreement_parties")
            return {r["agreement_id"]: (r["client_organisation_id"], r["provider_organisation_id"])
                    for r in rows} == agreements

        await eventually(applied)

        async def deleted() -> bool:
            async with await aio_pika.connect(queries_settings.amqp_url) as connection:
                for name in (old.queue_name, old.dlq_name):
                    try:
                        await (await connection.channel()).declare_queue(name, passive=True)
                        return False
                    except ChannelNotFoundEntity:
                        pass
            return True

        await eventually(deleted, timeout=20)
        # What only the former consumer received survives a rebuild: its inbox is replayed too.
        await runtime.rebuild(["agreement_parties"])
        assert await applied()
    await delete_broker_objects(queries_settings.amqp_url, runtime)
