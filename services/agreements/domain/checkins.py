"""Customer-health check-ins: their cadence, and each held check-in's scores, sentiment and actions
(the kpi service derives the health score from `CheckInHeld`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import assert_never
from uuid import UUID

from contracts.agreements import ActionItem, CheckInHeld, CheckInPlanSet, Sentiment
from services.agreements.domain.core import ACTIVE_ONLY, AgreementCore, evolves

CheckInEvent = CheckInPlanSet | CheckInHeld


@dataclass
class CheckInPlan:
    every_days: int
    format: str


@dataclass
class CheckIn:
    checkin_id: UUID
    held_on: date
    client_score: int
    provider_score: int
    client_sentiment: Sentiment
    provider_sentiment: Sentiment
    notes: str
    action_items: list[ActionItem]


@dataclass
class CheckInsPart(AgreementCore):
    checkin_plan: CheckInPlan | None = None
    checkins: dict[UUID, CheckIn] = field(default_factory=dict)

    def set_checkin_plan(self, by_organisation_id: UUID, *, every_days: int, format: str = "") -> None:
        self.side_of(by_organisation_id)
        self._change_content([CheckInPlanSet(agreement_id=self.agreement_id, every_days=every_days, format=format)],
                             f"check-ins every {every_days} days", "set the check-in plan")

    def hold_checkin(self, by_organisation_id: UUID, *, checkin_id: UUID, held_on: date, client_score: int,
                     provider_score: int, client_sentiment: Sentiment, provider_sentiment: Sentiment,
                     notes: str = "", action_items: list[ActionItem] | None = None) -> None:
        self.side_of(by_organisation_id)
        self._new_id(self.checkins, checkin_id, "check-in")
        self._operate(CheckInHeld(
            agreement_id=self.agreement_id, checkin_id=checkin_id, held_on=held_on, client_score=client_score,
            provider_score=provider_score, client_sentiment=client_sentiment, provider_sentiment=provider_sentiment,
            notes=notes, action_items=action_items or []), "record a check-in", ACTIVE_ONLY)

    @evolves
    def _evolve_checkins(self, event: CheckInEvent) -> None:
        match event:
            case CheckInPlanSet():
                self.checkin_plan = CheckInPlan(event.every_days, event.format)
            case CheckInHeld():
                self.checkins[event.checkin_id] = CheckIn(
                    event.checkin_id, event.held_on, event.client_score, event.provider_score,
                    event.client_sentiment, event.provider_sentiment, event.notes, list(event.action_items))
            case _:
                assert_never(event)
