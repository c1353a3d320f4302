"""People: each side's contacts and their roles, personnel changes with handover notes.

The escalation matrix is derived from the current contacts' escalation levels, so a personnel
change re-routes escalations at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import assert_never
from uuid import UUID

from contracts.agreements import ContactAssigned, ContactRemoved, PersonnelChanged, Side
from services.agreements.domain.core import AgreementCore, evolves
from services.agreements.domain.errors import WrongSide

PeopleEvent = ContactAssigned | PersonnelChanged | ContactRemoved


@dataclass
class Contact:
    contact_id: UUID
    side: Side
    role: str
    name: str
    email: str
    escalation_level: int | None = None


@dataclass
class Handover:
    role: str
    side: Side
    from_contact_id: UUID
    from_name: str
    to_contact_id: UUID
    to_name: str
    notes: str


@dataclass
class PeoplePart(AgreementCore):
    contacts: dict[UUID, Contact] = field(default_factory=dict)
    handovers: list[Handover] = field(default_factory=list)

    def assign_contact(self, by_organisation_id: UUID, *, contact_id: UUID, role: str, name: str, email: str,
                       escalation_level: int | None = None) -> None:
        """A side names one of its own people for a role."""
        side = self.side_of(by_organisation_id)
        self._new_id(self.contacts, contact_id, "contact")
        self._operate(ContactAssigned(agreement_id=self.agreement_id, contact_id=contact_id, side=side, role=role,
                                      name=name, email=email, escalation_level=escalation_level),
                      "assign a contact")

    def change_personnel(self, by_organisation_id: UUID, *, contact_id: UUID, replaced_by_contact_id: UUID,
                         name: str, email: str, handover_notes: str) -> None:
        self._own_contact(by_organisation_id, contact_id, "changes its own personnel")
        self._new_id(self.contacts, replaced_by_contact_id, "contact")
        self._operate(PersonnelChanged(agreement_id=self.agreement_id, contact_id=contact_id,
                                       replaced_by_contact_id=replaced_by_contact_id, name=name, email=email,
                                       handover_notes=handover_notes), "change personnel")

    def remove_contact(self, by_organisation_id: UUID, *, contact_id: UUID, reason: str = "") -> None:
        self._own_contact(by_organisation_id, contact_id, "removes its own contacts")
        self._operate(ContactRemoved(agreement_id=self.agreement_id, contact_id=contact_id, reason=reason),
                      "remove a contact")

    def _own_contact(self, by_organisation_id: UUID, contact_id: UUID, duty: str) -> Contact:
        side = self.side_of(by_organisation_id)
        contact = self._find(self.contacts, contact_id, "contact")
        if contact.side != side:
            raise WrongSide(f"only the {contact.side} {duty}")
        return contact

    def escalation_matrix(self) -> list[dict[str, object]]:
        """Per escalation level (lowest first), who each side's current contacts are."""
        levels = sorted({c.escalation_level for c in self.contacts.values() if c.escalation_level is not None})
        return [{"level": level, **{side: [{"contact_id": str(c.contact_id), "name": c.name, "role": c.role,
                                            "email": c.email}
                                           for c in self.contacts.values()
                                           if c.side == side and c.escalation_level == level]
                                    for side in ("client", "provider")}}
                for level in levels]

    @evolves
    def _evolve_people(self, event: PeopleEvent) -> None:
        match event:
            case ContactAssigned():
                self.contacts[event.contact_id] = Contact(event.contact_id, event.side, event.role, event.name,
                                                          event.email, event.escalation_level)
            case PersonnelChanged():
                old = self.contacts.pop(event.contact_id)
                self.contacts[event.replaced_by_contact_id] = Contact(
                    event.replaced_by_contact_id, old.side, old.role, event.name, event.email, old.escalation_level)
                self.handovers.append(Handover(old.role, old.side, old.contact_id, old.name,
                                               event.replaced_by_contact_id, event.name, event.handover_notes))
            case ContactRemoved():
                del self.contacts[event.contact_id]
            case _:
                assert_never(event)
