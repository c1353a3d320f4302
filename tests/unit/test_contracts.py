"""The contracts: committed JSON Schemas match the models; versions are handled deliberately."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

import jsonschema
import pytest
from pydantic import ValidationError

from contracts import REGISTRY, CloudEvent, EventData, EventRegistry, UnknownEventType
from contracts.agreements import AgreementDrafted, ScopeChangeAssessed
from contracts.export import SCHEMA_DIR, render, schema_documents
from contracts.kpi import CustomerHealthChanged


def test_committed_schemas_match_the_models() -> None:
    """Fails when a model changed without `accord-contracts export` (or a schema was hand-edited)."""
    expected = {name: render(doc) for name, doc in schema_documents().items()}
    committed = {path.name: path.read_text() for path in SCHEMA_DIR.glob("*.json")}
    assert sorted(committed) == sorted(expected), "schema files added or missing: run accord-contracts export"
    for name, text in expected.items():
        assert committed[name] == text, f"{name} drifted from its model: run accord-contracts export"


def test_every_event_type_is_versioned_and_routable() -> None:
    for model in REGISTRY:
        assert model.event_type() == f"accord.{model.EVENT_SERVICE}.{model.EVENT_NAME}.v{model.EVENT_VERSION}"
        assert model.routing_key() == f"{model.EVENT_SERVICE}.{model.EVENT_NAME}"


def envelope(data: dict[str, Any], event_type: str = "accord.agreements.AgreementDrafted.v1") -> dict[str, Any]:
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "/accord/agreements", "type": event_type,
            "subject": "agreement-1", "time": datetime.now(UTC).isoformat(), "datacontenttype": "application/json",
            "data": data, "sequence": 1, "correlationid": str(uuid.uuid4()), "actor": "user:1"}


def drafted_data() -> dict[str, Any]:
    return AgreementDrafted(agreement_id=uuid.uuid4(), title="T", client_organisation_id=uuid.uuid4(),
                            provider_organisation_id=uuid.uuid4(), drafted_by_side="client").model_dump(mode="json")


def test_envelope_validates_against_its_committed_schema() -> None:
    document = envelope(drafted_data())
    schema = json.loads((SCHEMA_DIR / "cloudevent.json").read_text())
    jsonschema.validate(document, schema)
    parsed = CloudEvent.model_validate_json(json.dumps(document))
    assert parsed.routing_key == "agreements.AgreementDrafted"
    data_schema = json.loads((SCHEMA_DIR / "accord.agreements.AgreementDrafted.v1.json").read_text())
    jsonschema.validate(parsed.data, data_schema)


@pytest.mark.parametrize("change", [
    {"specversion": "0.3"}, {"type": "AgreementDrafted"}, {"sequence": 0}, {"time": "2026-01-01T00:00:00"},
    {"unexpected": 1},
])
def test_bad_envelopes_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CloudEvent.model_validate_json(json.dumps(envelope(drafted_data()) | change))


@pytest.mark.parametrize("read", ["validate", "decode"])
def test_unknown_and_newer_types_are_refused_deliberately(read: str) -> None:
    with pytest.raises(UnknownEventType):
        getattr(REGISTRY, read)("accord.agreements.AgreementDrafted.v2", drafted_data())
    with pytest.raises(UnknownEventType):
        getattr(REGISTRY, read)("accord.agreements.SomethingElse.v1", {})
    with pytest.raises(ValidationError):
        getattr(REGISTRY, read)("accord.agreements.AgreementDrafted.v1", drafted_data() | {"title": 5})


def test_validating_is_strict_decoding_reads_the_wire_forms_alike() -> None:
    """`validate` (data from outside) refuses what only a lax reading would take; `decode` (data
    validated before) gives the same model for every event's wire form, and decodes a dict once."""
    with pytest.raises(ValidationError):
        REGISTRY.validate("accord.agreements.AgreementActivated.v1",
                          {"agreement_id": str(uuid.uuid4()), "agreement_version": "3"})
    data, drafted = drafted_data(), AgreementDrafted.event_type()
    assert REGISTRY.decode(drafted, data) == REGISTRY.validate(drafted, data)
    assert REGISTRY.decode(drafted, data) is REGISTRY.decode(drafted, data)


