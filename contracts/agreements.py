"""Events of the agreements service: identity (organisations, users, API tokens) and the shared agreement."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from contracts.envelope import EventData
from contracts.registry import event
from contracts.sla import SLAPolicy

Side = Literal["client", "provider"]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(max_length=10_000)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
TokenHash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class _AgreementsEvent(EventData):
    EVENT_SERVICE = "agreements"


@event
class OrganisationRegistered(_AgreementsEvent):
    """An operator registered an organisation that can be a client or a provider."""

    EVENT_NAME = "OrganisationRegistered"
    organisation_id: UUID
    display_name: Name


@event
class UserRegistered(_AgreementsEvent):
    """A person who acts for an organisation."""

    EVENT_NAME = "UserRegistered"
    user_id: UUID
    organisation_id: UUID
    display_name: Name
    email: Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)]


@event
class ApiTokenIssued(_AgreementsEvent):
    """An API token for a user. Only the token's SHA-256 is ever stored or published."""

    EVENT_NAME = "ApiTokenIssued"
    token_id: UUID
    user_id: UUID
    organisation_id: UUID
    token_hash: TokenHash
    label: Annotated[str, StringConstraints(max_length=200)] = ""


@event
class ApiTokenRevoked(_AgreementsEvent):
    EVENT_NAME = "ApiTokenRevoked"
    token_id: UUID
    user_id: UUID


@event
class AgreementDrafted(_AgreementsEvent):
    """One party drafted a shared agreement between a client and a provider organisation."""

    EVENT_NAME = "AgreementDrafted"
    agreement_id: UUID
    title: Title
    summary: Text = ""
    client_organisation_id: UUID
    provider_organisation_id: UUID
    drafted_by_side: Side


@event
class AgreementProposed(_AgreementsEvent):
    """The draft is put to both sides for acceptance; it can no longer be edited as a draft."""

    EVENT_NAME = "AgreementProposed"
    agreement_id: UUID
    proposed_by_side: Side


@event
class AgreementAccepted(_AgreementsEvent):
    """One side accepted the proposed agreement."""

    EVENT_NAME = "AgreementAccepted"
    agreement_id: UUID
    side: Side


@event
class AgreementActivated(_AgreementsEvent):
    """Both sides accepted: the agreement is in force from now on."""

    EVENT_NAME = "AgreementActivated"
    agreement_id: UUID
    agreement_version: int = Field(ge=1)


# --- the shared agreement's parts -------------------------------------------------------------
# Every event on an agreement's stream carries `agreement_id`. Which events amend an active
# agreement (and are then followed by `AgreementAmended`) is decided by the agreements service.

Line = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
Body = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10_000)]
Role = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Email = Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)]
Url = Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=2_000)]
Sentiment = Literal["positive", "neutral", "negative"]


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")


class ProcedureStep(_Value):
    """One step of an operating procedure, owned by one side (and a role on it)."""

    step_id: UUID
    title: Line
    owner_side: Side
    owner_role: Role | None = None
    needs_from_other_side: list[Line] = Field(default_factory=list,
                                              description="What the owner needs from the other side to do it.")


class ActionItem(_Value):
    owner_side: Side
    description: Line
    due_on: date | None = None


@event
class GoalStated(_AgreementsEvent):
    """The client states a goal: the outcome it wants, how success is measured, its constraints."""

    EVENT_NAME = "GoalStated"
    agreement_id: UUID
    goal_id: UUID
    outcome: Body
    success_measure: Body
    constraints: list[Line] = Field(default_factory=list)


@event
class GoalRevised(_AgreementsEvent):
    """The client revised a goal; the new revision needs a fresh acknowledgement by the provider."""

    EVENT_NAME = "GoalRevised"
    agreement_id: UUID
    goal_id: UUID
    revision: int = Field(ge=2)
    outcome: Body
    success_measure: Body
    constraints: list[Line] = Field(default_factory=list)


@event
class GoalAcknowledged(_AgreementsEvent):
    """The provider confirms its understanding of one revision of a goal, in its own words."""

    EVENT_NAME = "GoalAcknowledged"
    agreement_id: UUID
    goal_id: UUID
    revision: int = Field(ge=1)
    understanding: Body


@event
class GoalClarificationRequested(_AgreementsEvent):
    """The provider does not yet understand a goal's revision and asks the client."""

    EVENT_NAME = "GoalClarificationRequested"
    agreement_id: UUID
    goal_id: UUID
    revision: int = Field(ge=1)
    question: Body


@event
class RequirementDocumented(_AgreementsEvent):
    """The client documents a requirement (revision 1)."""

    EVENT_NAME = "RequirementDocumented"
    agreement_id: UUID
    requirement_id: UUID
    title: Title
    description: Body
    acceptance_criteria: list[Line] = Field(min_length=1)
    technical_specifications: Text = ""
    timeline: Text = ""
    attachments: list[Url] = Field(default_factory=list)


