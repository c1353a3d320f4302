"""Schemathesis against every operation of every service's OpenAPI, in this process over the real servers.

Stateless and per operation: hypothesis draws valid (positive) and invalid (negative) requests from the
operation's schema, authenticated as the client or the provider of the fixture agreement; half of the
draws aim at that agreement and its parts (real ids in the path and body) instead of random ones, so the
handlers run and not only the 404 path. Checks: no 5xx (`not_a_server_error`) and every documented
response's body matches its schema (`response_schema_conformance`).

Three properties hold for every route at once, so each has a test of its own (they were findings of
this file, fixed in the HTTP shell): the error statuses are documented (401, 403, 404, 409:
`test_error_statuses_are_documented`), a domain rule's 422 has the documented 422 shape
(`test_a_domain_refusal_matches_the_documented_422`), and NUL characters in text are refused with 422
at the edge (`test_a_nul_character_is_bad_input`; the per-operation runs generate no NUL).

A finding is never fixed here: a finding of one operation marks it `xfail(strict=True)` with the reason
(`FINDINGS`, empty today), so the test turns red once the service is fixed and the mark must go.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import hypothesis
import hypothesis.strategies as st
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from accord_runtime.http import create_app
from accord_runtime.service import ServiceDefinition
from services.agreements.main import DEFINITION as AGREEMENTS
from services.kpi.main import DEFINITION as KPI
from services.notifier.main import definition as notifier_definition
from services.notifier.settings import NotifierSettings
from services.queries.main import DEFINITION as QUERIES
from tests.e2e.test_authorization_matrix import OPERATIONAL, Service, World, openapi_operations, running_world

pytestmark = pytest.mark.servers

MAX_EXAMPLES = 25


def _domain_refusal(response: Any) -> bool:
    """A 422 a domain rule answered: one `value_error` about the whole body, in the documented
    validation-error shape (`{"detail": [{"loc": ["body"], "msg": "<reason>", "type": "value_error"}]}`)."""
    if response.status_code != 422:
        return False
    try:
        detail = json.loads(response.content).get("detail")
    except (ValueError, AttributeError):
        return False
    return (isinstance(detail, list) and len(detail) == 1 and detail[0].get("loc") == ["body"]
            and detail[0].get("type") == "value_error" and bool(detail[0].get("msg")))


CHECKS = [not_a_server_error, response_schema_conformance]


def _definitions() -> dict[Service, ServiceDefinition]:
    # the packaged rules; no settings are read from the environment (model_construct: defaults only)
    return {"agreements": AGREEMENTS, "queries": QUERIES, "kpi": KPI,
            "notifier": notifier_definition(NotifierSettings.model_construct(service_name="notifier"))}


def _documented() -> dict[Service, dict[str, Any]]:
    """Each service's OpenAPI document, from its routers alone (nothing connects)."""
    return {name: create_app(title=f"Accord {name}", routers=d.routers, readiness={},
                             error_statuses=d.error_statuses).openapi()
            for name, d in _definitions().items()}


OPENAPI = _documented()
#: Commands that end or pause the fixture agreement run last (termination the very last), so that the
#: operations before them meet an active agreement.
LIFECYCLE = ("/proposal", "/acceptance", "/renewal", "/suspension", "/resumption", "/termination")


def _order(operation: tuple[str, str, str]) -> tuple[int, tuple[str, str, str]]:
    service, _, path = operation
    ending = [i for i, end in enumerate(LIFECYCLE, 1) if service == "agreements" and path.endswith(end)]
    return (ending[0] if ending else 0), operation


OPERATIONS = sorted(((name, method.upper(), path) for name, document in OPENAPI.items()
                     for path, operations in document["paths"].items() for method in operations
                     if (method.upper(), path) not in OPERATIONAL), key=_order)

#: (service, method, path) → what schemathesis found there; each is marked xfail(strict=True).
FINDINGS: dict[tuple[str, str, str], str] = {}


def _param(operation: tuple[str, str, str]) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=FINDINGS[operation])] if operation in FINDINGS else []
    return pytest.param(*operation, id=" ".join(operation), marks=marks)


@pytest.fixture(scope="module")
async def world(database_url: str, amqp_url: str) -> AsyncIterator[World]:
    """One world for the whole module: schemathesis runs every operation against the same services."""
    async with running_world(database_url, amqp_url) as started:
        yield started


