"""Events of the queries service: questions between the two sides of an agreement, on SLA clocks.

Each event carries the instant it happened (``*_at``): the query's SLA clocks are rebuilt from the
events alone. `QueryRaised` carries the SLA terms in force when it was raised (calendar and the
target for its priority), so a later policy change never rewrites the query's compliance.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, Field, StringConstraints

from contracts.agreements import Side
from contracts.envelope import EventData
from contracts.registry import event
from contracts.sla import BusinessCalendar, Priority, ResponseTarget

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20_000)]
Subject = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
Role = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
AboutKind = Literal["agreement", "goal", "requirement", "deliverable", "scope_change", "kpi_report"]
Clock = Literal["first_response", "resolution"]


class _QueriesEvent(EventData):
    EVENT_SERVICE = "queries"


@event
class QueryRaised(_QueriesEvent):
    """One side asks the other. `about` names the part of the agreement the query concerns;
    a query with purpose ``clarification`` about a requirement is that requirement's clarification."""

    EVENT_NAME = "QueryRaised"
    query_id: UUID
    agreement_id: UUID
    raised_by_side: Side
    addressed_to_side: Side
    addressee_role: Role | None = None
    priority: Priority
    subject: Subject
    body: Text
    about_kind: AboutKind = "agreement"
    about_id: UUID | None = None
    purpose: Literal["question", "clarification"] = "question"
    first_response_due_at: datetime | None = None
    resolution_due_at: datetime | None = None
    raised_at: AwareDatetime | None = None
    raised_by_user_id: UUID | None = None
    client_organisation_id: UUID | None = None
    provider_organisation_id: UUID | None = None
    sla_calendar: BusinessCalendar | None = Field(
        default=None, description="The business calendar in force when the query was raised.")
    sla_target: ResponseTarget | None = Field(
        default=None, description="The target for the query's priority in force when it was raised; none: no clocks.")


@event
class QueryAnswered(_QueriesEvent):
    EVENT_NAME = "QueryAnswered"
    query_id: UUID
    agreement_id: UUID
    answered_by_side: Side
    answer: Text
    about_kind: AboutKind = "agreement"
    about_id: UUID | None = None
    purpose: Literal["question", "clarification"] = "question"
    late_by_seconds: int = Field(default=0, ge=0, description="Business seconds past the first-response target.")
    answered_at: AwareDatetime | None = None
    answered_by_user_id: UUID | None = None


@event
class QueryClosed(_QueriesEvent):
    EVENT_NAME = "QueryClosed"
    query_id: UUID
    agreement_id: UUID
    closed_by_side: Side
    about_kind: AboutKind = "agreement"
    about_id: UUID | None = None
    purpose: Literal["question", "clarification"] = "question"
    closed_at: AwareDatetime | None = None
    closed_by_user_id: UUID | None = None


@event
class QueryOverdue(_QueriesEvent):
    """A query's SLA clock reached 100 % of its target without the answer (or resolution) due."""

    EVENT_NAME = "QueryOverdue"
    query_id: UUID
    agreement_id: UUID
    clock: Clock
    priority: Priority
    addressed_to_side: Side
    addressee_role: Role | None = None
    due_at: datetime


@event
class QueryCommented(_QueriesEvent):
    """Either side added to the query's thread; the clocks do not change."""

    EVENT_NAME = "QueryCommented"
    query_id: UUID
    agreement_id: UUID
    commented_by_side: Side
    commented_by_user_id: UUID | None = None
    body: Text
    commented_at: AwareDatetime


@event
class QueryInformationRequested(_QueriesEvent):
    """The responder needs more from the asker: the query's running clocks pause until it comes."""

    EVENT_NAME = "QueryInformationRequested"
    query_id: UUID
    agreement_id: UUID
    requested_by_side: Side
    requested_by_user_id: UUID | None = None
    reason: Text
    requested_at: AwareDatetime


@event
class QueryInformationProvided(_QueriesEvent):
    """The asker replied to an information request: the paused clocks run again, due later by the
    business time they were paused."""

    EVENT_NAME = "QueryInformationProvided"
    query_id: UUID
    agreement_id: UUID
    provided_by_side: Side
    provided_by_user_id: UUID | None = None
    body: Text
    provided_at: AwareDatetime
    paused_business_seconds: int = Field(default=0, ge=0)
    first_response_due_at: AwareDatetime | None = None
    resolution_due_at: AwareDatetime | None = None


@event
class QueryReopened(_QueriesEvent):
    """The asker is not satisfied with the answer: the resolution clock runs again."""

    EVENT_NAME = "QueryReopened"
    query_id: UUID
    agreement_id: UUID
    reopened_by_side: Side
    reopened_by_user_id: UUID | None = None
    reason: Text
    reopened_at: AwareDatetime
    resolution_due_at: AwareDatetime | None = None


@event
class QueryWithdrawn(_QueriesEvent):
    """The asker no longer needs an answer: both clocks stop, and no breach is recorded."""

    EVENT_NAME = "QueryWithdrawn"
    query_id: UUID
    agreement_id: UUID
    withdrawn_by_side: Side
    withdrawn_by_user_id: UUID | None = None
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=20_000)] = ""
    withdrawn_at: AwareDatetime


@event
class QueryAtRisk(_QueriesEvent):
    """A query's SLA clock reached a warning point (a fraction of its target) without the answer due."""

    EVENT_NAME = "QueryAtRisk"
    query_id: UUID
    agreement_id: UUID
    clock: Clock
    threshold: float = Field(gt=0, lt=1, description="The fraction of the target reached, e.g. 0.75.")
    priority: Priority
    addressed_to_side: Side
    addressee_role: Role | None = None
    due_at: AwareDatetime


@event
class QueryBreached(_QueriesEvent):
    """A clock stopped after its target: the first answer came late (first_response), or the query was
    closed after its resolution target (resolution). For the KPIs."""

    EVENT_NAME = "QueryBreached"
    query_id: UUID
    agreement_id: UUID
    clock: Clock
    priority: Priority
    addressed_to_side: Side
    due_at: AwareDatetime
    stopped_at: AwareDatetime
    late_by_seconds: int = Field(gt=0, description="Business seconds past the target, rounded up.")
