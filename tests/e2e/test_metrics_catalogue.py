"""Every PromQL expression in deploy/ (alert rules, both Grafana dashboards) parses, and names only
metrics, and labels, that the services really export.

(a) Parsing is promtool's (Debian's `prometheus` package, installed by `.ci/run`): each expression
becomes a recording rule in a temporary rules file for `promtool check rules`.
(b) A scenario across all four services, run in this process against the real servers (a query raised
and left overdue, escalated by email, answered late; a KPI defined and reported in breach, moving the
customer health), then a scrape of each service's /metrics. In-process the services share one
registry, so the union of the scrapes is what the four processes export together. Every metric name an
expression selects must be in it with samples, and every label it matches or groups by must be one of
that metric's labels (or a target label Prometheus adds). The names that come from other exporters are
listed in `EXTERNAL`, with where they come from.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families

from accord_runtime.eventstore import Metadata
from accord_runtime.identity import Principal
from accord_runtime.service import ServiceDefinition, ServiceRuntime
from accord_runtime.settings import ServiceSettings
from services.kpi.main import DEFINITION as KPI
from services.notifier.main import definition as notifier_definition
from services.notifier.settings import NotifierSettings
from services.queries import handlers as query_handlers
from services.queries.commands import RaiseQuery
from services.queries.main import DEFINITION as QUERIES
from services.queries.metrics import refresh_gauges
from tests.e2e.conftest import Party, delete_broker_objects, register_party
from tests.support import eventually

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"

# Grafana's built-in variables, as any valid duration: only the syntax matters here.
GRAFANA_BUILTINS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1d"}

# Labels Prometheus attaches to every scraped series (prometheus.yml: job, and instance per target).
TARGET_LABELS = frozenset({"job", "instance"})

_RABBITMQ = "RabbitMQ's rabbitmq_prometheus plugin, /metrics/detailed (prometheus.yml job rabbitmq-queues)"
# Metrics the expressions may name that no Accord service exports: name -> (source, its labels).
EXTERNAL: dict[str, tuple[str, frozenset[str]]] = {
    "up": ("Prometheus itself: 1 or 0 per scrape target", frozenset()),
    "ALERTS": ("Prometheus itself: a series per pending or firing alert, with its labels",
               frozenset({"alertname", "alertstate", "severity", "area"})),
    "rabbitmq_detailed_queue_messages": (_RABBITMQ, frozenset({"vhost", "queue"})),
    "rabbitmq_detailed_queue_messages_ready": (_RABBITMQ, frozenset({"vhost", "queue"})),
    "rabbitmq_detailed_queue_messages_unacked": (_RABBITMQ, frozenset({"vhost", "queue"})),
    "rabbitmq_detailed_queue_consumers": (_RABBITMQ, frozenset({"vhost", "queue"})),
}

# Accord metrics whose samples only a failure creates (a labelled series is born at its first
# increment), so a scenario that goes well cannot show them: they must still be declared.
FAILURE_ONLY = {
    "accord_publish_failures_total": "the broker refused or did not confirm a publish",
}


# --- the expressions -----------------------------------------------------------------------------


def _dashboard_variables(board: dict[str, Any]) -> dict[str, str]:
    """`$name` -> the variable's default value, for the dashboard's own variables."""
    found = {}
    for variable in board.get("templating", {}).get("list", []):
        found[f"${variable['name']}"] = str(variable["current"]["value"])
    return found


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every alert rule and every dashboard query, variables replaced."""
    found = [(f"alerts.yml {rule['alert']}", str(rule["expr"]))
             for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        variables = {**GRAFANA_BUILTINS, **_dashboard_variables(board)}
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = str(target["expr"])
                for name in sorted(variables, key=len, reverse=True):  # $__range before $__r…
                    expr = expr.replace(name, variables[name])
                found.append((f"{path.name} panel {panel['title']!r} query {target['refId']}", expr))
    return found


# --- what an expression names (PromQL's lexical structure is enough; promtool checks the syntax) ---

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])*)
  | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=(){}\[\],@])
