"""Commands the agreements service accepts: imperative, validated at the edge (422 names the field).

Identifiers of the agreement and of the part a command is about travel in the URL; a command
creating a part gets its id from the service (returned as ``created_id``).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from contracts.agreements import Body, Line, Reason, Role, Sentiment, Side, Text, Url
from contracts.sla import SLAPolicyInput

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Email = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)]


class Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- identity --------------------------------------------------------------------------------------

class RegisterOrganisation(Command):
    display_name: Name


class RegisterUser(Command):
    organisation_id: UUID
    display_name: Name
    email: Email


class IssueApiToken(Command):
    user_id: UUID
    label: Annotated[str, StringConstraints(max_length=200)] = ""


class RevokeApiToken(Command):
    """Revoke a token, named by its value (only its hash is kept, so the value is how to find it)."""

    token: Annotated[str, StringConstraints(min_length=1, max_length=200)]


# --- lifecycle -------------------------------------------------------------------------------------

class DraftAgreement(Command):
    title: Title
    summary: Annotated[str, StringConstraints(max_length=10_000)] = ""
    client_organisation_id: UUID
    provider_organisation_id: UUID


class ProposeAgreement(Command):
    agreement_id: UUID


class AcceptAgreement(Command):
    agreement_id: UUID


class ChangeLifecycle(Command):
    """Suspend, resume or terminate: always with a reason."""

    reason: Reason


class RenewAgreement(Command):
    reason: Reason
    renewed_until: date | None = None


# --- parts -----------------------------------------------------------------------------------------

class StateGoal(Command):
    outcome: Body
    success_measure: Body
    constraints: list[Line] = Field(default_factory=list, max_length=50)


class AcknowledgeGoal(Command):
    understanding: Body
    revision: int | None = Field(default=None, ge=1, description="The revision acknowledged (checked if given).")


class AskAboutGoal(Command):
    question: Body
    revision: int | None = Field(default=None, ge=1)


class DocumentRequirement(Command):
    title: Title
    description: Body
    acceptance_criteria: list[Line] = Field(min_length=1, max_length=100)
    technical_specifications: Text = ""
    timeline: Text = ""
    attachments: list[Url] = Field(default_factory=list, max_length=50)


class AskAboutRequirement(Command):
    question: Body


class AcceptRequirement(Command):
    revision: int | None = Field(default=None, ge=1)


class DefineDeliverable(Command):
    title: Title
    expectations: Body
    due_on: date
    requirement_ids: list[UUID] = Field(default_factory=list, max_length=100)


class Deliver(Command):
    note: Text = ""
    url: Url | None = None


class RejectDeliverable(Command):
    reason: Body


class SetCommunicationPlan(Command):
    status_update_every_seconds: int | None = Field(default=None, ge=1, le=31_536_000)
    meetings: Text = ""
    channels: list[Line] = Field(default_factory=list, max_length=20)


class PostStatusUpdate(Command):
    summary: Body


class AssignContact(Command):
    role: Role
    name: Name
    email: Email
    escalation_level: int | None = Field(default=None, ge=1, le=9)


class ChangePersonnel(Command):
    name: Name
    email: Email
    handover_notes: Body


class RemoveContact(Command):
    reason: Text = ""


class SetSLAPolicy(Command):
    policy: SLAPolicyInput
    effective_from: AwareDatetime | None = None


class StepSpec(Command):
    step_id: UUID | None = Field(default=None, description="Keep a step's id when redefining a procedure.")
    title: Line
    owner_side: Side
    owner_role: Role | None = None
    needs_from_other_side: list[Line] = Field(default_factory=list, max_length=20)


class DefineProcedure(Command):
    name: Title
    steps: list[StepSpec] = Field(min_length=1, max_length=100)


class ReportBreakdown(Command):
    step_id: UUID
    what_broke: Body
    impact: Body


class ResolveBreakdown(Command):
    fix: Body


class RequestScopeChange(Command):
    title: Title
    what: Body
    why: Body


class AssessScopeChange(Command):
    effort_hours: int = Field(ge=0)
    cost_minor_units: int = Field(ge=0)
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    timeline_impact_days: int = Field(ge=-3650, le=3650)
    notes: Text = ""


class RejectScopeChange(Command):
    reason: Body


class RecordDisagreement(Command):
    topic: Title
    description: Body


class ProposeResolution(Command):
    resolution: Body


class SetCheckInPlan(Command):
    every_days: int = Field(ge=1, le=366)
    format: Text = ""


class ActionItemSpec(Command):
    owner_side: Side
    description: Line
    due_on: date | None = None


class HoldCheckIn(Command):
    held_on: date
    client_score: int = Field(ge=1, le=10)
    provider_score: int = Field(ge=1, le=10)
    client_sentiment: Sentiment
    provider_sentiment: Sentiment
    notes: Text = ""
    action_items: list[ActionItemSpec] = Field(default_factory=list, max_length=50)


class AgreementState(BaseModel):
    """What a command on an agreement returns: its state right after the command."""

    agreement_id: UUID
    status: str
    version: int = Field(description="Stream version: the number of events the agreement has.")
    agreement_version: int
    accepted_by: list[str]
    created_id: UUID | None = Field(default=None, description="The id of the part the command created, if any.")
