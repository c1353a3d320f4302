"""The monitoring files in deploy/ are valid, tested, and wired into the compose stack, without Docker.

promtool (Debian's `prometheus` package; `.ci/run` installs it) checks the Prometheus configuration and
the alert rules, and runs the rules' unit tests in `deploy/prometheus/alerts_test.yml`. Without promtool
those three tests skip locally, and fail in CI. The other checks read the files: every alert is
documented and tested both ways (firing, silent), and docker-compose.yml mounts what Prometheus,
Grafana and RabbitMQ need, where their configuration looks for it. Whether the expressions name only
metrics the services export is tests/e2e/test_metrics_catalogue.py's question.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from accord_runtime.settings import ServiceSettings
from tests.unit.test_deploy import ROOT, accord_services, environment, services

PROMETHEUS = ROOT / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS / "prometheus.yml"
ALERTS = PROMETHEUS / "alerts.yml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
RABBITMQ_PLUGINS = ROOT / "deploy" / "rabbitmq" / "enabled_plugins"

SERVICE_PORT = ServiceSettings.model_fields["http_port"].default
RABBITMQ_PROMETHEUS_PORT = 15692  # the rabbitmq_prometheus plugin's port
PROMETHEUS_PORT = 9090
SEVERITIES = {"critical", "warning"}
AREAS = {"accord-sla": "sla", "accord-platform": "platform"}

# What issue 7 asks the alerts to cover, and the alert that does.
REQUIRED_ALERTS = {
    "overdue queries": "AccordUrgentQueriesOverdue",
    "KPI breaches": "AccordKPIBreached",
    "red health": "AccordCustomerHealthRed",
    "unacknowledged reports": "AccordKPIReportsUnacknowledged",
    "outbox backlog growing": "AccordOutboxBacklogGrowing",
    "dead-letter queue not empty": "AccordDeadLetterQueueNotEmpty",
    "consumer lag": "AccordConsumerLag",
    "a service down": "AccordServiceDown",
}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> Iterator[tuple[str, dict[str, Any]]]:
    """(group name, rule) for every alerting rule in alerts.yml."""
    for group in load(ALERTS)["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                yield group["name"], rule


def alert_names() -> list[str]:
    return [rule["alert"] for _, rule in alert_rules()]


def mounts(service: dict[str, Any]) -> dict[str, Path | str]:
    """A compose service's volumes as {container path: host path (bind mount) or volume name}."""
    found: dict[str, Path | str] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            source, target = volume["source"], volume["target"]
        else:
            source, target, *_ = str(volume).split(":")
        found[target] = (ROOT / source).resolve() if source.startswith((".", "/")) else source
    return found


def published_hosts(service: dict[str, Any]) -> list[str]:
    """The host addresses a compose service's ports are published on ("" for all interfaces)."""
    hosts = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            hosts.append(str(port.get("host_ip", "")))
        else:
            parts = str(port).split(":")
            hosts.append(parts[0] if len(parts) == 3 else "")
    return hosts


# --- promtool ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed: .ci/run installs Debian's prometheus package for it")
        pytest.skip("promtool is not installed (apt-get install --no-install-recommends prometheus); CI runs these")
    return found


