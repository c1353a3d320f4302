"""Staying in sync: either side records a disagreement; one side proposes the resolution and the
other confirms it, so both sides have recorded the resolution they agreed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, assert_never
from uuid import UUID

from contracts.agreements import (
    DisagreementRecorded,
    DisagreementResolutionProposed,
    DisagreementResolved,
    Side,
)
from services.agreements.domain.core import AgreementCore, evolves, other
from services.agreements.domain.errors import InvalidTransition, WrongSide

DisagreementEvent = DisagreementRecorded | DisagreementResolutionProposed | DisagreementResolved


@dataclass
class Disagreement:
    disagreement_id: UUID
    raised_by_side: Side
    topic: str
    description: str
    status: Literal["open", "resolved"] = "open"
    proposed_by_side: Side | None = None
    proposed_resolution: str | None = None
    resolution: str | None = None


@dataclass
class SyncPart(AgreementCore):
    disagreements: dict[UUID, Disagreement] = field(default_factory=dict)

    def record_disagreement(self, by_organisation_id: UUID, *, disagreement_id: UUID, topic: str,
                            description: str) -> None:
        side = self.side_of(by_organisation_id)
        self._new_id(self.disagreements, disagreement_id, "disagreement")
        self._operate(DisagreementRecorded(agreement_id=self.agreement_id, disagreement_id=disagreement_id,
                                           raised_by_side=side, topic=topic, description=description),
                      "record a disagreement")

    def propose_resolution(self, by_organisation_id: UUID, *, disagreement_id: UUID, resolution: str) -> None:
        side = self.side_of(by_organisation_id)
        self._open(disagreement_id)
        self._operate(DisagreementResolutionProposed(agreement_id=self.agreement_id,
                                                     disagreement_id=disagreement_id, proposed_by_side=side,
                                                     resolution=resolution), "propose a resolution")

    def confirm_resolution(self, by_organisation_id: UUID, *, disagreement_id: UUID) -> None:
        side = self.side_of(by_organisation_id)
        disagreement = self._open(disagreement_id)
        if disagreement.proposed_by_side is None or disagreement.proposed_resolution is None:
            raise InvalidTransition("no resolution has been proposed yet")
        if disagreement.proposed_by_side == side:
            raise WrongSide(f"only the {other(side)} confirms the {side}'s proposed resolution")
        self._operate(DisagreementResolved(agreement_id=self.agreement_id, disagreement_id=disagreement_id,
                                           confirmed_by_side=side, resolution=disagreement.proposed_resolution),
                      "confirm a resolution")

    def _open(self, disagreement_id: UUID) -> Disagreement:
        disagreement = self._find(self.disagreements, disagreement_id, "disagreement")
        if disagreement.status != "open":
            raise InvalidTransition("the disagreement is already resolved")
        return disagreement

    @evolves
    def _evolve_sync(self, event: DisagreementEvent) -> None:
        match event:
            case DisagreementRecorded():
                self.disagreements[event.disagreement_id] = Disagreement(
                    event.disagreement_id, event.raised_by_side, event.topic, event.description)
            case DisagreementResolutionProposed():
                disagreement = self.disagreements[event.disagreement_id]
                disagreement.proposed_by_side, disagreement.proposed_resolution = (event.proposed_by_side,
                                                                                   event.resolution)
            case DisagreementResolved():
                disagreement = self.disagreements[event.disagreement_id]
                disagreement.status, disagreement.resolution = "resolved", event.resolution
            case _:
                assert_never(event)
