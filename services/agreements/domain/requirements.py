"""Requirements: the client documents them, the provider accepts or asks for clarification.

A clarification is a query of the queries service: this side records the request with a new
query id; when the query is answered, the answer becomes the requirement's next revision (the
agreed understanding), and the provider can accept it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, assert_never
from uuid import UUID

from contracts.agreements import (
    RequirementAccepted,
    RequirementClarificationRequested,
    RequirementClarified,
    RequirementDocumented,
)
from services.agreements.domain.core import AgreementCore, evolves
from services.agreements.domain.errors import InvalidTransition

RequirementEvent = (RequirementDocumented | RequirementClarificationRequested | RequirementClarified
                    | RequirementAccepted)

RequirementStatus = Literal["documented", "clarification_requested", "clarified", "accepted"]


@dataclass
class Clarification:
    query_id: UUID
    question: str
    answer: str | None = None


@dataclass
class Requirement:
    requirement_id: UUID
    title: str
    description: str
    acceptance_criteria: list[str]
    technical_specifications: str
    timeline: str
    attachments: list[str]
    revision: int = 1
    status: RequirementStatus = "documented"
    clarifications: list[Clarification] = field(default_factory=list)

    @property
    def open_query_id(self) -> UUID | None:
        return self.clarifications[-1].query_id if self.status == "clarification_requested" else None


@dataclass
class RequirementsPart(AgreementCore):
    requirements: dict[UUID, Requirement] = field(default_factory=dict)

    def document_requirement(self, by_organisation_id: UUID, *, requirement_id: UUID, title: str,
                             description: str, acceptance_criteria: list[str], technical_specifications: str = "",
                             timeline: str = "", attachments: list[str] | None = None) -> None:
        self._only("client", by_organisation_id, "documents requirements")
        self._new_id(self.requirements, requirement_id, "requirement")
        self._operate(RequirementDocumented(
            agreement_id=self.agreement_id, requirement_id=requirement_id, title=title, description=description,
            acceptance_criteria=acceptance_criteria, technical_specifications=technical_specifications,
            timeline=timeline, attachments=attachments or []), "document a requirement")

    def request_requirement_clarification(self, by_organisation_id: UUID, *, requirement_id: UUID,
                                          query_id: UUID, question: str) -> None:
        self._only("provider", by_organisation_id, "asks to clarify requirements")
        requirement = self._find(self.requirements, requirement_id, "requirement")
        if requirement.status == "accepted":
            raise InvalidTransition("the requirement is already accepted")
        if requirement.status == "clarification_requested":
            raise InvalidTransition("a clarification of this requirement is already open")
        self._operate(RequirementClarificationRequested(
            agreement_id=self.agreement_id, requirement_id=requirement_id, query_id=query_id, question=question),
            "ask to clarify a requirement")

    def clarify_requirement(self, *, requirement_id: UUID, query_id: UUID, answer: str) -> bool:
        """The clarification query was answered (a reaction to the queries service).

        False, recording nothing, if that clarification is not open (answered already, or stale),
        so redelivered answers change nothing. The answer is a fact: recorded in any state but
        terminated.
        """
        requirement = self._find(self.requirements, requirement_id, "requirement")
        if requirement.open_query_id != query_id or self.status == "terminated":
            return False
        self._record(RequirementClarified(agreement_id=self.agreement_id, requirement_id=requirement_id,
                                          query_id=query_id, answer=answer, revision=requirement.revision + 1))
        return True

    def accept_requirement(self, by_organisation_id: UUID, *, requirement_id: UUID,
                           revision: int | None = None) -> None:
        self._only("provider", by_organisation_id, "accepts requirements")
        requirement = self._find(self.requirements, requirement_id, "requirement")
        if requirement.status == "accepted":
            raise InvalidTransition("the requirement is already accepted")
        if requirement.status == "clarification_requested":
            raise InvalidTransition("a clarification of this requirement is open: accept it once it is answered")
        if revision is not None and revision != requirement.revision:
            raise InvalidTransition(f"the requirement is at revision {requirement.revision}, not {revision}")
        self._change_content([RequirementAccepted(agreement_id=self.agreement_id, requirement_id=requirement_id,
                                                  revision=requirement.revision)],
                             f"requirement accepted: {requirement.title} (revision {requirement.revision})",
                             "accept a requirement")

    @evolves
    def _evolve_requirements(self, event: RequirementEvent) -> None:
        match event:
            case RequirementDocumented():
                self.requirements[event.requirement_id] = Requirement(
                    event.requirement_id, event.title, event.description, list(event.acceptance_criteria),
                    event.technical_specifications, event.timeline, list(event.attachments))
            case RequirementClarificationRequested():
                requirement = self.requirements[event.requirement_id]
                requirement.status = "clarification_requested"
                requirement.clarifications.append(Clarification(event.query_id, event.question))
            case RequirementClarified():
                requirement = self.requirements[event.requirement_id]
                requirement.status, requirement.revision = "clarified", event.revision
                requirement.clarifications[-1].answer = event.answer
            case RequirementAccepted():
                self.requirements[event.requirement_id].status = "accepted"
            case _:
                assert_never(event)
