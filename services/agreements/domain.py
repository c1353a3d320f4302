"""The agreement aggregate: pure decisions and state, no I/O.

A method checks a rule, then records an event; `evolve` is the only place state changes, so
replaying a stream rebuilds exactly the state the decisions were made on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from uuid import UUID

from contracts import EventData
from contracts.agreements import (
    AgreementAccepted,
    AgreementActivated,
    AgreementDrafted,
    AgreementProposed,
    Side,
)

Status = Literal["new", "draft", "proposed", "active"]
SIDES: tuple[Side, Side] = ("client", "provider")


class DomainError(Exception):
    """A command broke a rule of the domain."""


class InvalidTransition(DomainError):
    """The command is not allowed in the agreement's current state (HTTP 409)."""


class NotAParty(DomainError):
    """The acting organisation is neither the client nor the provider (HTTP 403)."""


class InvalidCommand(DomainError):
    """The command's content is wrong in itself (HTTP 422)."""


def stream_id(agreement_id: UUID) -> str:
    return f"agreement-{agreement_id}"


@dataclass
class Agreement:
    agreement_id: UUID
    version: int = 0  # stream version: events applied so far
    status: Status = "new"
    title: str = ""
    client_organisation_id: UUID | None = None
    provider_organisation_id: UUID | None = None
    accepted_by: set[Side] = field(default_factory=set)
    agreement_version: int = 0
    pending: list[EventData] = field(default_factory=list)

    @classmethod
    def replay(cls, agreement_id: UUID, events: list[EventData]) -> Agreement:
        agreement = cls(agreement_id)
        for event in events:
            agreement.evolve(event)
            agreement.version += 1
        return agreement

    def side_of(self, organisation_id: UUID) -> Side:
        if organisation_id == self.client_organisation_id:
            return "client"
        if organisation_id == self.provider_organisation_id:
            return "provider"
        raise NotAParty("your organisation is not a party to this agreement")

    # --- decisions -------------------------------------------------------------------------

    def draft(self, *, title: str, summary: str, client_organisation_id: UUID,
              provider_organisation_id: UUID, by_organisation_id: UUID) -> None:
        if self.status != "new":
            raise InvalidTransition("the agreement already exists")
        if client_organisation_id == provider_organisation_id:
            raise InvalidCommand("the client and the provider must be different organisations")
        if by_organisation_id not in (client_organisation_id, provider_organisation_id):
            raise NotAParty("you can only draft an agreement your organisation is a party to")
        side: Side = "client" if by_organisation_id == client_organisation_id else "provider"
        self._record(AgreementDrafted(
            agreement_id=self.agreement_id, title=title, summary=summary,
            client_organisation_id=client_organisation_id,
            provider_organisation_id=provider_organisation_id, drafted_by_side=side,
        ))

    def propose(self, by_organisation_id: UUID) -> None:
        side = self.side_of(by_organisation_id)
        if self.status != "draft":
            raise InvalidTransition(f"only a draft can be proposed; the agreement is {self.status}")
        self._record(AgreementProposed(agreement_id=self.agreement_id, proposed_by_side=side))

    def accept(self, by_organisation_id: UUID) -> None:
        side = self.side_of(by_organisation_id)
        if self.status != "proposed":
            raise InvalidTransition(f"only a proposed agreement can be accepted; the agreement is {self.status}")
        if side in self.accepted_by:
            raise InvalidTransition(f"the {side} side has already accepted")
        self._record(AgreementAccepted(agreement_id=self.agreement_id, side=side))
        if self.accepted_by == set(SIDES):
            self._record(AgreementActivated(agreement_id=self.agreement_id,
                                            agreement_version=self.agreement_version + 1))

    # --- state -----------------------------------------------------------------------------

    def _record(self, event: EventData) -> None:
        self.evolve(event)
        self.pending.append(event)

    def evolve(self, event: EventData) -> None:
        match event:
            case AgreementDrafted():
                self.status = "draft"
                self.title = event.title
                self.client_organisation_id = event.client_organisation_id
                self.provider_organisation_id = event.provider_organisation_id
            case AgreementProposed():
                self.status = "proposed"
                self.accepted_by = set()
            case AgreementAccepted():
                self.accepted_by.add(event.side)
            case AgreementActivated():
                self.status = "active"
                self.agreement_version = event.agreement_version
            case _:
                raise TypeError(f"not an agreement event: {type(event).__name__}")
