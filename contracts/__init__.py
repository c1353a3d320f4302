"""Accord's event contracts: the CloudEvents envelope and every event type's data model.

This package is the single declaration of every message shape on the bus. Services and
integrators import it; `accord-contracts export` writes the JSON Schemas under
`contracts/schemas/`, and a test fails when the committed schemas drift from these models.
"""

from contracts.envelope import CloudEvent, EventData
from contracts.registry import REGISTRY, EventRegistry, UnknownEventType

CONTRACTS_VERSION = "1.0.0"

__all__ = [
    "CONTRACTS_VERSION",
    "REGISTRY",
    "CloudEvent",
    "EventData",
    "EventRegistry",
    "UnknownEventType",
]

# Importing the event modules registers their types.
from contracts import agreements as agreements  # noqa: E402
from contracts import kpi as kpi  # noqa: E402
from contracts import notifier as notifier  # noqa: E402
from contracts import queries as queries  # noqa: E402
