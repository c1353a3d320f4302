"""Scope change management: either side requests, the provider assesses, the client decides.

An approved change amends the agreement (a new agreement version).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, assert_never
from uuid import UUID

from contracts.agreements import (
    ScopeChangeApproved,
    ScopeChangeAssessed,
    ScopeChangeRejected,
    ScopeChangeRequested,
    Side,
)
from services.agreements.domain.core import ACTIVE_ONLY, AgreementCore, evolves
from services.agreements.domain.errors import InvalidTransition

ScopeChangeEvent = ScopeChangeRequested | ScopeChangeAssessed | ScopeChangeApproved | ScopeChangeRejected

ScopeChangeStatus = Literal["requested", "assessed", "approved", "rejected"]


@dataclass
class Assessment:
    effort_hours: int
    cost_minor_units: int
    currency: str
    timeline_impact_days: int
    notes: str


@dataclass
class ScopeChange:
    change_id: UUID
    requested_by_side: Side
    title: str
    what: str
    why: str
    status: ScopeChangeStatus = "requested"
    assessment: Assessment | None = None
    rejection_reason: str | None = None

    @property
    def open(self) -> bool:
        return self.status in ("requested", "assessed")


@dataclass
class ScopePart(AgreementCore):
    scope_changes: dict[UUID, ScopeChange] = field(default_factory=dict)

    def request_scope_change(self, by_organisation_id: UUID, *, change_id: UUID, title: str, what: str,
                             why: str) -> None:
        side = self.side_of(by_organisation_id)
        self._new_id(self.scope_changes, change_id, "scope change")
        self._operate(ScopeChangeRequested(agreement_id=self.agreement_id, change_id=change_id,
                                           requested_by_side=side, title=title, what=what, why=why),
                      "request a scope change", ACTIVE_ONLY)

    def assess_scope_change(self, by_organisation_id: UUID, *, change_id: UUID, effort_hours: int,
                            cost_minor_units: int, currency: str, timeline_impact_days: int,
                            notes: str = "") -> None:
        self._only("provider", by_organisation_id, "assesses scope changes")
        self._open_change(change_id)
        self._operate(ScopeChangeAssessed(
            agreement_id=self.agreement_id, change_id=change_id, effort_hours=effort_hours,
            cost_minor_units=cost_minor_units, currency=currency, timeline_impact_days=timeline_impact_days,
            notes=notes), "assess a scope change", ACTIVE_ONLY)

    def approve_scope_change(self, by_organisation_id: UUID, *, change_id: UUID) -> None:
        self._only("client", by_organisation_id, "approves scope changes")
        change = self._open_change(change_id)
        if change.status != "assessed":
            raise InvalidTransition("the provider must assess the scope change's impact before it is approved")
        self._require_status(ACTIVE_ONLY, "approve a scope change")
        self._change_content([ScopeChangeApproved(agreement_id=self.agreement_id, change_id=change_id)],
                             f"scope change approved: {change.title}", "approve a scope change")

    def reject_scope_change(self, by_organisation_id: UUID, *, change_id: UUID, reason: str) -> None:
        self._only("client", by_organisation_id, "rejects scope changes")
        self._open_change(change_id)
        self._operate(ScopeChangeRejected(agreement_id=self.agreement_id, change_id=change_id, reason=reason),
                      "reject a scope change", ACTIVE_ONLY)

    def _open_change(self, change_id: UUID) -> ScopeChange:
        change = self._find(self.scope_changes, change_id, "scope change")
        if not change.open:
            raise InvalidTransition(f"the scope change is already {change.status}")
        return change

    @evolves
    def _evolve_scope(self, event: ScopeChangeEvent) -> None:
        match event:
            case ScopeChangeRequested():
                self.scope_changes[event.change_id] = ScopeChange(event.change_id, event.requested_by_side,
                                                                  event.title, event.what, event.why)
            case ScopeChangeAssessed():
                change = self.scope_changes[event.change_id]
                change.status = "assessed"
                change.assessment = Assessment(event.effort_hours, event.cost_minor_units, event.currency,
                                               event.timeline_impact_days, event.notes)
            case ScopeChangeApproved():
                self.scope_changes[event.change_id].status = "approved"
            case ScopeChangeRejected():
                change = self.scope_changes[event.change_id]
                change.status, change.rejection_reason = "rejected", event.reason
            case _:
                assert_never(event)
