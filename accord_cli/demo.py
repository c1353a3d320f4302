"""``accord demo``: seed a realistic engagement, so dashboards and the CLI show something at once.

An analytics agency (the provider) and a retailer (its client): goals stated and acknowledged,
requirements with a clarification answered through the queries service, contacts and a personnel
change, an SLA policy, queries (one of them urgent, overdue a minute after it is raised), a scope
change requested, assessed and approved, KPIs with a breach, a published report, a check-in.

Organisations, users and tokens are an operator's job: they are created the way
``accord-agreements admin`` creates them (the agreements service's handlers, in this process, on
the database named by the ``ACCORD_*`` environment). Everything else goes through the running
services' HTTP APIs, as the two parties would do it.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, TypeVar

import typer

from accord_cli.database import open_storage
from accord_cli.http import Api, base_url
from accord_cli.options import Json, api
from accord_cli.output import FAILED, UNREACHABLE, emit_json, err, fail, key_values, out, table

T = TypeVar("T")

ALL_WEEK = {"timezone": "UTC", "working_periods": [
    {"weekday": day, "start": "00:00:00", "end": "23:59:59.999999"} for day in range(7)]}
SLA_POLICY = {"calendar": ALL_WEEK, "targets": [
    {"priority": "urgent", "first_response_minutes": 1, "resolution_minutes": 5, "warn_at": [0.5]},
    {"priority": "high", "first_response_minutes": 60, "resolution_minutes": 480},
    {"priority": "normal", "first_response_minutes": 240, "resolution_minutes": 2880},
    {"priority": "low", "first_response_minutes": 1440, "resolution_minutes": 10080}]}
DAY = 86_400


@dataclass(frozen=True)
class Member:
    """An organisation with its first user and that user's API token."""

    organisation: str
    organisation_id: str
    user: str
    user_id: str
    email: str
    token: str


def seed_identities(people: list[tuple[str, str, str]], admin_command: str | None = None) -> list[Member]:
    """Register organisations, users and tokens the operator's way: with `admin_command` (e.g.
    ``docker compose exec -T agreements accord-agreements admin``) its ``bootstrap``, else the agreements
    service's handlers in this process, on the database its ``ACCORD_*`` environment names."""
    if admin_command:
        return [_bootstrap(shlex.split(admin_command), *person) for person in people]
    import asyncio

    return asyncio.run(_seed(people))