""", re.VERBOSE)
_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
                 "topk", "quantile", "limitk", "limit_ratio"}
_KEYWORDS = {"and", "or", "unless", "atan2", "bool", "offset", "inf", "nan"}


@dataclass
class Names:
    """The metric selectors of an expression (name -> labels it matches on) and its grouping labels."""

    selectors: dict[str, set[str]] = field(default_factory=dict)
    grouping: set[str] = field(default_factory=set)


def tokens(expr: str) -> list[tuple[str, str]]:
    found, position = [], 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None:
            raise ValueError(f"cannot read {expr[position:position + 20]!r} in {expr!r}")
        position = match.end()
        if match.lastgroup != "space":
            found.append((str(match.lastgroup), match.group()))
    return found


def names(expr: str) -> Names:
    result, items, i = Names(), tokens(expr), 0

    def following(index: int) -> str:
        return items[index][1] if index < len(items) else ""

    def closing(index: int, opening: str, close: str) -> int:
        """The index after the bracket that closes the one at `index`."""
        depth = 0
        for j in range(index, len(items)):
            depth += {opening: 1, close: -1}.get(items[j][1], 0) if items[j][0] == "op" else 0
            if depth == 0:
                return j + 1
        raise ValueError(f"unbalanced {opening} in {expr!r}")

    while i < len(items):
        kind, text = items[i]
        if kind == "op" and text == "[":  # a range or subquery duration
            i = closing(i, "[", "]")
        elif kind == "op" and text == "{":
            raise ValueError(f"a selector without a metric name in {expr!r}: name it")
        elif kind != "name" or text.lower() in _KEYWORDS:
            i += 1
        elif text in _LABEL_LISTS:
            if following(i + 1) == "(":
                end = closing(i + 1, "(", ")")
                result.grouping.update(t for k, t in items[i + 2:end - 1] if k == "name")
                i = end
            else:
                i += 1
        elif text in _AGGREGATIONS or following(i + 1) == "(":  # an aggregation or a function
            i += 1
        else:  # a metric name, with or without matchers
            labels = result.selectors.setdefault(text, set())
            i += 1
            if following(i) == "{":
                end = closing(i, "{", "}")
                labels.update(t for j, (k, t) in enumerate(items[i + 1:end - 1], i + 1)
                              if k == "name" and following(j + 1) in ("=", "!=", "=~", "!~"))
                i = end
    return result


def test_the_reader_finds_metric_names_and_labels() -> None:
    found = names('histogram_quantile(0.99, sum by (service, le) (rate(a_bucket{x="by (y)", z!~"q"}[5m])))'
                  ' > 1 and on (side) max without (w) (b offset 1h) unless c{d="e"} @ end()')
    assert found.selectors == {"a_bucket": {"x", "z"}, "b": set(), "c": {"d"}}
    assert found.grouping == {"service", "le", "side", "w"}
    assert names('sum(increase(x_total{within_sla="true"}[1d])) / sum(x_total) > 0.1').selectors == {
        "x_total": {"within_sla"}}


# --- (a) every expression parses ------------------------------------------------------------------


def test_every_expression_parses(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed: .ci/run installs Debian's prometheus package for it")
        pytest.skip("promtool is not installed (apt-get install --no-install-recommends prometheus); CI runs this")
    found = expressions()
    groups = [{"name": where, "rules": [{"record": f"accord_check:expression_{index}", "expr": expr}]}
              for index, (where, expr) in enumerate(found)]
    rules = tmp_path / "expressions.yml"
    rules.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False, width=1000))
    done = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(found)} rules found" in done.stdout


# --- (b) every metric named is exported -----------------------------------------------------------


@dataclass
class Catalogue:
    """Sample names (a histogram's _bucket/_sum/_count, a counter's _total) and their label names, from
    every scrape so far; and the names declared (TYPE) without a sample yet."""

    sampled: dict[str, set[str]] = field(default_factory=dict)
    declared: set[str] = field(default_factory=set)

    def add(self, exposition: str) -> None:
        for family in text_string_to_metric_families(exposition):
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
            self.declared.update(family.name + suffix for suffix in suffixes)
            for sample in family.samples:
                self.sampled.setdefault(sample.name, set()).update(sample.labels)

    def problems(self) -> list[str]:
        """What is wrong with the expressions' names, against what has been scraped so far."""
        found = []
        for where, expr in expressions():
            named = names(expr)
            known: set[str] = set(TARGET_LABELS)
            for metric, matched in named.selectors.items():
                if metric in EXTERNAL:
                    labels: set[str] = set(EXTERNAL[metric][1])
                elif metric in self.sampled:
                    labels = self.sampled[metric]
                elif metric in FAILURE_ONLY and metric in self.declared:
                    continue  # declared, labels unknown until the first failure
                else:
                    state = "declared, with no sample" if metric in self.declared else "not exported"
                    found.append(f"{where}: {metric} is {state}")
                    continue
                known |= labels
                unknown = matched - labels - TARGET_LABELS
                if unknown:
                    found.append(f"{where}: {metric} has no label {sorted(unknown)} (it has {sorted(labels)})")
            extra = named.grouping - known
            if extra and not any(metric in FAILURE_ONLY for metric in named.selectors):
                found.append(f"{where}: groups by {sorted(extra)}, which no metric it selects has")
        return found


