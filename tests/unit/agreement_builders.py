"""Builders of agreements in given states, for the agreement unit tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time

from contracts.agreements import ProcedureStep
from contracts.sla import BusinessCalendar, ResponseTarget, SLAPolicy, WorkingPeriod
from services.agreements.domain import Agreement

CLIENT, PROVIDER, STRANGER = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def drafted() -> Agreement:
    agreement = Agreement(uuid.uuid4())
    agreement.draft(title="Bookkeeping", summary="", client_organisation_id=CLIENT,
                    provider_organisation_id=PROVIDER, by_organisation_id=CLIENT)
    return agreement


def active() -> Agreement:
    agreement = drafted()
    agreement.propose(CLIENT)
    agreement.accept(CLIENT)
    agreement.accept(PROVIDER)
    return agreement


def policy(first_response: int = 60) -> SLAPolicy:
    return SLAPolicy(
        calendar=BusinessCalendar(timezone="Europe/Berlin",
                                  working_periods=[WorkingPeriod(weekday=d, start=time(9), end=time(17))
                                                   for d in range(5)]),
        targets=[ResponseTarget(priority="normal", first_response_minutes=first_response,
                                resolution_minutes=first_response * 8)])


def steps(*owners: str) -> list[ProcedureStep]:
    return [ProcedureStep(step_id=uuid.uuid4(), title=f"step {i}", owner_side=owner,  # type: ignore[arg-type]
                          owner_role="bookkeeper", needs_from_other_side=["receipts"] if owner == "provider" else [])
            for i, owner in enumerate(owners, start=1)]