@event
class RequirementClarificationRequested(_AgreementsEvent):
    """The provider asks about a requirement. The queries service raises `query_id` from this event."""

    EVENT_NAME = "RequirementClarificationRequested"
    agreement_id: UUID
    requirement_id: UUID
    query_id: UUID
    question: Body


@event
class RequirementClarified(_AgreementsEvent):
    """The clarification query was answered: a new revision records the agreed understanding."""

    EVENT_NAME = "RequirementClarified"
    agreement_id: UUID
    requirement_id: UUID
    query_id: UUID
    answer: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20_000)]
    revision: int = Field(ge=2)


@event
class RequirementAccepted(_AgreementsEvent):
    """The provider accepts a revision of a requirement as understood and deliverable."""

    EVENT_NAME = "RequirementAccepted"
    agreement_id: UUID
    requirement_id: UUID
    revision: int = Field(ge=1)


@event
class DeliverableDefined(_AgreementsEvent):
    """A deliverable and what the client expects of it, with its due date."""

    EVENT_NAME = "DeliverableDefined"
    agreement_id: UUID
    deliverable_id: UUID
    title: Title
    expectations: Body
    due_on: date
    requirement_ids: list[UUID] = Field(default_factory=list)


@event
class DeliverableDelivered(_AgreementsEvent):
    EVENT_NAME = "DeliverableDelivered"
    agreement_id: UUID
    deliverable_id: UUID
    note: Text = ""
    url: Url | None = None


@event
class DeliverableAccepted(_AgreementsEvent):
    EVENT_NAME = "DeliverableAccepted"
    agreement_id: UUID
    deliverable_id: UUID


@event
class DeliverableRejected(_AgreementsEvent):
    """The client rejected a delivery; the provider may deliver again."""

    EVENT_NAME = "DeliverableRejected"
    agreement_id: UUID
    deliverable_id: UUID
    reason: Body


@event
class CommunicationPlanSet(_AgreementsEvent):
    """How the sides keep each other informed. Replaces the previous plan from `effective_from`."""

    EVENT_NAME = "CommunicationPlanSet"
    agreement_id: UUID
    status_update_every_seconds: int | None = Field(
        default=None, ge=1, le=31_536_000, description="Cadence of the provider's status updates; none: no cadence.")
    meetings: Text = Field(default="", description="Cadence and kind of meetings, e.g. 'weekly call, Tuesdays'.")
    channels: list[Line] = Field(default_factory=list)
    effective_from: AwareDatetime


@event
class StatusUpdatePosted(_AgreementsEvent):
    EVENT_NAME = "StatusUpdatePosted"
    agreement_id: UUID
    update_id: UUID
    summary: Body
    posted_at: AwareDatetime


@event
class StatusUpdateOverdue(_AgreementsEvent):
    """No status update arrived within the communication plan's cadence (detected by a timer)."""

    EVENT_NAME = "StatusUpdateOverdue"
    agreement_id: UUID
    due_at: AwareDatetime
    cadence_seconds: int = Field(ge=1)
    last_update_at: AwareDatetime | None = None


@event
class ContactAssigned(_AgreementsEvent):
    """A person of one side takes a role; `escalation_level` places the role in the escalation matrix."""

    EVENT_NAME = "ContactAssigned"
    agreement_id: UUID
    contact_id: UUID
    side: Side
    role: Role
    name: Name
    email: Email
    escalation_level: int | None = Field(default=None, ge=1, le=9)


@event
class PersonnelChanged(_AgreementsEvent):
    """Another person takes over a contact's role (and escalation level), with handover notes."""

    EVENT_NAME = "PersonnelChanged"
    agreement_id: UUID
    contact_id: UUID
    replaced_by_contact_id: UUID
    name: Name
    email: Email
    handover_notes: Body


@event
class ContactRemoved(_AgreementsEvent):
    EVENT_NAME = "ContactRemoved"
    agreement_id: UUID
    contact_id: UUID
    reason: Text = ""


@event
class SLAPolicySet(_AgreementsEvent):
    """Response targets and business calendar from `effective_from` on; earlier compliance keeps its policy."""

    EVENT_NAME = "SLAPolicySet"
    agreement_id: UUID
    policy: SLAPolicy
    effective_from: AwareDatetime


@event
class ProcedureDefined(_AgreementsEvent):
    """A named process flow with ordered steps; defining it again with the same id replaces it."""

    EVENT_NAME = "ProcedureDefined"
    agreement_id: UUID
    procedure_id: UUID
    name: Title
    steps: list[ProcedureStep] = Field(min_length=1)