def _bootstrap(command: list[str], organisation: str, user: str, email: str) -> Member:
    try:
        done = subprocess.run([*command, "bootstrap", organisation, user, email],  # noqa: S603 - the operator's own
                              capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        fail(f"cannot run the admin command {command[0]!r}: {error}", UNREACHABLE)
    if done.returncode != 0:
        fail(f"the admin command failed ({done.returncode}): {done.stderr.strip()[-500:]}", FAILED)
    try:
        made = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        fail(f"the admin command printed no JSON: {done.stdout.strip()[-200:]!r}", FAILED)
    return Member(organisation, made["organisation_id"], user, made["user_id"], email, made["token"])


async def _seed(people: list[tuple[str, str, str]]) -> list[Member]:
    from accord_runtime.doorbell import Doorbell
    from accord_runtime.eventstore import Metadata
    from accord_runtime.service import ServiceRuntime
    from services.agreements import handlers
    from services.agreements.commands import IssueApiToken, RegisterOrganisation, RegisterUser
    from services.agreements.main import DEFINITION, AgreementsSettings

    settings = AgreementsSettings()
    runtime = ServiceRuntime(DEFINITION, settings)
    await open_storage(runtime)
    members = []
    try:
        ctx, meta = handlers.Context(runtime.store, runtime.pool), Metadata.new("operator")
        for organisation, user, email in people:
            organisation_id = await handlers.register_organisation(
                ctx, RegisterOrganisation(display_name=organisation), meta)
            user_id = await handlers.register_user(
                ctx, RegisterUser(organisation_id=organisation_id, display_name=user, email=email), meta)
            token = await handlers.issue_api_token(ctx, IssueApiToken(user_id=user_id, label="accord demo"), meta)
            members.append(Member(organisation, str(organisation_id), user, str(user_id), email, token))
        assert runtime.projections is not None
        await runtime.projections.catch_up()  # the tokens work in the agreements service at once
        # Wake the running service's outbox relay now (not at its next poll): the other services learn
        # the tokens from its events.
        await runtime.pool.execute("SELECT pg_notify($1, '')", Doorbell(settings.database_url,
                                                                        settings.db_schema).channel)
    finally:
        await runtime.pool.close()
    return members


def until(what: str, check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.2) -> T:
    """Poll `check` until it returns something (bounded by `timeout`); exit 1 naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            fail(f"timed out after {timeout:g} s waiting for {what}", FAILED)
        time.sleep(interval)


def _accepts(party: Api, service: str, path: str) -> Callable[[], bool]:
    """A check: the service no longer answers 401 to the party (it knows the token)."""
    return lambda: party.response(service, "GET", path).status_code != 401


class Engagement:
    """The scripted engagement, one HTTP call per step, each by the side that would make it."""

    def __init__(self, client: Api, provider: Api, members: tuple[Member, Member], step: Callable[[str], None],
                 timeout: float) -> None:
        self.client, self.provider = client, provider
        self.client_member, self.provider_member = members
        self.step, self.timeout = step, timeout
        self.id = ""
        self.ids: dict[str, Any] = {}

    def a(self, by: Api, method: str, sub: str, body: Any = None) -> Any:
        return by.call("agreements", method, f"/agreements/{self.id}{sub}", body=body)

    def tokens_known(self) -> None:
        self.step("waiting for the other services to learn the new tokens")
        for service, path in (("queries", "queries"), ("kpi", "kpis"), ("notifier", "escalations")):
            for party in (self.client, self.provider):
                until(f"the {service} service to accept the demo tokens",
                      _accepts(party, service, f"/agreements/{uuid.uuid4()}/{path}"), self.timeout)

    def draft(self) -> None:
        self.step("drafting the agreement")
        drafted = self.client.post("agreements", "/agreements", {
            "title": "Retail analytics retainer",
            "summary": f"{self.provider_member.organisation} runs {self.client_member.organisation}'s sales "
                       "dashboards and demand forecasts, with a monthly KPI report and check-in.",
            "client_organisation_id": self.client_member.organisation_id,
            "provider_organisation_id": self.provider_member.organisation_id})
        self.id = drafted["agreement_id"]

    def goals_and_requirements(self) -> None:
        self.step("stating goals and documenting requirements")
        goals = [self.a(self.client, "POST", "/goals", body)["created_id"] for body in (
            {"outcome": "Store managers see yesterday's sales by 07:00", "success_measure":
             "dashboard refreshed by 07:00 on 99 % of days", "constraints": ["keep our Snowflake account"]},
            {"outcome": "Cut stock-outs of top-200 products by 20 %", "success_measure":
             "stock-out rate, quarter on quarter"})]
        for goal, understanding in zip(goals, ("Daily refresh before stores open", "Forecast-driven replenishment"),
                                       strict=True):
            self.a(self.provider, "POST", f"/goals/{goal}/acknowledgement", {"understanding": understanding})
        dashboard = self.a(self.client, "POST", "/requirements", {
            "title": "Daily sales dashboard", "description": "Sales, margin and footfall per store and region",
            "acceptance_criteria": ["ties to the POS totals", "refreshed by 07:00"]})["created_id"]
        forecast = self.a(self.client, "POST", "/requirements", {
            "title": "Store-level demand forecast", "description": "Weekly forecast for the top-200 products",
            "acceptance_criteria": ["MAPE under 25 %"]})["created_id"]
        self.a(self.provider, "POST", f"/requirements/{dashboard}/acceptance")
        question = self.a(self.provider, "POST", f"/requirements/{forecast}/clarification-requests",
                          {"question": "Which horizon do you need: 4 or 13 weeks?"})["created_id"]
        self.ids.update(goals=goals, requirements={"dashboard": dashboard, "forecast": forecast},
                        clarification_query=question)

    def people_and_plans(self) -> None:
        self.step("naming contacts, the SLA policy and the communication plan")
        contacts = {}
        for by, body in (
            (self.provider, {"role": "delivery lead", "name": "Priya Shah", "email": "priya@northwind.example",
                             "escalation_level": 1}),
            (self.provider, {"role": "account director", "name": "Marcus Lee", "email": "marcus@northwind.example",
                             "escalation_level": 2}),
            (self.client, {"role": "head of data", "name": "Chris Morgan", "email": "chris@contoso.example",
                           "escalation_level": 1}),
            (self.client, {"role": "CFO", "name": "Dana Whitfield", "email": "dana@contoso.example",
                           "escalation_level": 2}),
        ):
            contacts[body["name"]] = self.a(by, "POST", "/contacts", body)["created_id"]
        self.a(self.provider, "POST", "/sla-policies", {"policy": SLA_POLICY})
        self.a(self.client, "PUT", "/communication-plan", {
            "status_update_every_seconds": 7 * DAY, "meetings": "Weekly 30-minute stand-up, Mondays 09:30",
            "channels": ["email", "Slack #contoso-analytics"]})
        self.a(self.client, "PUT", "/checkin-plan", {"every_days": 30, "format": "video call"})
        self.ids["contacts"] = contacts

    def clarification(self) -> None:
        self.step("answering the clarification in the queries service")
        query = self.ids["clarification_query"]
        until("the clarification query to reach the queries service",
              lambda: self.client.response("queries", "GET", f"/queries/{query}").status_code == 200, self.timeout)
        self.client.post("queries", f"/queries/{query}/answer", {"answer": "13 weeks, in weekly buckets"})
        forecast = self.ids["requirements"]["forecast"]

        def clarified() -> bool:
            snapshot = self.a(self.client, "GET", "")["agreement"]
            return bool(snapshot["requirements"][forecast]["status"] == "clarified")

        until("the requirement to be clarified", clarified, self.timeout)
        self.a(self.provider, "POST", f"/requirements/{forecast}/acceptance")

    def activate(self) -> None:
        self.step("proposing and accepting the agreement")
        self.a(self.client, "POST", "/proposal")
        self.a(self.client, "POST", "/acceptance")
        self.a(self.provider, "POST", "/acceptance")

    def queries(self) -> None:
        self.step("raising queries (an urgent one will be overdue in a minute)")
        url = f"/agreements/{self.id}/queries"
        urgent = {"priority": "urgent", "subject": "Dashboard shows no sales for yesterday",
                  "body": "All stores show zero since the 02:00 refresh.", "addressee_role": "delivery lead"}

        def raised() -> Any:  # 409 until the queries service has seen the agreement become active
            response = self.client.response("queries", "POST", url, body=urgent)
            return response.json() if response.status_code == 201 else None

        overdue = until("the queries service to see the agreement active", raised, self.timeout)
        detail = until("the urgent query's read model", lambda: self._query(overdue["query_id"]), self.timeout)
        normal = self.client.post("queries", url, {
            "priority": "normal", "subject": "Week-over-week change on the dashboard?",
            "body": "Could each tile show the change against last week?"})
        self.provider.post("queries", f"/queries/{normal['query_id']}/answer",
                           {"answer": "Yes: added to every tile from Monday's release."})
        self.client.post("queries", f"/queries/{normal['query_id']}/closure")
        access = self.provider.post("queries", url, {
            "priority": "high", "subject": "Read access to the loyalty database",
            "body": "We need a read-only role for the loyalty schema.", "addressee_role": "head of data"})
        self.client.post("queries", f"/queries/{access['query_id']}/answer",
                         {"answer": "Granted: role ANALYTICS_RO, see the vault entry."})
        self.ids["queries"] = {"urgent_overdue_soon": overdue["query_id"],
                               "overdue_at": detail["first_response_due_at"], "answered_and_closed": normal["query_id"],
                               "answered": access["query_id"]}

    def _query(self, query_id: str) -> Any:
        response = self.client.response("queries", "GET", f"/queries/{query_id}")
        return response.json() if response.status_code == 200 else None

    def scope_and_people(self) -> None:
        self.step("a scope change (requested, assessed, approved) and a personnel change")
        change = self.a(self.client, "POST", "/scope-changes", {
            "title": "Loyalty programme analytics", "what": "Cohort and churn reports for loyalty members",
            "why": "The loyalty relaunch in Q3 needs a baseline"})["created_id"]
        self.a(self.provider, "POST", f"/scope-changes/{change}/assessment", {
            "effort_hours": 40, "cost_minor_units": 480_000, "currency": "EUR", "timeline_impact_days": 10,
            "notes": "One analyst for two weeks"})
        self.a(self.client, "POST", f"/scope-changes/{change}/approval")
        successor = self.a(self.provider, "POST", f"/contacts/{self.ids['contacts']['Priya Shah']}/replacement", {
            "name": "Sam Okafor", "email": "sam@northwind.example",
            "handover_notes": "Priya moves to another account; open items are in the tracker."})["created_id"]
        self.ids.update(scope_change=change, personnel_change={"replaced": "Priya Shah", "by": "Sam Okafor",
                                                               "contact_id": successor})

    def kpis(self) -> None:
        self.step("KPIs with a breach, a published report, a check-in")
        kpi_url = f"/agreements/{self.id}/kpis"
        availability = self.provider.post("kpi", kpi_url, {
            "name": "Dashboard availability", "unit": "%", "direction": "higher_is_better", "target": 99.5,
            "warning_threshold": 99.0, "breach_threshold": 98.0, "cadence_seconds": 30 * DAY})["id"]
        freshness = self.provider.post("kpi", kpi_url, {
            "name": "Data freshness", "unit": "hours", "direction": "lower_is_better", "target": 2,
            "warning_threshold": 4, "breach_threshold": 6, "cadence_seconds": 30 * DAY})["id"]
        now = datetime.now(UTC)
        last_month, this_month = (now - timedelta(days=60), now - timedelta(days=30)), (now - timedelta(days=30), now)
        for kpi, value, (start, end), notes in (
            (availability, 99.7, last_month, "Two short refresh delays"),
            (freshness, 1.5, last_month, ""),
            (availability, 97.4, this_month, "Warehouse outage on the 12th: 19 hours without data"),
            (freshness, 3.1, this_month, "Late POS files from 14 stores"),
        ):
            self.provider.post("kpi", f"{kpi_url}/{kpi}/values", {
                "value": value, "period_start": start.isoformat(), "period_end": end.isoformat(),
                "evidence": "https://status.northwind.example/contoso", "notes": notes})
        report = self.provider.post("kpi", f"/agreements/{self.id}/reports", {
            "title": "Monthly service report", "period_start": this_month[0].isoformat(),
            "period_end": this_month[1].isoformat(), "kpi_ids": [availability, freshness],
            "narrative": "Availability breached after the warehouse outage; root cause fixed, failover added."})["id"]
        self.a(self.client, "POST", "/checkins", {
            "held_on": date.today().isoformat(), "client_score": 6, "provider_score": 8,
            "client_sentiment": "neutral", "provider_sentiment": "positive",
            "notes": "Outage handled well, but store managers lost trust in the morning numbers.",
            "action_items": [
                {"owner_side": "provider", "description": "Write up the outage post-mortem",
                 "due_on": (date.today() + timedelta(days=7)).isoformat()},
                {"owner_side": "client", "description": "Share the loyalty data dictionary"}]})
        self.a(self.provider, "POST", "/status-updates",
               {"summary": "Failover for the warehouse is live; forecast pilot starts next week."})
        self.ids.update(kpis={"availability": availability, "freshness": freshness}, report=report)

    def health(self) -> dict[str, Any]:
        self.step("waiting for the customer-health score")

        def scored() -> Any:
            response = self.client.response("kpi", "GET", f"/agreements/{self.id}/health")
            return response.json() if response.status_code == 200 else None

        until("the KPI breach to be recorded", lambda: any(
            k["status"] == "breached" for k in self.client.get("kpi", f"/agreements/{self.id}/kpis")), self.timeout)
        health: dict[str, Any] = until("a customer-health score", scored, self.timeout)
        return health

    def overdue(self, wait: float) -> bool:
        self.step(f"waiting up to {wait:g} s for the urgent query to go overdue")
        url = f"/agreements/{self.id}/queries/overdue"
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.client.get("queries", url)["total"]:
                return True
            time.sleep(1)
        return False


def demo(
    ctx: typer.Context,
    client_name: Annotated[str, typer.Option("--client", help="The client organisation's name.")] = "Contoso Retail",
    provider_name: Annotated[str, typer.Option("--provider", help="The agency's name.")] = "Northwind Analytics",
    wait_overdue: Annotated[float, typer.Option(min=0, max=180, help="Wait up to this many seconds for the urgent "
                                                "query to go overdue (it does 1 minute after it is raised).")] = 0,
    timeout: Annotated[float, typer.Option(min=1, max=300, help="Longest wait for the services to catch up, "
                                           "per step.")] = 30,
    admin_command: Annotated[str | None, typer.Option(help="Register the organisations with this command's "
                                                      "`bootstrap`, e.g. 'docker compose exec -T agreements "
                                                      "accord-agreements admin' (default: in this process, on the "
                                                      "agreements database of $ACCORD_DATABASE_URL).")] = None,
    as_json: Json = False,
) -> None:
    """Seed a realistic engagement between an agency and its client (prints the new API tokens)."""
    def step(text: str) -> None:
        if not as_json:
            err.print(f"• {text}", style="dim")

    step(f"registering {client_name} and {provider_name} (operator path: {admin_command or 'agreements database'})")
    client_member, provider_member = seed_identities([
        (client_name, "Chris Morgan", "chris@contoso.example"),
        (provider_name, "Priya Shah", "priya@northwind.example")], admin_command)
    base = api(ctx)
    with base.with_token(client_member.token) as client, base.with_token(provider_member.token) as provider:
        engagement = Engagement(client, provider, (client_member, provider_member), step, timeout)
        engagement.tokens_known()
        engagement.draft()
        engagement.goals_and_requirements()
        engagement.people_and_plans()
        engagement.clarification()
        engagement.activate()
        engagement.queries()
        engagement.scope_and_people()
        engagement.kpis()
        health = engagement.health()
        overdue_now = engagement.overdue(wait_overdue) if wait_overdue else False
    summary = {
        "client": asdict(client_member), "provider": asdict(provider_member), "agreement_id": engagement.id,
        **engagement.ids, "health": {"score": health["score"], "band": health["band"]}, "overdue_now": overdue_now,
        "services": {name: base_url(name) for name in ("agreements", "queries", "kpi", "notifier")},
    }
    if as_json:
        emit_json(summary)
        return
    _print_summary(summary)


def _print_summary(summary: dict[str, Any]) -> None:
    out.print(table("Demo organisations (the tokens are shown only now)", ("side", "organisation", "user", "token"), [
        (side, summary[side]["organisation"], f"{summary[side]['user']} <{summary[side]['email']}>",
         summary[side]["token"]) for side in ("client", "provider")]))
    queries = summary["queries"]
    overdue = ("overdue now" if summary["overdue_now"] else
               f"overdue from {queries['overdue_at']} (1 minute after it was raised)")
    out.print(key_values("Agreement", [
        ("id", summary["agreement_id"]), ("goals", len(summary["goals"])),
        ("requirements", "2 (one clarified through a query)"),
        ("urgent query", f"{queries['urgent_overdue_soon']}: {overdue}"),
        ("scope change", f"{summary['scope_change']} (approved)"),
        ("personnel change", f"{summary['personnel_change']['replaced']} → {summary['personnel_change']['by']}"),
        ("KPI breach", "Dashboard availability 97.4 % (breach below 98 %)"),
        ("customer health", f"{summary['health']['score']:.1f} ({summary['health']['band']})")]))
    agreement = summary["agreement_id"]
    out.print("\nTry, as the client:")
    out.print(f"  export ACCORD_TOKEN={summary['client']['token']}", markup=False)
    for command in ("accord agreements list", f"accord agreements show {agreement}",
                    f"accord queries list {agreement}", f"accord kpi health {agreement}",
                    f"accord events tail --agreement {agreement}"):
        out.print(f"  {command}", markup=False)