class Mailbox:
    """An SMTP server's handler (aiosmtpd) that keeps the recipients of what it receives."""

    def __init__(self) -> None:
        self.recipients: list[str] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:  # aiosmtpd's hook name
        self.recipients.extend(envelope.rcpt_tos)
        return "250 OK"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    with socket.socket() as probe:  # aiosmtpd needs a port number it can connect to, not 0
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@dataclass
class Stack:
    """The other three services beside the agreements fixture, each with its HTTP client."""

    runtimes: dict[str, ServiceRuntime]
    clients: dict[str, httpx.AsyncClient]

    async def scrape(self, catalogue: Catalogue) -> None:
        for client in self.clients.values():
            response = await client.get("/metrics")
            assert response.status_code == 200, response.text
            catalogue.add(response.text)


# An overdue urgent query emails the answering side's level-1 contact at once (the packaged rules wait
# half an hour first).
RULES = {
    "delivery": {"max_attempts": 2, "backoff_base_seconds": 0.1, "backoff_cap_seconds": 0.5, "timeout_seconds": 2},
    "rules": [{
        "name": "overdue-query", "event": "queries.QueryOverdue", "when": {"priority": ["urgent"]},
        "matter": "query:{query_id}:{clock}", "notify_in_quiet_hours": True,
        "resolved_by": [{"event": "queries.QueryAnswered", "matter": "query:{query_id}:first_response"}],
        "levels": [{"targets": [{"side_field": "addressed_to_side", "matrix_level": 1}], "channels": ["email"]}],
    }],
}


@pytest.fixture
async def stack(settings: ServiceSettings, agreements: ServiceRuntime, api: httpx.AsyncClient,
                mailbox: tuple[Mailbox, int], tmp_path: Path) -> AsyncIterator[Stack]:
    """queries, kpi and notifier on the agreements service's bus, started before any event is published."""
    def schema(prefix: str) -> str:
        return f"{prefix}_{uuid.uuid4().hex[:10]}"

    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(RULES))
    notifier_settings = NotifierSettings(**{
        **settings.model_dump(), "service_name": "notifier", "database_schema": schema("n"),
        "notifier_rules_path": rules, "notifier_smtp_host": "127.0.0.1", "notifier_smtp_port": mailbox[1],
        "notifier_poll_seconds": 0.2})
    wanted: dict[str, tuple[ServiceDefinition, ServiceSettings]] = {
        "queries": (QUERIES, settings.model_copy(update={"service_name": "queries", "database_schema": schema("q")})),
        "kpi": (KPI, settings.model_copy(update={"service_name": "kpi", "database_schema": schema("k")})),
        "notifier": (notifier_definition(notifier_settings), notifier_settings),
    }
    runtimes: dict[str, ServiceRuntime] = {}
    clients = {"agreements": api}
    async with contextlib.AsyncExitStack() as running:
        for name, (definition, service_settings) in wanted.items():
            runtime = runtimes[name] = ServiceRuntime(definition, service_settings)
            app = runtime.app()
            await running.enter_async_context(app.router.lifespan_context(app))
            clients[name] = await running.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{name}"))
        yield Stack(runtimes, clients)
    for runtime in runtimes.values():
        await delete_broker_objects(settings.amqp_url, runtime)


async def call(client: httpx.AsyncClient, method: str, url: str, by: Party, body: dict[str, Any] | None = None,
               ) -> Any:
    response = await client.request(method, url, headers=by.headers, json=body)
    assert response.status_code in (200, 201), (method, url, response.status_code, response.text)
    return response.json()


