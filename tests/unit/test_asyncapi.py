"""The AsyncAPI document: committed = generated, well formed, and saying what the runtime does."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest
import yaml
from faststream.specification.asyncapi.v3_0_0.schema import ApplicationSchema

from accord_runtime.topology import CONTENT_TYPE
from contracts import REGISTRY, CloudEvent
from contracts.asyncapi import ASYNCAPI_PATH, EXCHANGE, asyncapi_document, rendered
from contracts.export import SCHEMA_DIR
from contracts.queries import QueryRaised

COMPONENT_KEY = re.compile(r"^[A-Za-z0-9.\-_]+$")  # AsyncAPI 3.0: keys of the Components Object


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi_document()


def test_committed_document_matches_the_models() -> None:
    """Fails when a model changed without `accord-contracts export` (or the file was hand-edited)."""
    assert ASYNCAPI_PATH.read_text() == rendered(), "contracts/asyncapi.yaml drifted: run accord-contracts export"


def test_committed_document_is_the_same_data() -> None:
    assert yaml.safe_load(ASYNCAPI_PATH.read_text()) == asyncapi_document()


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references: {ref}"
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_document_is_well_formed_asyncapi_3(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] and document["info"]["version"]
    ApplicationSchema.model_validate(document)  # FastStream's own model of an AsyncAPI 3.0 document
    for section in ("messages", "schemas"):
        for key in document["components"][section]:
            assert COMPONENT_KEY.match(key), f"components/{section} key not allowed by AsyncAPI: {key}"
    for ref in set(_refs(document)):
        _resolve(document, ref)  # KeyError if dangling
    for name, schema in document["components"]["schemas"].items():
        # AsyncAPI's default schema format is a superset of JSON Schema Draft 07.
        jsonschema.Draft7Validator.check_schema(schema)
        assert "$defs" not in json.dumps(schema), f"{name} keeps a pydantic-local reference"
    for key, operation in document["operations"].items():
        channel = _resolve(document, operation["channel"]["$ref"])
        for message in operation["messages"]:
            assert message["$ref"].startswith(operation["channel"]["$ref"] + "/messages/"), key
            _resolve(document, message["$ref"])
        assert channel["address"] == key


def test_one_channel_per_event_type_as_the_relay_publishes_it(document: dict[str, Any]) -> None:
    models = list(REGISTRY)
    assert sorted(document["channels"]) == sorted(m.routing_key() for m in models)
    assert document["defaultContentType"] == CONTENT_TYPE
    for model in models:
        key = model.routing_key()
        channel = document["channels"][key]
        assert channel["address"] == key
        assert channel["bindings"]["amqp"]["is"] == "routingKey"
        exchange = channel["bindings"]["amqp"]["exchange"]
        assert (exchange["name"], exchange["type"], exchange["durable"], exchange["autoDelete"]) == (
            EXCHANGE, "topic", True, False)
        operation = document["operations"][key]
        assert operation["action"] == "send"
        binding = operation["bindings"]["amqp"]
        assert binding["cc"] == [key] and binding["deliveryMode"] == 2  # persistent
        assert binding["mandatory"] is False
        message = _resolve(document, channel["messages"]["Message"]["$ref"])
        assert message["name"] == model.event_type()
        assert message["contentType"] == CONTENT_TYPE
        assert message["correlationId"]["location"] == "$message.payload#/correlationid"
        payload = _resolve(document, message["payload"]["$ref"])
        assert payload["properties"]["type"]["const"] == model.event_type()
        assert set(payload["required"]) >= {"id", "source", "type", "subject", "time", "data", "sequence"}


def _normalised(schema: Any) -> Any:
    """A schema with pydantic's local references spelt as the document's, and the export's labels dropped."""
    text = json.dumps(schema).replace("#/$defs/", "#/components/schemas/")
    data = json.loads(text)
    for key in ("$id", "$defs", "title", "x-routing-key", "x-contracts-version"):
        data.pop(key, None)
    return data


def test_data_schemas_are_the_exported_json_schemas(document: dict[str, Any]) -> None:
    """The AsyncAPI `data` of each type says what `contracts/schemas/<type>.json` says."""
    schemas = document["components"]["schemas"]
    for model in REGISTRY:
        exported = json.loads((SCHEMA_DIR / f"{model.event_type()}.json").read_text())
        envelope = schemas[model.event_type()]
        data = _resolve(document, envelope["properties"]["data"]["$ref"])
        assert _normalised(data) == _normalised(exported), model.event_type()
        for name, nested in exported.get("$defs", {}).items():
            assert _normalised(schemas[name]) == _normalised(nested), f"{model.event_type()}: {name}"


def _validator(document: dict[str, Any], event_type: str) -> jsonschema.protocols.Validator:
    root = {"$ref": f"#/components/schemas/{event_type}", "components": document["components"]}
    return jsonschema.Draft202012Validator(root, format_checker=jsonschema.FormatChecker())


def _event(**changes: Any) -> dict[str, Any]:
    data = QueryRaised(query_id=uuid.uuid4(), agreement_id=uuid.uuid4(), raised_by_side="client",
                       addressed_to_side="provider", priority="high", subject="Where is it?", body="Today?")
    envelope = CloudEvent(id=uuid.uuid4(), source="/accord/queries", type=QueryRaised.event_type(),
                          subject=str(data.query_id), time=datetime.now(UTC), data=data.model_dump(mode="json"),
                          sequence=1, correlationid=uuid.uuid4(), actor="user:1")
    return envelope.model_dump(mode="json") | changes


def test_envelope_schema_accepts_real_events_and_refuses_others(document: dict[str, Any]) -> None:
    validator = _validator(document, QueryRaised.event_type())
    validator.validate(_event())
    wrong = [
        _event(type="accord.queries.QueryRaised.v2"),
        _event(type="accord.queries.QueryClosed.v1"),
        _event(sequence=0),
        _event(data={"query_id": "not-a-uuid"}),
        _event(unexpected=1),
    ]
    for event in wrong:
        assert not validator.is_valid(event), event