@pytest.fixture(scope="module")
async def apis(world: World) -> AsyncIterator[dict[Service, httpx.AsyncClient]]:
    """Clients that see an unhandled exception as the 500 a server would answer (not as a raise)."""
    async with contextlib.AsyncExitStack() as stack:
        yield {name: await stack.enter_async_context(httpx.AsyncClient(
            transport=httpx.ASGITransport(app=runtime.http, raise_app_exceptions=False),  # type: ignore[attr-defined]
            base_url=f"http://{name}")) for name, runtime in world.runtimes.items()}


@pytest.fixture(scope="module")
async def real_ids(world: World) -> dict[str, str]:
    """An id of each kind of part of the fixture agreement, for path parameters."""
    procedure_id, step_id = await world.procedure()
    return {
        "agreement_id": world.agreement_id, "step_id": step_id,
        "client_organisation_id": str(world.client.organisation_id),
        "provider_organisation_id": str(world.provider.organisation_id), "goal_id": await world.goal(),
        "requirement_id": await world.requirement(), "deliverable_id": await world.deliverable(),
        "contact_id": await world.contact(), "procedure_id": procedure_id, "breakdown_id": await world.breakdown(),
        "change_id": await world.scope_change(), "disagreement_id": await world.disagreement(),
        "query_id": await world.query(), "kpi_id": await world.kpi(), "report_id": await world.report(),
        "escalation_id": await world.escalation(),
    }


async def test_the_running_services_document_what_was_collected(world: World) -> None:
    assert openapi_operations(world.runtimes) == set(OPERATIONS)


def _request(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A schemathesis request (requests-style keyword arguments) as httpx keyword arguments."""
    request = {"method": kwargs["method"], "url": kwargs["url"], "headers": kwargs.get("headers") or {},
               "params": kwargs.get("params") or None, "cookies": kwargs.get("cookies") or None}
    if "json" in kwargs:
        request["json"] = kwargs["json"]
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        request["content"] = data if isinstance(data, bytes | str) else None
        if not isinstance(data, bytes | str):
            request["data"] = data
    return request


def _aim(case: Any, real_ids: dict[str, str]) -> None:
    """Point the generated request at the fixture agreement's parts: path ids, and the ids a body names."""
    for name in case.path_parameters or {}:
        if name in real_ids:
            case.path_parameters[name] = real_ids[name]
    if isinstance(case.body, dict):
        for name in case.body:
            if name in real_ids:
                case.body[name] = real_ids[name]


@pytest.mark.parametrize(("service", "method", "path"), [_param(o) for o in OPERATIONS])
async def test_operation(world: World, apis: dict[Service, httpx.AsyncClient], real_ids: dict[str, str],
                         service: Service, method: str, path: str) -> None:
    schema = schemathesis.openapi.from_dict(OPENAPI[service])
    # NUL characters are refused at the edge for every text field (see test_a_nul_character_is_bad_input)
    # the caller's bearer token is ours (a party's), not one schemathesis makes up
    schema.config.generation.update(allow_x00=False, with_security_parameters=False)
    operation = schema[path][method]
    api, loop = apis[service], asyncio.get_running_loop()
    strategy = st.one_of(operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
                         operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))

    def send(kwargs: dict[str, Any]) -> httpx.Response:
        return asyncio.run_coroutine_threadsafe(api.request(**_request(kwargs)), loop).result(timeout=60)

    @hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=False,
                         suppress_health_check=list(hypothesis.HealthCheck),
                         phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate, hypothesis.Phase.shrink])
    @hypothesis.given(case=strategy, aim_at_the_fixture=st.booleans(), side=st.sampled_from(["client", "provider"]))
    def run(case: Any, aim_at_the_fixture: bool, side: str) -> None:
        if aim_at_the_fixture:
            _aim(case, real_ids)
        kwargs = case.as_transport_kwargs(base_url=f"http://{service}", headers=world.party(side).headers)
        response = send(kwargs)
        case.validate_response(response, checks=CHECKS)

    try:
        await asyncio.to_thread(run)
    except FailureGroup as failures:  # hypothesis re-raises the minimal example's failures
        pytest.fail(str(failures), pytrace=False)


