"""Events of the queries service: questions between the two sides of an agreement, on SLA clocks."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, StringConstraints

from contracts.agreements import Side
from contracts.envelope import EventData
from contracts.registry import event
from contracts.sla import Priority

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


@event
class QueryClosed(_QueriesEvent):
    EVENT_NAME = "QueryClosed"
    query_id: UUID
    agreement_id: UUID
    closed_by_side: Side
    about_kind: AboutKind = "agreement"
    about_id: UUID | None = None
    purpose: Literal["question", "clarification"] = "question"


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
