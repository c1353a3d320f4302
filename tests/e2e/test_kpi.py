"""The kpi service against the real servers, fed by a running agreements service over RabbitMQ:
KPIs and their threshold crossings, period reports and their acknowledgement, the durable timers for
overdue values and reviews, relationship KPIs from queries events, and customer health changing band."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any, TypeVar

import aio_pika
import httpx
import pytest

from accord_runtime.service import ServiceRuntime
from accord_runtime.settings import ServiceSettings
from accord_runtime.topology import CONTENT_TYPE, declare_exchange
from contracts import CloudEvent, EventData
from contracts.queries import QueryAnswered, QueryRaised
from contracts.sla import BusinessCalendar, ResponseTarget, WorkingPeriod
from services.kpi.main import DEFINITION
from tests.e2e.conftest import Party, delete_broker_objects, register_party
from tests.support import eventually as _eventually

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T | None]]) -> T:
    """`tests.support.eventually`, typed for checks that return None until they hold."""
    result = await _eventually(check)
    assert result is not None
    return result

pytestmark = pytest.mark.servers


@pytest.fixture
async def kpi(settings: ServiceSettings, agreements: ServiceRuntime) -> AsyncIterator[ServiceRuntime]:
    """A kpi service on the same bus, started before any party or agreement exists."""
    runtime = ServiceRuntime(DEFINITION, settings.model_copy(update={
        "service_name": "kpi", "database_schema": f"kpi_{uuid.uuid4().hex[:10]}"}))
    app = runtime.app()
    async with app.router.lifespan_context(app):
        runtime.http = app  # type: ignore[attr-defined]
        yield runtime
    await delete_broker_objects(settings.amqp_url, runtime)


@pytest.fixture
async def kpi_api(kpi: ServiceRuntime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=kpi.http)  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=transport, base_url="http://kpi") as client:
        yield client


class Bus:
    """A plain aio-pika subscriber to every kpi event on the test's exchange."""

    def __init__(self) -> None:
        self.received: list[CloudEvent] = []

    async def start(self, connection: aio_pika.abc.AbstractRobustConnection, exchange_name: str) -> None:
        channel = await connection.channel()
        self.exchange = await declare_exchange(channel, exchange_name)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(self.exchange, routing_key="kpi.#")
        await queue.consume(self._on_message)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            self.received.append(CloudEvent.model_validate_json(message.body))

    def of(self, name: str, **data: Any) -> list[dict[str, Any]]:
        return [e.data for e in self.received if e.type == f"accord.kpi.{name}.v1"
                and all(e.data.get(k) == v for k, v in data.items())]

    async def publish(self, data: EventData, subject: str, sequence: int) -> None:
        """Publish an event of another service, as its outbox relay would."""
        envelope = CloudEvent(id=uuid.uuid4(), source=f"/accord/{data.EVENT_SERVICE}", type=data.event_type(),
                              subject=subject, time=datetime.now(UTC), data=data.model_dump(mode="json"),
                              sequence=sequence, correlationid=uuid.uuid4(), actor="system:test")
        await self.exchange.publish(aio_pika.Message(
            envelope.model_dump_json().encode(), content_type=CONTENT_TYPE, message_id=str(envelope.id),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=envelope.routing_key)


class Scene:
    """An active agreement between a client and a provider, known to the kpi service's replica."""

    def __init__(self, api: httpx.AsyncClient, kpi_api: httpx.AsyncClient, kpi: ServiceRuntime, bus: Bus) -> None:
        self.api, self.kpi_api, self.kpi, self.bus = api, kpi_api, kpi, bus
        self.id = ""

    async def setup(self, agreements: ServiceRuntime, procedure: bool = False) -> None:
        self.client = await register_party(agreements, "client")
        self.provider = await register_party(agreements, "provider")
        self.stranger = await register_party(agreements, "stranger")
        self.id = (await self.agreement("POST", "", self.client, {
            "title": "Outsourced accounting", "client_organisation_id": str(self.client.organisation_id),
            "provider_organisation_id": str(self.provider.organisation_id)}, path="/agreements"))["agreement_id"]
        if procedure:
            self.procedure = (await self.agreement("POST", "/procedures", self.client, {
                "name": "Month-end close", "steps": [{"title": "Reconcile bank", "owner_side": "provider"}]}))[
                "created_id"]
        await self.agreement("POST", "/proposal", self.client)
        for party in (self.client, self.provider):
            await self.agreement("POST", "/acceptance", party)
        await eventually(lambda: self.kpi.pool.fetchval(
            "SELECT status = 'active' FROM agreement_parties WHERE agreement_id = $1", uuid.UUID(self.id)))
        await eventually(lambda: self.kpi.pool.fetchval("SELECT count(*) = 3 FROM api_tokens"))

    async def agreement(self, method: str, sub: str, by: Party, body: dict[str, Any] | None = None,
                        path: str | None = None) -> dict[str, Any]:
        response = await self.api.request(method, path or f"/agreements/{self.id}{sub}", headers=by.headers,
                                          json=body)
        assert response.status_code in (200, 201), response.text
        result: dict[str, Any] = response.json()
        return result

    async def call(self, method: str, sub: str, by: Party | None, body: dict[str, Any] | None = None,
                   expect: int = 200, params: dict[str, str] | None = None) -> Any:
        response = await self.kpi_api.request(method, f"/agreements/{self.id}{sub}", json=body, params=params,
                                              headers=by.headers if by else {})
        assert response.status_code == expect, (method, sub, response.status_code, response.text)
        return response.json()

    async def define(self, by: Party, name: str, cadence_seconds: int = 3600, **extra: Any) -> str:
        created = await self.call("POST", "/kpis", by, {
            "name": name, "unit": "%", "direction": "higher_is_better", "target": 95, "warning_threshold": 90,
            "breach_threshold": 80, "cadence_seconds": cadence_seconds, **extra}, expect=201)
        return str(created["id"])

    async def report(self, kpi_id: str, value: float, by: Party | None = None, expect: int = 201) -> Any:
        now = datetime.now(UTC)
        return await self.call("POST", f"/kpis/{kpi_id}/values", by or self.provider, {
            "value": value, "period_start": (now - timedelta(days=30)).isoformat(), "period_end": now.isoformat(),
            "evidence": "https://files.test/close-log.xlsx"}, expect=expect)


@pytest.fixture
async def bus(amqp_connection: aio_pika.abc.AbstractRobustConnection, settings: ServiceSettings) -> Bus:
    subscriber = Bus()
    await subscriber.start(amqp_connection, settings.exchange)
    return subscriber


@pytest.fixture
async def scene(api: httpx.AsyncClient, kpi_api: httpx.AsyncClient, kpi: ServiceRuntime, bus: Bus,
                agreements: ServiceRuntime) -> Scene:
    s = Scene(api, kpi_api, kpi, bus)
    await s.setup(agreements, procedure=True)
    return s


async def test_kpis_reports_and_their_timers_over_the_bus(scene: Scene) -> None:
    s, client, provider = scene, scene.client, scene.provider

    # who may do what: 401 without a token, 403 for a stranger, 404 for an unknown agreement
    await s.call("GET", "/kpis", None, expect=401)
    await s.call("GET", "/kpis", s.stranger, expect=403)
    unknown = await s.kpi_api.get(f"/agreements/{uuid.uuid4()}/kpis", headers=client.headers)
    assert unknown.status_code == 404

    # either side defines KPIs; thresholds must follow the direction
    close = await s.define(client, "On-time close")
    bad = await s.call("POST", "/kpis", provider, {
        "name": "Backwards", "unit": "%", "direction": "higher_is_better", "target": 80, "warning_threshold": 90,
        "breach_threshold": 95, "cadence_seconds": 60}, expect=422)
    assert "breach ≤ warning ≤ target" in bad["detail"][0]["msg"]  # a 422 in the validation-error shape
    await s.call("POST", "/kpis", provider, {"name": "on-time CLOSE", "unit": "%", "direction": "higher_is_better",
                                             "target": 1, "warning_threshold": 1, "breach_threshold": 1,
                                             "cadence_seconds": 60}, expect=409)

    # only the provider reports; a breaching value is KPIBreached on the bus, then recovery
    refused = await s.report(close, 99, by=client, expect=403)
    assert refused["detail"] == "only the provider reports KPI values"
    await s.report(close, 70)
    breached = (await eventually(lambda: _async(s.bus.of("KPIBreached", kpi_id=close))))[0]
    assert (breached["value"], breached["threshold"], breached["name"]) == (70, 80, "On-time close")
    await s.report(close, 96)
    await eventually(lambda: _async(s.bus.of("KPIRecovered", kpi_id=close, to_status="on_target")))
    series = await eventually(lambda: _listed(s, f"/kpis/{close}/series", 2))
    assert [(v["value"], v["status"]) for v in series] == [(70, "breached"), (96, "on_target")]
    listed = await s.call("GET", "/kpis", provider)
    assert (listed[0]["status"], listed[0]["last_value"]) == ("on_target", 96)

    # period reports: the provider publishes, the client acknowledges with questions
    now = datetime.now(UTC)
    body = {"title": "March", "period_start": (now - timedelta(days=31)).isoformat(), "period_end": now.isoformat(),
            "narrative": "Close slipped once; fixed with the bank feed."}
    assert (await s.call("POST", "/reports", client, body, expect=403))["detail"] == \
        "only the provider publishes KPI reports"
    report = (await s.call("POST", "/reports", provider, body, expect=201))["id"]
    published = (await eventually(lambda: _async(s.bus.of("KPIReportPublished", report_id=report))))[0]
    assert [(k["name"], k["value"]) for k in published["kpis"]] == [("On-time close", 96)]
    ack = {"comments": "Thanks", "questions": ["Will the bank feed cover all accounts?"]}
    await s.call("POST", f"/reports/{report}/acknowledgement", provider, ack, expect=403)
    await s.call("POST", f"/reports/{report}/acknowledgement", client, ack)
    await s.call("POST", f"/reports/{report}/acknowledgement", client, ack, expect=409)
    await s.call("POST", f"/reports/{uuid.uuid4()}/acknowledgement", client, ack, expect=404)
    acknowledged = (await eventually(lambda: _async(s.bus.of("KPIReportAcknowledged", report_id=report))))[0]
    assert acknowledged["questions"] == ack["questions"] and acknowledged["late"] is False

    async def report_state() -> str | None:
        rows = await s.call("GET", "/reports", client)
        return str(rows[0]["state"]) if rows and rows[0]["state"] == "acknowledged" else None

    assert await eventually(report_state) == "acknowledged"

    # durable timers: a value missing at the end of its cadence, a review window passing
    fast = await s.define(provider, "Tickets closed", cadence_seconds=1)
    overdue = (await eventually(lambda: _async(s.bus.of("KPIReportOverdue", kpi_id=fast))))[0]
    assert overdue["period"] == 1 and overdue["cadence_seconds"] == 1
    quick = (await s.call("POST", "/reports", provider, {**body, "title": "April", "review_seconds": 1},
                          expect=201))["id"]
    await eventually(lambda: _async(s.bus.of("KPIReportReviewOverdue", report_id=quick)))


async def test_health_changes_band_with_breakdowns_check_ins_and_kpis(scene: Scene) -> None:
    s, client, provider = scene, scene.client, scene.provider
    async def procedure_steps() -> list[dict[str, Any]] | None:
        response = await s.api.get(f"/agreements/{s.id}", headers=client.headers)
        if not response.is_success:
            return None
        procedure: dict[str, Any] = response.json()["agreement"]["procedures"].get(s.procedure, {})
        return procedure.get("steps")

    steps = await eventually(procedure_steps)
    await s.agreement("POST", f"/procedures/{s.procedure}/breakdowns", provider, {
        "step_id": steps[0]["step_id"], "what_broke": "Bank statements arrive late", "impact": "Close slips"})
    first = (await eventually(lambda: _async(s.bus.of("CustomerHealthChanged", agreement_id=s.id))))[0]
    assert (first["from_band"], first["to_band"]) == (None, "green")

    await s.agreement("POST", "/checkins", client, {
        "held_on": "2026-03-31", "client_score": 1, "provider_score": 1, "client_sentiment": "negative",
        "provider_sentiment": "negative", "notes": "Rough month"})
    yellow = (await eventually(lambda: _async(s.bus.of("CustomerHealthChanged", to_band="yellow"))))[0]
    assert yellow["from_band"] == "green" and set(yellow["moved"]) == {"checkin_scores", "checkin_sentiment"}

    close = await s.define(client, "On-time close")
    await s.report(close, 50)
    red = (await eventually(lambda: _async(s.bus.of("CustomerHealthChanged", to_band="red"))))[0]
    assert red["moved"] == ["kpi_attainment"] and red["score"] < 40

    async def red_now() -> dict[str, Any] | None:
        response = await s.kpi_api.get(f"/agreements/{s.id}/health", headers=provider.headers)
        return response.json() if response.status_code == 200 and response.json()["band"] == "red" else None

    health = await eventually(red_now)
    shortfall = {c["component"]: c["shortfall"] for c in health["components"]}
    assert max(shortfall, key=lambda name: shortfall[name]) == "kpi_attainment"  # the red score explains itself
    history = await s.call("GET", "/health/history", client)
    assert history[0]["band"] == "green" and history[-1]["band"] == "red"
    assert history[-1]["cause"] == "KPIReported, KPIBreached"
    latest = (await s.kpi_api.get(f"/agreements/{s.id}/health/history", headers=client.headers,
                                  params={"latest": 2})).json()
    assert len(history) > 2 and latest == history[-2:]  # the latest two, still oldest first

    # weights are the agreement's own: ignoring KPI attainment brings the score back up
    await s.call("PUT", "/health/weights", client, {"weights": [{"component": "kpi_attainment", "weight": 0}]})
    await eventually(lambda: _async(s.bus.of("CustomerHealthChanged", from_band="red", to_band="yellow")))


async def test_relationship_kpis_from_query_events(scene: Scene) -> None:
    s, agreement_id = scene, uuid.UUID(scene.id)
    calendar = BusinessCalendar(timezone="UTC", working_periods=[
        WorkingPeriod(weekday=d, start=time(9), end=time(17)) for d in range(5)])
    target = ResponseTarget(priority="normal", first_response_minutes=240, resolution_minutes=2400)
    monday = datetime(2026, 3, 2, 16, tzinfo=UTC)
    answers = [(monday, monday + timedelta(hours=18), 0),  # Tuesday 10:00: 2 business hours
               (monday + timedelta(days=7), monday + timedelta(days=8), 4 * 3600)]  # Tuesday 16:00: 8 business hours
    for raised_at, answered_at, late in answers:
        query_id = uuid.uuid4()
        await s.bus.publish(QueryRaised(
            query_id=query_id, agreement_id=agreement_id, raised_by_side="client", addressed_to_side="provider",
            priority="normal", subject="VAT", body="Which rate?", raised_at=raised_at, sla_calendar=calendar,
            sla_target=target), f"query-{query_id}", 1)
        await s.bus.publish(QueryAnswered(
            query_id=query_id, agreement_id=agreement_id, answered_by_side="provider", answer="19 %",
            late_by_seconds=late, answered_at=answered_at), f"query-{query_id}", 2)

    async def answered() -> dict[str, Any] | None:
        kpis = await s.call("GET", "/relationship-kpis", s.client)
        return kpis if kpis["provider"]["queries_answered"] == 2 else None

    kpis = await eventually(answered)
    provider = kpis["provider"]
    assert (provider["query_response_p50_seconds"], provider["query_response_p90_seconds"]) == (7200, 28800)
    assert provider["answered_within_sla_share"] == 0.5 and kpis["client"]["queries_answered"] == 0
    first_week = await s.call("GET", "/relationship-kpis", s.provider, params={
        "from": monday.isoformat(), "to": (monday + timedelta(days=7)).isoformat()})
    assert first_week["provider"]["queries_answered"] == 1
    assert first_week["provider"]["answered_within_sla_share"] == 1.0
    await s.call("GET", "/relationship-kpis", s.client, expect=422, params={
        "from": monday.isoformat(), "to": monday.isoformat()})
    await s.call("GET", "/relationship-kpis", s.stranger, expect=403)

    # a KPI computed by Accord from a relationship KPI at the end of each cadence
    computed = await s.call("POST", "/kpis", s.client, {
        "name": "Open breakdowns", "unit": "breakdowns", "direction": "lower_is_better", "target": 0,
        "warning_threshold": 1, "breach_threshold": 2, "cadence_seconds": 1, "source": "accord",
        "metric": "open_breakdowns"}, expect=201)
    value = (await eventually(lambda: _async(s.bus.of("KPIReported", kpi_id=str(computed["id"])))))[0]
    assert (value["value"], value["reported_by_side"], value["status"]) == (0, None, "on_target")
    await s.report(str(computed["id"]), 0, expect=409)
    unknown_metric = await s.call("POST", "/kpis", s.client, {
        "name": "Nonsense", "unit": "x", "direction": "lower_is_better", "target": 0, "warning_threshold": 1,
        "breach_threshold": 2, "cadence_seconds": 60, "source": "accord", "metric": "provider.nonsense"}, expect=422)
    assert "unknown relationship KPI" in unknown_metric["detail"][0]["msg"]

    # the health score counts SLA attainment (and says so)
    async def sla_counted() -> dict[str, Any] | None:
        response = await s.kpi_api.get(f"/agreements/{s.id}/health", headers=s.client.headers)
        if response.status_code != 200:
            return None
        component = next(c for c in response.json()["components"] if c["component"] == "sla_attainment")
        return component if component["value"] == 0.5 else None

    assert "50% of queries answered within SLA" in (await eventually(sla_counted))["detail"]


async def _async(value: Any) -> Any:
    return value


async def _listed(s: Scene, sub: str, n: int) -> list[dict[str, Any]] | None:
    rows = await s.call("GET", sub, s.client)
    return rows if len(rows) == n else None