def test_validating_keeps_big_integers_and_non_finite_floats_as_sent() -> None:
    """`validate` writes the data as JSON to check it in JSON mode: an integer beyond 64 bits stays
    exact, and NaN stays NaN (not null) where the model allows it, and is refused where not."""
    big = 2**70 + 1
    assessed = REGISTRY.validate(ScopeChangeAssessed.event_type(), {
        "agreement_id": str(uuid.uuid4()), "change_id": str(uuid.uuid4()), "effort_hours": big,
        "cost_minor_units": big * 3, "currency": "EUR", "timeline_impact_days": 0})
    assert isinstance(assessed, ScopeChangeAssessed)
    assert (assessed.effort_hours, assessed.cost_minor_units) == (big, big * 3)
    health = {"agreement_id": str(uuid.uuid4()), "from_band": "green", "to_band": "yellow", "score": 50.0,
              "previous_score": float("nan"), "changed_at": "2026-11-24T06:00:00+00:00"}
    changed = REGISTRY.validate(CustomerHealthChanged.event_type(), health)
    assert isinstance(changed, CustomerHealthChanged)
    assert changed.previous_score is not None and math.isnan(changed.previous_score)
    with pytest.raises(ValidationError):
        REGISTRY.validate(CustomerHealthChanged.event_type(), health | {"score": float("inf")})


def test_old_versions_are_upcast_to_the_current_model() -> None:
    registry = EventRegistry()

    class ThingV1(EventData):
        EVENT_SERVICE: ClassVar[str] = "test"
        EVENT_NAME: ClassVar[str] = "ThingHappened"
        label: str

    class ThingV2(EventData):
        EVENT_SERVICE: ClassVar[str] = "test"
        EVENT_NAME: ClassVar[str] = "ThingHappened"
        EVENT_VERSION: ClassVar[int] = 2
        label: str
        weight: int

    registry.register(ThingV1)
    registry.register(ThingV2)

    @registry.upcaster("test", "ThingHappened", 1)
    def add_weight(data: dict[str, Any]) -> dict[str, Any]:
        return data | {"weight": 1}

    event = registry.decode("accord.test.ThingHappened.v1", {"label": "a"})
    assert event == ThingV2(label="a", weight=1) == registry.validate("accord.test.ThingHappened.v1", {"label": "a"})
    # What a bus consumer hands its handlers: the current form, whose decoding is the validated model.
    current_type, current = registry.validate_current("accord.test.ThingHappened.v1", {"label": "b"})
    assert (current_type, current) == ("accord.test.ThingHappened.v2", {"label": "b", "weight": 1})
    assert registry.decode(current_type, current) is registry.decode(current_type, current) == ThingV2(
        label="b", weight=1)
    with pytest.raises(UnknownEventType):
        registry.decode("accord.test.ThingHappened.v3", {"label": "a", "weight": 2})


def test_readers_ignore_fields_added_to_a_version_but_producers_are_strict() -> None:
    data = drafted_data() | {"added_later": "an optional field of a newer build"}
    event = REGISTRY.decode("accord.agreements.AgreementDrafted.v1", data)
    assert isinstance(event, AgreementDrafted) and event.title == "T"
    with pytest.raises(ValidationError):
        AgreementDrafted(**{**drafted_data(), "added_later": "x"})
    with pytest.raises(ValidationError):  # a known field of the wrong type is still refused
        REGISTRY.validate("accord.agreements.AgreementDrafted.v1", data | {"drafted_by_side": "nobody"})


def test_a_trusted_envelope_is_the_constructed_one() -> None:
    """`CloudEvent.trusted` takes pydantic's private shortcut: it must build what
    `model_construct` builds (and validation accepts), field for field, and stay frozen."""
    fields: dict[str, Any] = dict(
        id=uuid.uuid4(), source="/accord/agreements", type="accord.agreements.AgreementProposed.v1",
        subject="agreement-1", time=datetime.now(UTC), data={"agreement_id": str(uuid.uuid4())}, sequence=3,
        correlationid=uuid.uuid4(), causationid=None, actor="user:alice")
    trusted = CloudEvent.trusted(**fields)
    constructed = CloudEvent.model_construct(specversion="1.0", datacontenttype="application/json", **fields)
    assert trusted == constructed == CloudEvent.model_validate(fields)
    assert trusted.model_dump_json() == constructed.model_dump_json()
    assert trusted.model_fields_set == constructed.model_fields_set
    assert trusted.model_copy(update={"sequence": 4}).sequence == 4
    with pytest.raises(ValidationError):
        trusted.sequence = 5  # type: ignore[misc]