def run_promtool(promtool: str, *args: str) -> str:
    done = subprocess.run([promtool, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{output}"
    return output


def test_prometheus_configuration_is_valid(promtool: str) -> None:
    run_promtool(promtool, "check", "config", str(PROMETHEUS_CONFIG.relative_to(ROOT)))


def test_alert_rules_are_valid(promtool: str) -> None:
    output = run_promtool(promtool, "check", "rules", str(ALERTS.relative_to(ROOT)))
    assert f"{len(alert_names())} rules found" in output


def test_alert_rules_pass_their_unit_tests(promtool: str) -> None:
    run_promtool(promtool, "test", "rules", str(ALERTS_TEST.relative_to(ROOT)))


# --- the alerts themselves -----------------------------------------------------------------------


def test_prometheus_loads_the_alert_rules() -> None:
    assert load(PROMETHEUS_CONFIG)["rule_files"] == [ALERTS.name]
    assert load(ALERTS_TEST)["rule_files"] == [ALERTS.name]


def test_every_alert_is_documented_and_waits_before_firing() -> None:
    names = alert_names()
    assert len(names) == len(set(names)), "deploy/prometheus/alerts.yml: alert names repeat"
    for group, rule in alert_rules():
        where = f"deploy/prometheus/alerts.yml {rule['alert']}"
        assert rule["alert"].startswith("Accord"), f"{where}: name alerts Accord…"
        assert "for" in rule, f"{where}: give it a `for:` duration"
        labels, annotations = rule.get("labels", {}), rule.get("annotations", {})
        assert labels.get("severity") in SEVERITIES, f"{where}: severity one of {sorted(SEVERITIES)}"
        assert labels.get("area") == AREAS[group], f"{where}: area {AREAS[group]} (its group is {group})"
        assert annotations.get("summary", "").strip(), f"{where}: a summary"
        assert len(annotations.get("description", "")) > 40, f"{where}: a description of what it means"


def test_the_issue_s_matters_each_have_an_alert() -> None:
    missing = {matter: name for matter, name in REQUIRED_ALERTS.items() if name not in alert_names()}
    assert missing == {}


def test_every_alert_is_tested_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in load(ALERTS_TEST)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    known = set(alert_names())
    assert (firing | silent) - known == set(), "alerts_test.yml tests alerts alerts.yml does not have"
    assert known - firing == set(), "alerts_test.yml: show these alerts firing"
    assert known - silent == set(), "alerts_test.yml: show these alerts staying silent (exp_alerts: [])"


# --- wired into the compose stack ----------------------------------------------------------------


def scrape_targets() -> dict[str, list[str]]:
    return {job["job_name"]: [target for static in job.get("static_configs", []) for target in static["targets"]]
            for job in load(PROMETHEUS_CONFIG)["scrape_configs"]}


def test_prometheus_scrapes_every_accord_service_and_rabbitmq() -> None:
    targets = scrape_targets()
    assert sorted(targets["accord"]) == sorted(f"{name}:{SERVICE_PORT}" for name in accord_services()), (
        "deploy/prometheus/prometheus.yml job accord: scrape every service built from the Dockerfile")
    for job in ("rabbitmq", "rabbitmq-queues"):
        assert targets[job] == [f"rabbitmq:{RABBITMQ_PROMETHEUS_PORT}"], job
    for job, hosts in targets.items():
        for target in hosts:
            host = target.rpartition(":")[0]
            assert host in services() or host == "localhost", f"prometheus.yml job {job}: {host} is no compose service"


def test_rabbitmq_enables_its_prometheus_plugin() -> None:
    plugins = RABBITMQ_PLUGINS.read_text()
    assert "rabbitmq_prometheus" in plugins and "rabbitmq_management" in plugins
    assert plugins.strip().startswith("[") and plugins.strip().endswith("]."), "an Erlang list, ended by a full stop"
    assert mounts(services()["rabbitmq"]).get("/etc/rabbitmq/enabled_plugins") == RABBITMQ_PLUGINS


def test_prometheus_reads_the_mounted_configuration() -> None:
    service = services()["prometheus"]
    assert mounts(service).get("/etc/prometheus") == PROMETHEUS
    assert "--config.file=/etc/prometheus/prometheus.yml" in service["command"]
    assert published_hosts(service) == ["127.0.0.1"], "publish Prometheus on the loopback interface only"


def test_grafana_provisions_the_datasource_and_the_dashboards() -> None:
    service = services()["grafana"]
    volumes = mounts(service)
    assert volumes.get("/etc/grafana/provisioning") == GRAFANA / "provisioning"
    assert published_hosts(service) == ["127.0.0.1"], "publish Grafana on the loopback interface only"
    assert service["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert environment(service)["GF_SECURITY_ADMIN_PASSWORD"], "a (development-only) admin password"

    providers = load(GRAFANA / "provisioning" / "dashboards" / "accord.yml")["providers"]
    paths = {provider["options"]["path"] for provider in providers}
    assert {volumes.get(path) for path in paths} == {DASHBOARDS}, "the dashboards provider reads the mounted folder"
    home = Path(environment(service)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert volumes.get(str(home.parent)) == DASHBOARDS and (DASHBOARDS / home.name).is_file()

    sources = load(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    url = urlsplit(sources[0]["url"])
    assert (url.hostname, url.port) == ("prometheus", PROMETHEUS_PORT)
    uids = {source["uid"] for source in sources}
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for item in [panel, *panel.get("targets", [])]:
                if "datasource" in item:
                    where = f"{path.name} panel {panel['title']!r}"
                    assert item["datasource"]["uid"] in uids, f"{where}: unknown datasource"


def test_dashboards_are_distinct_and_well_formed() -> None:
    boards = {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}
    assert set(boards) == {"sla-overview.json", "platform.json"}
    assert len({board["uid"] for board in boards.values()}) == len(boards), "dashboard uids must differ"
    for name, board in boards.items():
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: panel ids repeat"
        for panel in board["panels"]:
            assert panel["type"] == "row" or panel.get("targets"), f"{name} {panel['title']!r}: no query"
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, f"{name} {panel['title']!r}: wider than 24"
