"""`rebuild` replays read models only: a policy that acts on events must never be replayed."""

from __future__ import annotations

import pytest

from accord_runtime.service import ServiceDefinition
from services.agreements.main import DEFINITION as AGREEMENTS
from services.kpi.main import DEFINITION as KPI
from services.notifier.main import definition as notifier_definition
from services.notifier.settings import NotifierSettings
from services.queries.main import DEFINITION as QUERIES

NOTIFIER = notifier_definition(NotifierSettings())


@pytest.mark.parametrize(("definition", "policies", "read_models"), [
    (AGREEMENTS, {"requirement_clarifications"}, {"agreement_summaries", "agreement_history", "identity"}),
    (QUERIES, {"clarification_queries"}, {"identity", "agreement_parties"}),
    (KPI, {"health_on_relationship_events"}, {"kpi_book", "customer_health", "relationship_events"}),
    (NOTIFIER, {"escalation_triggers"}, {"notifier_contacts", "escalations"}),
])
def test_policies_are_never_replayed(definition: ServiceDefinition, policies: set[str], read_models: set[str]) -> None:
    consumed = {h.name for c in definition.consumers for h in c.handlers}
    assert policies <= consumed  # they are there, fed from the bus …
    rebuildable = set(definition.rebuildable())
    assert not policies & rebuildable  # … and never replayed by a rebuild
    assert read_models <= rebuildable