async def active_agreement(stack: Stack, client: Party, provider: Party) -> uuid.UUID:
    """An active agreement with an urgent 1-minute first-response target and a level-1 provider contact,
    replicated to the queries and notifier services."""
    api = stack.clients["agreements"]
    drafted = await call(api, "POST", "/agreements", client, {
        "title": "Managed IT", "client_organisation_id": str(client.organisation_id),
        "provider_organisation_id": str(provider.organisation_id)})
    agreement_id = uuid.UUID(drafted["agreement_id"])
    url = f"/agreements/{agreement_id}"
    await call(api, "POST", f"{url}/contacts", provider, {
        "role": "service desk lead", "name": "ann", "email": "ann@provider.test", "escalation_level": 1})
    all_day = {"timezone": "UTC", "working_periods": [
        {"weekday": d, "start": "00:00:00", "end": "23:59:59.999999"} for d in range(7)]}
    await call(api, "POST", f"{url}/sla-policies", provider, {"policy": {"calendar": all_day, "targets": [
        {"priority": "urgent", "first_response_minutes": 1, "resolution_minutes": 2, "warn_at": [0.5]}]}})
    await call(api, "POST", f"{url}/proposal", client)
    for party in (client, provider):
        await call(api, "POST", f"{url}/acceptance", party)
    queries, notifier = stack.runtimes["queries"].pool, stack.runtimes["notifier"].pool
    await eventually(lambda: queries.fetchval(
        "SELECT status = 'active' FROM agreement_parties WHERE agreement_id = $1", agreement_id))
    await eventually(lambda: queries.fetchval(
        "SELECT count(*) FROM sla_policy_versions WHERE agreement_id = $1", agreement_id))
    await eventually(lambda: notifier.fetchval(
        "SELECT count(*) = 1 FROM notifier_contacts WHERE agreement_id = $1", agreement_id))
    # As tests/e2e/test_queries.py does: back-date the replica's policy so that a query raised a minute
    # ago falls under it, with its first-response deadline already passed.
    await queries.execute("UPDATE sla_policy_versions SET effective_from = effective_from - interval '1 hour'")
    return agreement_id


@pytest.mark.servers
async def test_every_metric_an_expression_names_is_exported(
    stack: Stack, agreements: ServiceRuntime, mailbox: tuple[Mailbox, int],
) -> None:
    catalogue = Catalogue()
    client, provider = await register_party(agreements, "client"), await register_party(agreements, "provider")
    for runtime in stack.runtimes.values():  # each service's replica of the parties knows both tokens
        await eventually(functools.partial(runtime.pool.fetchval, "SELECT count(*) = 2 FROM api_tokens"))
    agreement_id = await active_agreement(stack, client, provider)

    # An urgent query raised 61 s ago: its first response is overdue at once, the notifier emails ann.
    queries = stack.runtimes["queries"]
    raised = await query_handlers.raise_query(
        query_handlers.Context(queries.store, queries.pool), agreement_id,
        RaiseQuery(priority="urgent", subject="Mail server down", body="Since 9:00"),
        Metadata.new(f"user:{client.user_id}"), Principal(client.user_id, client.organisation_id),
        at=datetime.now(UTC) - timedelta(seconds=61))
    box = mailbox[0]
    await eventually(lambda: _true("ann@provider.test" in box.recipients), timeout=20)
    await refresh_gauges(queries.pool)  # the service refreshes them every few seconds too

    async def escalation_open() -> bool:  # the notifier's gauge, refreshed every few seconds
        await stack.scrape(catalogue)
        return "accord_notifier_open_escalations" in catalogue.sampled and "accord_queries_overdue" in \
            catalogue.sampled

    await eventually(escalation_open, timeout=15, interval=0.5)

    # The provider answers late (a breach; the kpi service counts the answer outside its SLA), and a
    # KPI reported below its breach threshold moves the customer health.
    await call(stack.clients["queries"], "POST", f"/queries/{raised.query_id}/answer", provider, {"answer": "Fixed"})
    kpi = await call(stack.clients["kpi"], "POST", f"/agreements/{agreement_id}/kpis", client, {
        "name": "First-time fix rate", "unit": "%", "direction": "higher_is_better", "target": 95,
        "warning_threshold": 90, "breach_threshold": 80, "cadence_seconds": 3600})
    now = datetime.now(UTC)
    await call(stack.clients["kpi"], "POST", f"/agreements/{agreement_id}/kpis/{kpi['id']}/values", provider, {
        "value": 70, "period_start": (now - timedelta(days=30)).isoformat(), "period_end": now.isoformat(),
        "evidence": "https://files.test/tickets.csv"})

    async def all_exported() -> bool:
        await stack.scrape(catalogue)
        return not catalogue.problems()

    with contextlib.suppress(AssertionError):
        await eventually(all_exported, timeout=20, interval=0.5)
    assert catalogue.problems() == [], "\n".join(catalogue.problems())
    assert FAILURE_ONLY.keys() <= catalogue.declared


async def _true(value: bool) -> bool:
    return value
