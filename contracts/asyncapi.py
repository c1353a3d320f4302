"""The AsyncAPI 3.0 document of every event Accord publishes, generated from the registry.

FastStream's AsyncAPI generator does the work: one documented publisher per event type on the
durable topic exchange, with its routing key, persistent delivery and, as message schema, the
CloudEvents envelope whose ``type`` is that event's type and whose ``data`` is that event's model.
FastStream has no option for three things, so `asyncapi_document` sets them on its output:

* the message content type: Accord publishes ``application/cloudevents+json`` (FastStream
  documents only a ``defaultContentType`` of ``application/json``);
* the correlation id: Accord carries it in the envelope (``correlationid``), not in the AMQP
  ``correlation_id`` property FastStream points at;
* component keys: FastStream names messages ``<channel>:Message``, and AsyncAPI 3.0 allows only
  ``[A-Za-z0-9._-]`` in component keys, so each message is keyed by its CloudEvents type instead.

``accord-contracts export`` writes the document to ``contracts/asyncapi.yaml``; a test fails when
the committed file differs from what the models produce.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Literal

import yaml
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange
from faststream.specification import AsyncAPI
from pydantic import BaseModel, Field, create_model

from contracts import CONTRACTS_VERSION, REGISTRY, CloudEvent, EventData, EventRegistry

ASYNCAPI_PATH = Path(__file__).parent / "asyncapi.yaml"
ASYNCAPI_VERSION = "3.0.0"
#: The exchange's default name; a deployment may choose another (``ACCORD_EXCHANGE``).
EXCHANGE = "accord.events"
#: What the outbox relay sets as the AMQP ``content_type`` of every event message.
CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
SERVER_URL = "amqp://localhost:5672/"

DESCRIPTION = f"""\
Every event of Accord's four services (agreements, queries, kpi, notifier), as published to RabbitMQ.

* **Exchange**: one durable topic exchange, `{EXCHANGE}` by default (`ACCORD_EXCHANGE`). Each channel
  below is a routing key, `<service>.<EventName>`; bind a queue with exact keys or patterns such as
  `queries.*` or `*.QueryOverdue`.
* **Messages** are CloudEvents 1.0 in structured JSON mode, AMQP content type
  `{CONTENT_TYPE}`, published persistent (delivery mode 2) with publisher
  confirms; the AMQP `message_id` is the CloudEvent `id`.
* **Types and versions**: `type` is `accord.<service>.<EventName>.v<N>`. A change that is not backward
  compatible is a new version `N+1` under the same routing key; a consumer that meets a version it
  does not know must not guess at it (dead-letter or park it).
* **Extensions**: `subject` is the stream (aggregate) id and `sequence` the event's 1-based position
  in that stream; `correlationid`, `causationid` and `actor` trace who and what caused it.
* **Delivery** is at least once and in order per stream while the broker confirms: deduplicate by
  `id`, and order by `subject` + `sequence`.

The same `data` schemas are exported one file per type under `contracts/schemas/`. Guide:
`docs/integrators.md`.
"""


def envelope_model(model: type[EventData]) -> type[BaseModel]:
    """The CloudEvents envelope of `model`'s events: `type` fixed, `data` typed."""
    event_type = model.event_type()
    fixed_type: Any = Literal[event_type]  # a literal made at run time, one per event type
    envelope: type[BaseModel] = create_model(
        event_type,
        __base__=CloudEvent,
        __doc__=f"A CloudEvents 1.0 envelope carrying `{event_type}` data.",
        type=(fixed_type, Field(description="The CloudEvents type: accord.<service>.<Name>.v<N>.")),
        data=(model, Field(description=f"The event itself: `{model.__name__}`, version {model.EVENT_VERSION}.")),
    )
    return envelope


def _summary(model: type[EventData]) -> str:
    return f"{model.EVENT_NAME}, version {model.EVENT_VERSION}, from the {model.EVENT_SERVICE} service"


def _description(model: type[EventData]) -> str:
    doc = inspect.cleandoc(model.__doc__) if model.__doc__ else ""
    head = f"{doc}\n\n" if doc else ""
    return f"{head}CloudEvents type `{model.event_type()}`, routing key `{model.routing_key()}`."


def broker(registry: EventRegistry = REGISTRY, exchange: str = EXCHANGE) -> RabbitBroker:
    """A broker declaring (never connecting) one publisher per event type, as the outbox relay publishes."""
    rabbit = RabbitBroker(SERVER_URL, description="The deployment's RabbitMQ (AMQP 0-9-1).")
    topic = RabbitExchange(exchange, type=ExchangeType.TOPIC, durable=True)
    for model in registry:
        rabbit.publisher(
            exchange=topic,
            routing_key=model.routing_key(),
            persist=True,
            mandatory=False,  # an event nobody subscribed to yet is published all the same
            content_type=CONTENT_TYPE,
            title=model.routing_key(),
            description=_description(model),
            schema=envelope_model(model),
        )
    return rabbit


def asyncapi_document(registry: EventRegistry = REGISTRY, exchange: str = EXCHANGE) -> dict[str, Any]:
    """The AsyncAPI 3.0 document (as JSON-compatible data) of every event type in `registry`."""
    specification = AsyncAPI(
        broker(registry, exchange),
        title="Accord events",
        version=CONTRACTS_VERSION,
        description=DESCRIPTION,
        schema_version=ASYNCAPI_VERSION,
    ).to_specification()
    _check_nested_models(registry)
    document: dict[str, Any] = specification.to_jsonable()
    document["defaultContentType"] = CONTENT_TYPE
    models = {model.routing_key(): model for model in registry}
    old_messages = document["components"]["messages"]
    messages: dict[str, Any] = {}
    for channel_key, channel in document["channels"].items():
        model = models[channel_key]
        message_key = model.event_type()
        (name, reference), = channel["messages"].items()
        generated = old_messages[reference["$ref"].rsplit("/", 1)[-1]]
        messages[message_key] = {
            "name": message_key,
            "title": f"{model.EVENT_NAME} v{model.EVENT_VERSION}",
            "summary": _summary(model),
            "contentType": CONTENT_TYPE,
            "correlationId": {"location": "$message.payload#/correlationid",
                              "description": "The CloudEvents extension `correlationid`."},
            "payload": generated["payload"],
        }
        channel["messages"] = {name: {"$ref": f"#/components/messages/{message_key}"}}
        document["operations"][channel_key]["summary"] = f"Accord publishes {model.event_type()}."
    document["components"]["messages"] = messages
    # FastStream lists publishers in no stable order: sort, so the committed file is reproducible.
    for parent, key in ((document, "channels"), (document, "operations"),
                        (document["components"], "messages"), (document["components"], "schemas")):
        parent[key] = dict(sorted(parent[key].items()))
    return document


def _check_nested_models(registry: EventRegistry) -> None:
    """FastStream keys nested models by class name alone: two different ones must not share a name."""
    seen: dict[str, tuple[str, dict[str, Any]]] = {}
    for model in registry:
        for name, schema in model.model_json_schema().get("$defs", {}).items():
            first = seen.setdefault(name, (model.event_type(), schema))
            if first[1] != schema:
                raise ValueError(f"nested models named {name!r} differ in {first[0]} and {model.event_type()}")


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings, so descriptions read as written."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _represent_str)


def render(document: dict[str, Any]) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def rendered() -> str:
    """The document for the global registry, as committed in ``contracts/asyncapi.yaml``."""
    return render(asyncapi_document())


def export(path: Path = ASYNCAPI_PATH) -> Path:
    path.write_text(rendered())
    return path
