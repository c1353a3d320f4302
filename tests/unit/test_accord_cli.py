"""The `accord` CLI without the services: exit codes and messages (against a tiny real HTTP server on
loopback), and the pure helpers that format and filter."""

from __future__ import annotations

import json
import shlex
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest
import typer
from typer.testing import CliRunner

from accord_cli.demo import seed_identities
from accord_cli.dlq import dead_letter_queues, original_target
from accord_cli.events import matches_agreement, matches_type, one_line
from accord_cli.http import refusal
from accord_cli.main import app
from accord_cli.output import detail_text, short_time

runner = CliRunner()
TOKEN = "acc_secret-token-value"


class _Refusing(BaseHTTPRequestHandler):
    """Answers every GET with 409 and a FastAPI-style detail, or 401 without the expected token."""

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            status, body = 401, {"detail": "invalid or revoked token"}
        else:
            status, body = 409, {"detail": "the agreement is suspended"}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def service_url() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_help_documents_the_exit_codes() -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Exit codes: 0 done; 1 a service refused" in result.output and "3 a service" in result.output


def test_a_refusal_exits_1_with_the_services_detail_and_never_the_token(service_url: str) -> None:
    env = {"ACCORD_AGREEMENTS_URL": service_url, "ACCORD_TOKEN": TOKEN}
    refused = runner.invoke(app, ["agreements", "list"], env=env)
    assert refused.exit_code == 1
    assert "agreements: 409 Conflict: the agreement is suspended" in refused.output
    unauthorised = runner.invoke(app, ["--token", "acc_wrong", "agreements", "list", "--json"], env=env)
    assert unauthorised.exit_code == 1 and "401 Unauthorized: invalid or revoked token" in unauthorised.output
    assert TOKEN not in refused.output + unauthorised.output and "acc_wrong" not in unauthorised.output


def test_an_unreachable_service_exits_3_and_a_missing_token_2() -> None:
    port = _closed_port()
    result = runner.invoke(app, ["queries", "list", "a1"], env={
        "ACCORD_QUERIES_URL": f"http://127.0.0.1:{port}", "ACCORD_TOKEN": TOKEN})
    assert result.exit_code == 3 and f"cannot reach the queries service at http://127.0.0.1:{port}" in result.output
    missing = runner.invoke(app, ["agreements", "list"], env={"ACCORD_TOKEN": ""})
    assert missing.exit_code == 2 and "no API token" in missing.output


def test_usage_errors_exit_2() -> None:
    assert runner.invoke(app, ["agreements", "nonsense"]).exit_code == 2
    both = runner.invoke(app, ["queries", "list", "a1", "--overdue", "--at-risk"], env={"ACCORD_TOKEN": TOKEN})
    assert both.exit_code == 2 and "exclude each other" in both.output
    assert runner.invoke(app, ["dlq", "requeue"]).exit_code == 2
    assert runner.invoke(app, ["rebuild", "billing"]).exit_code == 2


def test_validation_details_become_one_line() -> None:
    detail = [{"loc": ["body", "priority"], "msg": "Input should be 'low', 'normal', 'high' or 'urgent'"},
              {"loc": ["query", "limit"], "msg": "too big"}]
    assert detail_text(detail) == "priority: Input should be 'low', 'normal', 'high' or 'urgent'; query.limit: too big"
    response = httpx.Response(422, json={"detail": detail})
    assert refusal("queries", response).startswith("queries: 422 Unprocessable Entity: priority: Input")
    assert refusal("kpi", httpx.Response(502, text="bad gateway")) == "kpi: 502 Bad Gateway: bad gateway"
    assert short_time("2026-03-31T12:34:56+00:00") == "2026-03-31 12:34" and short_time(None) == "-"


def test_event_filters_and_lines() -> None:
    event = {"type": "accord.queries.QueryOverdue.v1", "time": "2026-03-31T12:34:56Z", "actor": "system:queries",
             "subject": "query-1", "data": {"agreement_id": "ag-1", "query_id": "q-1", "clock": "first_response"}}
    for pattern in ("QueryOverdue", "queries.QueryOverdue", "accord.queries.QueryOverdue.v1", "Query*", "queries.*"):
        assert matches_type(event, [pattern]), pattern
    assert not matches_type(event, ["QueryRaised", "kpi.*"]) and matches_type(event, [])
    assert matches_agreement(event, "ag-1") and not matches_agreement(event, "ag-2")
    assert matches_agreement({"subject": "agreement-ag-3", "data": {}}, "ag-3")
    line = one_line(event).plain
    assert "queries.QueryOverdue" in line and "clock=first_response" in line and "by system:queries" in line


def test_dead_letter_targets_and_queue_names() -> None:
    assert original_target({"x-accord-original-exchange": "accord.events",
                            "x-accord-original-routing-key": "agreements.AgreementActivated"}) == (
        "accord.events", "agreements.AgreementActivated")
    broker_dead = {"x-death": [{"exchange": "accord.events", "routing-keys": ["kpi.KPIBreached"], "reason": "rejected",
                                "queue": "accord.notifier.escalations", "count": 20}]}
    assert original_target(broker_dead) == ("accord.events", "kpi.KPIBreached")
    assert original_target({}) is None
    assert dead_letter_queues(["queries.agreements", "accord.kpi.relationship", "x.y.z.dlq"], "accord") == [
        "accord.queries.agreements.dlq", "accord.kpi.relationship.dlq", "x.y.z.dlq"]
    everything = dead_letter_queues(None, "p")
    assert "p.queries.agreements.dlq" in everything and "p.agreements.clarifications.dlq" in everything
    assert all(name.startswith("p.") and name.endswith(".dlq") for name in everything)


def test_the_demo_can_register_through_an_admin_command() -> None:
    made = {"organisation_id": "o-1", "user_id": "u-1", "token": "acc_t"}
    script = f"import sys; print('log line'); print({json.dumps(made)!r}) if sys.argv[1] == 'bootstrap' else 0"
    [member] = seed_identities([("Acme", "Ada", "ada@acme.test")], f"{sys.executable} -c {shlex.quote(script)}")
    assert (member.organisation, member.organisation_id, member.user_id, member.token) == ("Acme", "o-1", "u-1",
                                                                                           "acc_t")
    failing = f"{sys.executable} -c {shlex.quote('import sys; sys.exit(4)')}"
    with pytest.raises(typer.Exit) as exited:
        seed_identities([("Acme", "Ada", "ada@acme.test")], failing)
    assert exited.value.exit_code == 1
