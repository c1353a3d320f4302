"""Deliverables and the client's expectations of them: delivered by the provider, judged by the client."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Literal, assert_never
from uuid import UUID

from contracts.agreements import DeliverableAccepted, DeliverableDefined, DeliverableDelivered, DeliverableRejected
from services.agreements.domain.core import ACTIVE_ONLY, evolves
from services.agreements.domain.errors import InvalidCommand, InvalidTransition
from services.agreements.domain.requirements import RequirementsPart

DeliverableEvent = DeliverableDefined | DeliverableDelivered | DeliverableAccepted | DeliverableRejected

DeliverableStatus = Literal["defined", "delivered", "accepted", "rejected"]


@dataclass
class Deliverable:
    deliverable_id: UUID
    title: str
    expectations: str
    due_on: date
    requirement_ids: list[UUID]
    status: DeliverableStatus = "defined"
    deliveries: int = 0
    delivery_note: str = ""
    delivery_url: str | None = None
    rejection_reason: str | None = None


@dataclass
class DeliverablesPart(RequirementsPart):
    """Over requirements: a deliverable may name the requirements it meets."""

    deliverables: dict[UUID, Deliverable] = field(default_factory=dict)

    def define_deliverable(self, by_organisation_id: UUID, *, deliverable_id: UUID, title: str, expectations: str,
                           due_on: date, requirement_ids: list[UUID] | None = None) -> None:
        self.side_of(by_organisation_id)
        self._new_id(self.deliverables, deliverable_id, "deliverable")
        unknown = [str(r) for r in requirement_ids or [] if r not in self.requirements]
        if unknown:
            raise InvalidCommand(f"unknown requirements: {', '.join(unknown)}")
        self._change_content([DeliverableDefined(
            agreement_id=self.agreement_id, deliverable_id=deliverable_id, title=title, expectations=expectations,
            due_on=due_on, requirement_ids=requirement_ids or [])],
            f"deliverable defined: {title} (due {due_on.isoformat()})", "define a deliverable")

    def deliver(self, by_organisation_id: UUID, *, deliverable_id: UUID, note: str = "",
                url: str | None = None) -> None:
        self._only("provider", by_organisation_id, "delivers deliverables")
        deliverable = self._find(self.deliverables, deliverable_id, "deliverable")
        if deliverable.status not in ("defined", "rejected"):
            raise InvalidTransition(f"the deliverable is {deliverable.status}: nothing to deliver")
        self._operate(DeliverableDelivered(agreement_id=self.agreement_id, deliverable_id=deliverable_id,
                                           note=note, url=url), "deliver", ACTIVE_ONLY)

    def accept_deliverable(self, by_organisation_id: UUID, *, deliverable_id: UUID) -> None:
        self._only("client", by_organisation_id, "accepts deliverables")
        self._delivered(deliverable_id)
        self._operate(DeliverableAccepted(agreement_id=self.agreement_id, deliverable_id=deliverable_id),
                      "accept a deliverable", ACTIVE_ONLY)

    def reject_deliverable(self, by_organisation_id: UUID, *, deliverable_id: UUID, reason: str) -> None:
        self._only("client", by_organisation_id, "rejects deliverables")
        self._delivered(deliverable_id)
        self._operate(DeliverableRejected(agreement_id=self.agreement_id, deliverable_id=deliverable_id,
                                          reason=reason), "reject a deliverable", ACTIVE_ONLY)

    def _delivered(self, deliverable_id: UUID) -> None:
        deliverable = self._find(self.deliverables, deliverable_id, "deliverable")
        if deliverable.status != "delivered":
            raise InvalidTransition(f"only a delivered deliverable can be judged; it is {deliverable.status}")

    @evolves
    def _evolve_deliverables(self, event: DeliverableEvent) -> None:
        match event:
            case DeliverableDefined():
                self.deliverables[event.deliverable_id] = Deliverable(
                    event.deliverable_id, event.title, event.expectations, event.due_on, list(event.requirement_ids))
            case DeliverableDelivered():
                deliverable = self.deliverables[event.deliverable_id]
                deliverable.status, deliverable.deliveries = "delivered", deliverable.deliveries + 1
                deliverable.delivery_note, deliverable.delivery_url = event.note, event.url
            case DeliverableAccepted():
                self.deliverables[event.deliverable_id].status = "accepted"
            case DeliverableRejected():
                deliverable = self.deliverables[event.deliverable_id]
                deliverable.status, deliverable.rejection_reason = "rejected", event.reason
            case _:
                assert_never(event)