@pytest.mark.parametrize(("service", "path", "body"), [
    ("agreements", "/agreements/{agreement_id}/goals", {"outcome": "a\u0000b", "success_measure": "days"}),
    ("queries", "/agreements/{agreement_id}/queries", {"subject": "VAT\u0000", "body": "Which rate?"}),
    ("kpi", "/agreements/{agreement_id}/kpis", {
        "name": "close\u0000", "unit": "%", "direction": "higher_is_better", "target": 95,
        "warning_threshold": 90, "breach_threshold": 80, "cadence_seconds": 3600}),
], ids=["agreements", "queries", "kpi"])
async def test_a_nul_character_is_bad_input(world: World, apis: dict[Service, httpx.AsyncClient], service: Service,
                                            path: str, body: dict[str, Any]) -> None:
    response = await apis[service].post(path.format(agreement_id=world.agreement_id), json=body,
                                        headers=world.client.headers)
    assert response.status_code == 422, (response.status_code, response.text)


@pytest.mark.parametrize(("service", "method", "path", "body", "query"), [
    ("agreements", "POST", "/agreements", {"title": "Self-dealing", "client_organisation_id": "{organisation}",
                                           "provider_organisation_id": "{organisation}"}, None),
    ("kpi", "POST", "/agreements/{agreement_id}/kpis", {
        "name": "Backwards", "unit": "%", "direction": "higher_is_better", "target": 80, "warning_threshold": 90,
        "breach_threshold": 95, "cadence_seconds": 60}, None),
    ("kpi", "GET", "/agreements/{agreement_id}/health/history", None,
     {"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}),
], ids=["agreements draft", "kpi thresholds", "kpi period"])
async def test_a_domain_refusal_matches_the_documented_422(
        world: World, apis: dict[Service, httpx.AsyncClient], service: Service, method: str, path: str,
        body: dict[str, Any] | None, query: dict[str, str] | None) -> None:
    organisation = str(world.client.organisation_id)
    if body is not None:
        body = {k: v.format(organisation=organisation) if isinstance(v, str) else v for k, v in body.items()}
    operation = schemathesis.openapi.from_dict(OPENAPI[service])[path][method]
    url = path.format(agreement_id=world.agreement_id)
    response = await apis[service].request(method, url, json=body, params=query, headers=world.client.headers)
    assert response.status_code == 422 and _domain_refusal(response), response.text
    case = operation.Case(path_parameters={"agreement_id": world.agreement_id} if "{" in path else None,
                          body=body if body is not None else schemathesis.core.NOT_SET, query=query)
    case.validate_response(response, checks=[response_schema_conformance])


def test_error_statuses_are_documented() -> None:
    """Every route of an agreement answers 401 without a token, 403 for a non-party and 404 for an unknown
    id (README); schemathesis' `status_code_conformance` holds undocumented statuses to be errors."""
    undocumented = []
    for service, method, path in OPERATIONS:
        documented = set(OPENAPI[service]["paths"][path][method.lower()]["responses"])
        wanted = {"401", "403", "404"} if service != "notifier" or "/ack" not in path else {"403", "404"}
        if missing := wanted - documented:
            undocumented.append(f"{service} {method} {path}: {sorted(missing)}")
    assert not undocumented, "\n".join(undocumented)


def test_every_operation_is_collected() -> None:
    assert len(OPERATIONS) == len(set(OPERATIONS)) > 70
    assert {s for s, _, _ in OPERATIONS} == {"agreements", "queries", "kpi", "notifier"}


def _free_form(schema: dict[str, Any]) -> bool:
    """A schema that says nothing of its content: any object, or a list of anything."""
    if schema.get("type") == "array":
        return _free_form(schema.get("items", {}))
    return not schema or (schema.get("type") == "object" and "properties" not in schema)


def test_every_json_answer_documents_its_shape() -> None:
    """Integrators (and `response_schema_conformance` above) read each success response's shape from
    the OpenAPI document; a route typed `dict[str, Any]` or with no response model documents none."""
    shapeless = []
    for service, method, path in OPERATIONS:
        responses = OPENAPI[service]["paths"][path][method.lower()]["responses"]
        for code, response in responses.items():
            schema = response.get("content", {}).get("application/json", {}).get("schema")
            if code.startswith("2") and schema is not None and _free_form(schema):
                shapeless.append(f"{service} {method} {path} {code}: {schema}")
    assert not shapeless, "\n".join(shapeless)