@event
class BreakdownReported(_AgreementsEvent):
    """A process broke down at one step: what broke and its impact. The rest of the flow stands."""

    EVENT_NAME = "BreakdownReported"
    agreement_id: UUID
    breakdown_id: UUID
    procedure_id: UUID
    step_id: UUID
    reported_by_side: Side
    what_broke: Body
    impact: Body


@event
class BreakdownResolved(_AgreementsEvent):
    EVENT_NAME = "BreakdownResolved"
    agreement_id: UUID
    breakdown_id: UUID
    resolved_by_side: Side
    fix: Body


@event
class ScopeChangeRequested(_AgreementsEvent):
    EVENT_NAME = "ScopeChangeRequested"
    agreement_id: UUID
    change_id: UUID
    requested_by_side: Side
    title: Title
    what: Body
    why: Body


@event
class ScopeChangeAssessed(_AgreementsEvent):
    """The provider's assessment of a scope change's impact."""

    EVENT_NAME = "ScopeChangeAssessed"
    agreement_id: UUID
    change_id: UUID
    effort_hours: int = Field(ge=0)
    cost_minor_units: int = Field(ge=0, description="Cost in the currency's minor units (e.g. cents).")
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    timeline_impact_days: int = Field(ge=-3650, le=3650)
    notes: Text = ""


@event
class ScopeChangeApproved(_AgreementsEvent):
    """The client approved an assessed scope change; it amends the agreement."""

    EVENT_NAME = "ScopeChangeApproved"
    agreement_id: UUID
    change_id: UUID


@event
class ScopeChangeRejected(_AgreementsEvent):
    EVENT_NAME = "ScopeChangeRejected"
    agreement_id: UUID
    change_id: UUID
    reason: Body


@event
class DisagreementRecorded(_AgreementsEvent):
    EVENT_NAME = "DisagreementRecorded"
    agreement_id: UUID
    disagreement_id: UUID
    raised_by_side: Side
    topic: Title
    description: Body


@event
class DisagreementResolutionProposed(_AgreementsEvent):
    """One side proposes how to resolve a disagreement; the other side must confirm it."""

    EVENT_NAME = "DisagreementResolutionProposed"
    agreement_id: UUID
    disagreement_id: UUID
    proposed_by_side: Side
    resolution: Body


@event
class DisagreementResolved(_AgreementsEvent):
    """The other side confirmed the proposed resolution: both sides have recorded it."""

    EVENT_NAME = "DisagreementResolved"
    agreement_id: UUID
    disagreement_id: UUID
    confirmed_by_side: Side
    resolution: Body


@event
class CheckInPlanSet(_AgreementsEvent):
    """The cadence of customer-health check-ins."""

    EVENT_NAME = "CheckInPlanSet"
    agreement_id: UUID
    every_days: int = Field(ge=1, le=366)
    format: Text = ""


@event
class CheckInHeld(_AgreementsEvent):
    """A held customer-health check-in: both sides' scores (1 to 10) and sentiment, notes, action items."""

    EVENT_NAME = "CheckInHeld"
    agreement_id: UUID
    checkin_id: UUID
    held_on: date
    client_score: int = Field(ge=1, le=10)
    provider_score: int = Field(ge=1, le=10)
    client_sentiment: Sentiment
    provider_sentiment: Sentiment
    notes: Text = ""
    action_items: list[ActionItem] = Field(default_factory=list)


# --- lifecycle after activation -----------------------------------------------------------------

Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2_000)]


@event
class AgreementAmended(_AgreementsEvent):
    """A change to an active agreement's content made a new agreement version."""

    EVENT_NAME = "AgreementAmended"
    agreement_id: UUID
    agreement_version: int = Field(ge=2)
    changes: list[Line] = Field(min_length=1, description="What changed, one line each.")


@event
class AgreementSuspended(_AgreementsEvent):
    EVENT_NAME = "AgreementSuspended"
    agreement_id: UUID
    side: Side
    reason: Reason


@event
class AgreementResumed(_AgreementsEvent):
    EVENT_NAME = "AgreementResumed"
    agreement_id: UUID
    side: Side
    reason: Reason


@event
class AgreementTerminated(_AgreementsEvent):
    EVENT_NAME = "AgreementTerminated"
    agreement_id: UUID
    side: Side
    reason: Reason


@event
class AgreementRenewed(_AgreementsEvent):
    """The agreement was renewed for a new term: a new agreement version."""

    EVENT_NAME = "AgreementRenewed"
    agreement_id: UUID
    side: Side
    reason: Reason
    agreement_version: int = Field(ge=2)
    renewed_until: date | None = None
